package main

// What one lifecycle and one sync interval cost: PAM calls and Kubernetes writes.

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/emulator"
)

// economy counts the PAM calls and Kubernetes writes of one elevation's life — created, Active,
// deleted, gone — in adopt mode and in create mode.
func (b *bench) economy(ctx context.Context) error {
	adopt, err := b.lifecycle(ctx, nil)
	if err != nil {
		return err
	}
	b.report.add("economy: PAM calls per lifecycle (create → Active → delete)", float64(adopt.calls), "calls",
		adopt.breakdown+": first read, Close, confirming read; a live read before the close too when this process has not read the request open, and a periodic sync's list, or the server's roles refresh, when one falls within the lifecycle")
	b.report.add("economy: Close calls per closed elevation", float64(adopt.closes), "calls", "goal: 1")
	b.report.add("economy: Kubernetes writes per lifecycle", float64(adopt.writes.objects), "writes", "finalizer added, status, finalizer removed")
	b.report.add("economy: Events per lifecycle", float64(adopt.writes.events), "writes", "")

	role := b.h.pam.AddRole(emulator.Role{DisplayName: "Bench Role", TTL: 8 * time.Hour})
	created, err := b.lifecycle(ctx, func(_ int, el *pamv1.PamElevation) {
		el.Spec.RequestID = ""
		el.Spec.Request = &pamv1.ElevationRequest{Role: role.DisplayName, Justification: "bench"}
	})
	if err != nil {
		return err
	}
	b.report.add("economy: PAM calls per create-mode lifecycle (apply → create → Active → delete)", float64(created.calls), "calls",
		created.breakdown+": the roles, the create, Close, confirming read; a periodic list or roles refresh when one falls within")
	b.report.add("economy: Close calls per closed create-mode elevation", float64(created.closes), "calls", "goal: 1")
	b.report.add("economy: Kubernetes writes per create-mode lifecycle", float64(created.writes.objects), "writes",
		"finalizer added, the create's time before the call, status, finalizer removed")
	b.report.add("economy: Events per create-mode lifecycle", float64(created.writes.events), "writes", "")
	return nil
}

// lifecycleCost is what one elevation's life cost.
type lifecycleCost struct {
	calls, closes int
	// breakdown is the calls by endpoint, "list-requests 1, close-request 1, …".
	breakdown string
	writes    writeCounts
}

// lifecycle creates one elevation (as mutate makes it), waits until it has read its request,
// deletes it, and counts what that cost.
func (b *bench) lifecycle(ctx context.Context, mutate func(int, *pamv1.PamElevation)) (lifecycleCost, error) {
	var cost lifecycleCost
	b.h.pam.ResetCalls()
	auditBefore, err := b.auditLines()
	if err != nil {
		return cost, err
	}
	names, _, err := b.createElevations(ctx, 1, mutate)
	if err != nil {
		return cost, err
	}
	if err := b.waitSynced(ctx, 1); err != nil {
		return cost, err
	}
	el := &pamv1.PamElevation{}
	if err := b.h.client.Get(ctx, client.ObjectKey{Namespace: b.ns, Name: names[0]}, el); err != nil {
		return cost, err
	}
	if err := b.deleteAll(ctx); err != nil {
		return cost, err
	}
	calls := b.h.pam.Calls()
	for _, c := range calls {
		if c.Endpoint == emulator.EndpointCloseRequest && c.RequestID == el.Status.RequestID {
			cost.closes++
		}
	}
	cost.calls, cost.breakdown = len(calls), byEndpoint(calls)
	cost.writes, err = b.managerWrites(auditBefore, names[0])
	return cost, err
}

// byEndpoint says how many of calls went to each endpoint, e.g. "list-requests 2, close-request 1".
func byEndpoint(calls []emulator.Call) string {
	counts := map[emulator.Endpoint]int{}
	for _, c := range calls {
		counts[c.Endpoint]++
	}
	var kinds []string
	for _, e := range emulator.Endpoints() {
		if n := counts[e]; n > 0 {
			kinds = append(kinds, fmt.Sprintf("%s %d", e, n))
		}
	}
	return strings.Join(kinds, ", ")
}

type writeCounts struct{ objects, events int }

// auditLines counts the lines of the API server's audit log so far.
func (b *bench) auditLines() (int, error) {
	f, err := os.Open(filepath.Join(b.h.workDir, auditLogName))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for scanner.Scan() {
		n++
	}
	return n, scanner.Err()
}

// managerRequest is one request of the manager's, as the audit log records it.
type managerRequest struct {
	Verb      string `json:"verb"`
	Stage     string `json:"stage"`
	ObjectRef *struct {
		Resource string `json:"resource"`
		Name     string `json:"name"`
	} `json:"objectRef"`
	ImpersonatedUser *struct {
		Username string `json:"username"`
	} `json:"impersonatedUser"`
}

// managerRequests calls fn with each completed request of the manager's on a resource (reads,
// lists and writes), after line skip of the audit log.
func (b *bench) managerRequests(skip int, fn func(managerRequest)) error {
	f, err := os.Open(filepath.Join(b.h.workDir, auditLogName))
	if err != nil {
		return err
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for line := 0; scanner.Scan(); line++ {
		if line < skip {
			continue
		}
		var req managerRequest
		if json.Unmarshal(scanner.Bytes(), &req) != nil || req.ImpersonatedUser == nil ||
			req.ImpersonatedUser.Username != managerServiceAccount || req.ObjectRef == nil || req.Stage != "ResponseComplete" {
			continue
		}
		fn(req)
	}
	return scanner.Err()
}

// managerWrites counts the manager's writes to one elevation, and its Events, after line skip
// of the audit log.
func (b *bench) managerWrites(skip int, name string) (writeCounts, error) {
	var counts writeCounts
	err := b.managerRequests(skip, func(req managerRequest) {
		if !slices.Contains([]string{"create", "update", "patch", "delete"}, req.Verb) {
			return
		}
		switch {
		case req.ObjectRef.Resource == "pamelevations" && req.ObjectRef.Name == name:
			counts.objects++
		case req.ObjectRef.Resource == "events" && req.Verb == "create":
			counts.events++
		}
	})
	return counts, err
}

// managerRequestsPer returns the manager's requests after line skip of the audit log, per
// each of n, and how they divide by verb and resource, largest first ("patch pamelevations
// 1.00, ...", leaving out those under 0.005).
func (b *bench) managerRequestsPer(skip, n int) (float64, string, error) {
	byKind := map[string]int{}
	total := 0
	err := b.managerRequests(skip, func(req managerRequest) {
		byKind[req.Verb+" "+req.ObjectRef.Resource]++
		total++
	})
	kinds := slices.Collect(maps.Keys(byKind))
	slices.SortFunc(kinds, func(a, b string) int { return cmp.Or(byKind[b]-byKind[a], strings.Compare(a, b)) })
	var parts []string
	for _, kind := range kinds {
		if per := float64(byKind[kind]) / float64(n); per >= 0.005 {
			parts = append(parts, fmt.Sprintf("%s %.2f", kind, per))
		}
	}
	return float64(total) / float64(n), strings.Join(parts, ", "), err
}
