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

	"github.com/pam-operator/pam-operator/emulator"
)

// economy counts the PAM calls and Kubernetes writes of one elevation's life: created, Active,
// deleted, gone.
func (b *bench) economy(ctx context.Context) error {
	b.h.pam.ResetCalls()
	auditBefore, err := b.auditLines()
	if err != nil {
		return err
	}
	names, ids, err := b.createElevations(ctx, 1, nil)
	if err != nil {
		return err
	}
	if err := b.waitSynced(ctx, 1); err != nil {
		return err
	}
	if err := b.deleteAll(ctx); err != nil {
		return err
	}
	calls, closes := 0, 0
	byEndpoint := map[emulator.Endpoint]int{}
	for _, c := range b.h.pam.Calls() {
		calls++
		byEndpoint[c.Endpoint]++
		if c.Endpoint == emulator.EndpointCloseRequest && c.RequestID == ids[0] {
			closes++
		}
	}
	var breakdown []string
	for _, e := range emulator.Endpoints() {
		if n := byEndpoint[e]; n > 0 {
			breakdown = append(breakdown, fmt.Sprintf("%s %d", e, n))
		}
	}
	writes, err := b.managerWrites(auditBefore, names[0])
	if err != nil {
		return err
	}
	b.report.add("economy: PAM calls per lifecycle (create → Active → delete)", float64(calls), "calls",
		strings.Join(breakdown, ", ")+": first read, Close, confirming read; a live read before the close too when this process has not read the request open, and a periodic sync's list when one falls within the lifecycle")
	b.report.add("economy: Close calls per closed elevation", float64(closes), "calls", "goal: 1")
	b.report.add("economy: Kubernetes writes per lifecycle", float64(writes.objects), "writes", "finalizer added, status, finalizer removed")
	b.report.add("economy: Events per lifecycle", float64(writes.events), "writes", "")
	return nil
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
