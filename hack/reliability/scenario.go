package main

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/pamapi"
)

const (
	groupLabel  = "reliability/group"
	groupDelete = "delete"
	groupExpire = "expire"
	// tenantLabel marks the scenarios' namespaces, which ClusterPamServers allow.
	tenantLabel = "reliability/tenant"
)

// scenario is one run: elevations that expire or are deleted together while PAM misbehaves and
// managers are killed.
type scenario struct {
	name       string
	elevations int
	// faults are injected for the fault window, then cleared.
	faults      []emulator.Fault
	faultWindow time.Duration
	// kills SIGKILLs spread over the fault window; with failover the leader is killed.
	kills int
	// failover runs two managers with leader election.
	failover bool
	// apiServerDown cuts the managers off kube-apiserver for this long in the middle of the
	// window, as a restart of the API server does: connections reset, new ones refused.
	apiServerDown time.Duration
	// conflicts makes a "user" edit every elevation's annotations throughout the window.
	conflicts bool
	// sameInstant gives every elevation the same expiresAt and deletes none.
	sameInstant bool
	// clusterServer makes the elevations use a ClusterPamServer, whose Secret lives in the
	// operator's namespace, instead of a PamServer beside them.
	clusterServer bool
}

// result holds the figures of one run. The invariants are lost == 0, duplicates == 0, stuck ==
// 0, leaks == 0 and, with failover, overlap == 0.
type result struct {
	scenario
	faultsInjected int
	managerKills   int
	lost           int
	duplicates     int
	extraCloses    int
	stuck          int
	leaks          int
	overlap        int
	// scrapes counts the metrics endpoints scanned for the credential.
	scrapes      int
	recovery     time.Duration
	failoverTime time.Duration
}

func (r result) violations() []string {
	var v []string
	if r.lost > 0 {
		v = append(v, fmt.Sprintf("%d lost closes", r.lost))
	}
	if r.duplicates > 0 {
		v = append(v, fmt.Sprintf("%d duplicate successful closes", r.duplicates))
	}
	if r.stuck > 0 {
		v = append(v, fmt.Sprintf("%d stuck objects", r.stuck))
	}
	if r.leaks > 0 {
		v = append(v, fmt.Sprintf("the credential appeared %d times in logs, events or status", r.leaks))
	}
	if r.overlap > 0 {
		v = append(v, fmt.Sprintf("%d PAM calls from a manager that was not the leader", r.overlap))
	}
	return v
}

// deadline is how long after the faults stop every object must be gone: the retry cap plus one
// sync interval, plus room for a 2-core machine and a leader failover.
// scenarioRateLimit is the scenario servers' rateLimit.qps and burst.
const scenarioRateLimit = 300

func (sc scenario) deadline() time.Duration {
	d := maxRetryDelay + syncInterval + 15*time.Second
	if sc.failover {
		d += 5 * time.Second
	}
	return d
}

func (h *harness) run(ctx context.Context, sc scenario, rng *rand.Rand) (result, error) {
	res := result{scenario: sc}
	ns := "rel-" + sc.name
	if err := h.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{tenantLabel: "yes"}}}); err != nil {
		return res, err
	}
	serverSpec := pamv1.PamServerSpec{
		URL: h.pamURL, CABundle: h.pam.CABundle, Timeout: &metav1.Duration{Duration: time.Second},
		Auth: &pamv1.PamServerAuth{Basic: &pamv1.BasicAuth{SecretRef: pamv1.SecretReference{Name: "pam"}}},
		// The scenarios time the recovery from faults, against the retry cap and the sync
		// interval. At the default 10 calls/s, draining a few hundred pending closes would take
		// longer than that by itself; the rate limit is measured by make bench instead.
		RateLimit: &pamv1.RateLimit{QPS: scenarioRateLimit, Burst: scenarioRateLimit, MaxConcurrentCalls: 16},
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"},
		StringData: map[string]string{"username": pamUser, "password": pamPassword}}
	var server client.Object = &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"}, Spec: serverSpec}
	serverRef := pamv1.ServerReference{Name: "pam"}
	if sc.clusterServer {
		secret.Namespace, secret.Name = operatorNamespace, ns
		serverSpec.Auth.Basic.SecretRef.Name = ns
		server = &pamv1.ClusterPamServer{ObjectMeta: metav1.ObjectMeta{Name: ns}, Spec: pamv1.ClusterPamServerSpec{
			PamServerSpec:     serverSpec,
			AllowedNamespaces: &metav1.LabelSelector{MatchLabels: map[string]string{tenantLabel: "yes"}},
		}}
		serverRef = pamv1.ServerReference{Kind: pamv1.ServerKindClusterPamServer, Name: ns}
	}
	for _, obj := range []client.Object{secret, server} {
		if err := h.client.Create(ctx, obj); err != nil {
			return res, err
		}
	}

	f := &fleet{h: h, election: sc.failover}
	defer f.stopAll()
	for range map[bool]int{false: 1, true: 2}[sc.failover] {
		if _, err := f.start(); err != nil {
			return res, err
		}
	}

	// Half the elevations expire during the fault window, the other half are deleted in it.
	sameInstant := metav1.NewTime(time.Now().Add(sc.faultWindow).Truncate(time.Second))
	ids := make([]string, sc.elevations)
	for i := range ids {
		ids[i] = h.pam.AddRequest(emulator.Request{Owner: pamUser, RoleID: "2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d", RequestedTTL: time.Hour}).ID
		el := &pamv1.PamElevation{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("el-%04d", i),
			Labels: map[string]string{groupLabel: groupDelete}},
			Spec: pamv1.PamElevationSpec{RequestID: ids[i], ServerRef: serverRef}}
		switch {
		case sc.sameInstant:
			el.Labels[groupLabel] = groupExpire
			el.Spec.ExpiresAt = &sameInstant
		case i%2 == 0:
			el.Labels[groupLabel] = groupExpire
			el.Spec.TTL = &metav1.Duration{Duration: 3*time.Second + time.Duration(rng.Int63n(int64(sc.faultWindow)))}
		}
		if err := h.client.Create(ctx, el); err != nil {
			return res, err
		}
	}
	if err := h.waitTracked(ctx, ns, sc.elevations, 60*time.Second); err != nil {
		return res, err
	}

	h.pam.ResetCalls()
	for _, fault := range sc.faults {
		h.pam.InjectFault(fault)
	}
	faultStart := time.Now()
	if err := h.client.DeleteAllOf(ctx, &pamv1.PamElevation{}, client.InNamespace(ns), client.MatchingLabels{groupLabel: groupDelete}); err != nil {
		return res, err
	}
	disturbed := make(chan error, 1)
	disturbCtx, stopDisturbing := context.WithCancel(ctx)
	defer stopDisturbing()
	go func() { disturbed <- h.disturb(disturbCtx, sc, ns) }()
	killEvery := sc.faultWindow / time.Duration(sc.kills+1)
	var killedAt time.Time
	var killed string
	for k := 0; k < sc.kills; k++ {
		if !sleepCtx(ctx, killEvery/2+time.Duration(rng.Int63n(int64(killEvery)))) {
			return res, ctx.Err()
		}
		name := ""
		if sc.failover {
			name = h.activeManager(faultStart)
		}
		victim := f.killOne(name)
		if victim != nil && killed == "" && sc.failover {
			killed, killedAt = victim.name, time.Now()
		}
		if _, err := f.start(); err != nil {
			return res, err
		}
	}
	if !sleepCtx(ctx, time.Until(faultStart.Add(sc.faultWindow))) {
		return res, ctx.Err()
	}
	h.pam.ClearFaults()
	stopDisturbing()
	if err := <-disturbed; err != nil {
		return res, err
	}

	var remaining []pamv1.PamElevation
	res.recovery, remaining = h.waitSettled(ctx, ns, sc.deadline())
	res.managerKills = f.kills
	calls := h.pam.Calls()
	for _, c := range calls {
		if c.Fault != "" {
			res.faultsInjected++
		}
	}
	pending := map[string]bool{}
	for _, el := range remaining {
		if !isClosed(&el) {
			pending[strings.ToLower(el.Spec.RequestID)] = true
			res.stuck++
		}
	}
	for _, id := range ids {
		req, _ := h.pam.Request(id)
		attempts, successes := h.pam.CloseCalls(id)
		ended := req.Status == pamapi.StatusClosed || req.Status == pamapi.StatusExpired || req.Status == pamapi.StatusRejected
		// Released or reported closed, yet open in PAM: a lost close.
		if !ended && !pending[id] {
			res.lost++
		}
		if successes > 1 {
			res.duplicates++
		}
		res.extraCloses += attempts - min(successes, 1)
	}
	if sc.failover && killed != "" {
		res.overlap, res.failoverTime = failoverFigures(calls, killed, killedAt)
	}
	scraped := f.metrics()
	for _, m := range scraped {
		if strings.Contains(m, "controller_runtime_reconcile_total") {
			res.scrapes++
		}
	}
	res.leaks = h.countLeaks(ctx, ns, scraped)
	// The expired elevations stay as records until deleted; deleting them needs no call to PAM.
	if err := h.client.DeleteAllOf(ctx, &pamv1.PamElevation{}, client.InNamespace(ns)); err != nil {
		return res, err
	}
	return res, nil
}

// disturb does what the scenario does to the cluster besides PAM faults and kills: a user
// editing the objects while the operator patches them, or the API server going away.
func (h *harness) disturb(ctx context.Context, sc scenario, ns string) error {
	if sc.apiServerDown > 0 {
		if !sleepCtx(ctx, (sc.faultWindow-sc.apiServerDown)/2) {
			return nil
		}
		h.apiProxy.cut(sc.apiServerDown)
	}
	if sc.conflicts {
		// A rotation while closes are pending: the operator refreshes its escrowed copy.
		secret := &corev1.Secret{}
		if err := h.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "pam"}, secret); err != nil {
			return err
		}
		patch := client.MergeFrom(secret.DeepCopy())
		secret.StringData = map[string]string{"rotated-at": time.Now().UTC().Format(time.RFC3339Nano)}
		if err := h.client.Patch(ctx, secret, patch); err != nil {
			return err
		}
	}
	for n := 0; sc.conflicts; n++ {
		var list pamv1.PamElevationList
		if err := h.client.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return nil // the window ended
		}
		for i := range list.Items {
			el := &list.Items[i]
			patch := client.MergeFrom(el.DeepCopy())
			if el.Annotations == nil {
				el.Annotations = map[string]string{}
			}
			el.Annotations["reliability/edited"] = fmt.Sprint(n)
			_ = h.client.Patch(ctx, el, patch) // an object may be gone already
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return nil
		}
	}
	return nil
}

// activeManager names the manager that called PAM last: the leader.
func (h *harness) activeManager(since time.Time) string {
	calls := h.pam.Calls()
	for i := len(calls) - 1; i >= 0; i-- {
		if calls[i].Time.After(since) || i == 0 {
			if name, ok := strings.CutPrefix(calls[i].UserAgent, "pam-operator (pod "); ok {
				return strings.TrimSuffix(name, ")")
			}
		}
	}
	return ""
}

// failoverFigures counts calls the killed leader made after its death (impossible unless two
// managers ran at once) and calls by any other manager before it (a second active manager), and
// measures the time from the kill to the new leader's first call.
func failoverFigures(calls []emulator.Call, killed string, killedAt time.Time) (overlap int, took time.Duration) {
	killedUA := "pam-operator (pod " + killed + ")"
	firstOther := time.Time{}
	for _, c := range calls {
		switch {
		case c.UserAgent == killedUA && c.Time.After(killedAt):
			overlap++
		case c.UserAgent != killedUA && c.Time.Before(killedAt):
			overlap++
		case c.UserAgent != killedUA && firstOther.IsZero():
			firstOther = c.Time
		}
	}
	if !firstOther.IsZero() {
		took = firstOther.Sub(killedAt)
	}
	return overlap, took
}

// waitTracked waits until every elevation has been read from PAM once.
func (h *harness) waitTracked(ctx context.Context, ns string, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var list pamv1.PamElevationList
		if err := h.client.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		synced := 0
		for _, el := range list.Items {
			if el.Status.LastSyncTime != nil {
				synced++
			}
		}
		if synced == want {
			return nil
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
	return fmt.Errorf("elevations in %s were not all synced within %s", ns, timeout)
}

// waitSettled waits until every deleted elevation is gone and every expiring one is Closed, and
// returns how long that took and what is left in the namespace.
func (h *harness) waitSettled(ctx context.Context, ns string, timeout time.Duration) (time.Duration, []pamv1.PamElevation) {
	start := time.Now()
	for {
		var list pamv1.PamElevationList
		if err := h.client.List(ctx, &list, client.InNamespace(ns)); err == nil {
			settled := true
			for i := range list.Items {
				if list.Items[i].Labels[groupLabel] == groupDelete || !isClosed(&list.Items[i]) {
					settled = false
				}
			}
			if settled || time.Since(start) > timeout {
				return time.Since(start), list.Items
			}
		}
		if !sleepCtx(ctx, 50*time.Millisecond) {
			return time.Since(start), nil
		}
	}
}

func isClosed(el *pamv1.PamElevation) bool {
	return meta.IsStatusConditionTrue(el.Status.Conditions, pamv1.ConditionClosed)
}

// countLeaks scans the managers' logs and metrics, the namespace's Events and the status it left
// for the credential canary.
func (h *harness) countLeaks(ctx context.Context, ns string, metrics []string) int {
	leaks := 0
	for _, m := range metrics {
		leaks += strings.Count(m, pamPassword)
	}
	logs, _ := filepath.Glob(filepath.Join(h.workDir, "*.log"))
	for _, path := range logs {
		data, _ := os.ReadFile(path)
		leaks += strings.Count(string(data), pamPassword)
	}
	var events eventsv1.EventList
	if h.client.List(ctx, &events, client.InNamespace(ns)) == nil {
		for _, e := range events.Items {
			leaks += strings.Count(e.Note, pamPassword)
		}
	}
	var servers pamv1.PamServerList
	if h.client.List(ctx, &servers, client.InNamespace(ns)) == nil {
		for _, s := range servers.Items {
			for _, c := range s.Status.Conditions {
				leaks += strings.Count(c.Message, pamPassword)
			}
		}
	}
	return leaks
}

// sleepCtx waits for d: the scenario's own timing (fault windows, kill spacing), not a way to
// wait for something to happen.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
