package main

// The mass revocation against the ceilings measured in the same run: the emulator's raw Close
// throughput, the server's rateLimit and the API server's write rate at the manager's QPS.

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/internal/pam"
	"github.com/pam-operator/pam-operator/internal/pam/auth"
	"github.com/pam-operator/pam-operator/pamapi"
)

// mass deletes many elevations in one call and times until every Close succeeded and every
// object is gone, against the ceilings of the same run.
func (b *bench) mass(ctx context.Context) error {
	n := b.cfg.massCount
	names, ids, err := b.createElevations(ctx, n, nil)
	if err != nil {
		return err
	}
	if err := b.waitSynced(ctx, n); err != nil {
		return err
	}
	b.h.pam.ResetCalls()
	before := b.reconcileStats()
	cpuBefore, _ := b.manager.sample("process_cpu_seconds_total")
	auditBefore, err := b.auditLines()
	if err != nil {
		return err
	}
	etcdBefore, err := b.elevationEtcdTimes(ctx)
	if err != nil {
		return err
	}
	if err := b.reportStorage(ctx, "mass revocation: at its start"); err != nil {
		return err
	}
	fmt.Fprintf(b.progress, "    deleting %d elevations in one call\n", n)
	profiled := make(chan error, 2)
	go func() { profiled <- b.saveProfile(ctx, "cpu-mass.pb.gz", "profile?seconds=20") }()
	go func() { profiled <- b.saveAPIServerProfile(ctx, "cpu-mass-kube-apiserver.pb.gz", 20*time.Second) }()
	start := time.Now()
	if err := b.deleteAll(ctx); err != nil {
		return err
	}
	took := time.Since(start)
	etcdAfter, err := b.elevationEtcdTimes(ctx)
	if err != nil {
		return err
	}
	for range 2 {
		if err := <-profiled; err != nil {
			return err
		}
	}
	if got := b.h.closes.count(ids); got != n {
		return fmt.Errorf("%d of %d requests closed", got, n)
	}
	rate := float64(n) / took.Seconds()
	// Where the time went: how long after the API server marked each deletion its Close came,
	// and the manager's own reconcile and queue times over the run.
	var lags, goneLags []time.Duration
	var firstSeen, lastSeen, lastClose time.Time
	for i := range n {
		closed, _ := b.h.closes.get(ids[i])
		if closed.After(lastClose) {
			lastClose = closed
		}
		seen, ok := b.baseline.deleting.get(names[i])
		if !ok {
			continue
		}
		lags = append(lags, closed.Sub(seen))
		if gone, ok := b.baseline.gone.get(names[i]); ok {
			goneLags = append(goneLags, gone.Sub(seen))
		}
		if firstSeen.IsZero() || seen.Before(firstSeen) {
			firstSeen = seen
		}
		if seen.After(lastSeen) {
			lastSeen = seen
		}
	}
	b.report.add("mass revocation: deletion seen → Close, p50", ms(quantile(lags, 0.5)), "ms", "")
	b.report.add("mass revocation: deletion seen → Close, p99", ms(quantile(lags, 0.99)), "ms", "")
	b.report.add("mass revocation: deletion seen → gone, p50", ms(quantile(goneLags, 0.5)), "ms", "")
	b.report.add("mass revocation: deletion seen → gone, p99", ms(quantile(goneLags, 0.99)), "ms", "")
	if len(lags) > 1 {
		b.report.add("mass revocation: pace of the API server's marking (deletions seen per second)",
			float64(len(lags)-1)/lastSeen.Sub(firstSeen).Seconds(), "deletions/s", "")
	}
	after := b.reconcileStats()
	cpuAfter, _ := b.manager.sample("process_cpu_seconds_total")
	b.report.add("mass revocation: the manager's CPU per elevation (close, confirmation, release)", 1000*(cpuAfter-cpuBefore)/float64(n), "ms", "")
	upToLastClose := slices.DeleteFunc(b.h.pam.Calls(), func(c emulator.Call) bool { return c.Time.After(lastClose) })
	b.report.add("mass revocation: PAM calls up to the last Close", float64(len(upToLastClose)), "calls", byEndpoint(upToLastClose))
	b.report.add("mass revocation: the manager's passes per elevation", (after.reconcileCount-before.reconcileCount)/float64(n), "passes", "")
	b.report.add("mass revocation: mean reconcile time", after.meanReconcile(before), "ms", "")
	b.report.add("mass revocation: mean queue wait", after.meanQueueWait(before), "ms", "")
	b.report.add(fmt.Sprintf("mass revocation: %d elevations, delete-collection → all closed and gone", n), took.Seconds(), "s", "")
	b.report.add("mass revocation: delete-collection → the last Close", lastClose.Sub(start).Seconds(), "s", "when the last access was revoked")
	b.report.add("mass revocation: closes per second", rate, "closes/s", "")
	perClose, byKind, err := b.managerRequestsPer(auditBefore, n)
	if err != nil {
		return err
	}
	b.report.add("mass revocation: the manager's Kubernetes API requests per close", perClose, "requests", byKind)

	emuRate, err := b.rawCloseThroughput(ctx, 2000, 16)
	if err != nil {
		return err
	}
	apiRate, err := b.apiWriteCeiling(ctx, 1000)
	if err != nil {
		return err
	}
	markRate, err := b.deletionMarkCeiling(ctx, n)
	if err != nil {
		return err
	}
	releaseRate, releaseEtcd, err := b.releaseCeiling(ctx, n)
	if err != nil {
		return err
	}
	// A close of a request read open costs one call on its path: the confirming reads wait behind
	// the closes and share the server's lists.
	pamRate := float64(b.cfg.rateLimit)
	b.report.add("ceiling: emulator raw Close throughput (16 plain clients)", emuRate, "closes/s", "")
	b.report.add(fmt.Sprintf("ceiling: API server writes at the manager's QPS %d", b.cfg.kubeAPIQPS), apiRate, "writes/s", "one write per close")
	b.report.add(fmt.Sprintf("ceiling: PAM rateLimit %d calls/s, one call per close", b.cfg.rateLimit), pamRate, "closes/s", "")
	b.report.add(fmt.Sprintf("ceiling: API server deletes %d elevations, released at QPS %d by a client that only removes the finalizer", n, b.cfg.kubeAPIQPS),
		releaseRate, "deletions/s", "the Kubernetes side of a mass revocation alone")
	lowest := min(emuRate, apiRate, pamRate, releaseRate)
	b.report.add("mass revocation / lowest ceiling", rate/lowest, "×", "goal: ≥ 0.9")
	runEtcd := etcdAfter.meansSince(etcdBefore)
	for _, op := range []string{"get", "update"} {
		b.report.add(fmt.Sprintf("mass revocation: API server → etcd, mean %s of an elevation", op),
			runEtcd[op], "ms", fmt.Sprintf("%.2f ms in the ceiling; marking a deletion takes one get and one update", releaseEtcd[op]))
	}
	b.report.add(fmt.Sprintf("limit: API server marks a delete-collection of %d elevations that hold the finalizer, the manager stopped", n),
		markRate, "deletions/s", "a deletion cannot be closed before it is marked")
	b.report.add("mass revocation / deletion marking", rate/markRate, "×", "")
	// What a security team measures: when the last access is gone, against what bounds it —
	// one Close per request at the server's rate limit, or the marking of the deletions alone.
	bound := max(float64(n)/float64(b.cfg.rateLimit), float64(n)/markRate)
	b.report.add(fmt.Sprintf("mass revocation: the last Close / max(%d ÷ rateLimit %d/s, marking alone)", n, b.cfg.rateLimit),
		lastClose.Sub(start).Seconds()/bound, "×", "goal: ≤ 1.1")
	return nil
}

// deleteCollection deletes every object of obj's kind in namespace with delete-collection.
// Thousands of objects with finalizers can outlast the API server's request timeout (a timeout
// or a reset stream); what it has not reached is deleted by asking again, as a user would.
func (b *bench) deleteCollection(ctx context.Context, obj client.Object, namespace string) error {
	for attempt := 1; ; attempt++ {
		err := b.h.client.DeleteAllOf(ctx, obj, client.InNamespace(namespace))
		if err == nil {
			return nil
		}
		if attempt == 10 || ctx.Err() != nil {
			return err
		}
		fmt.Fprintf(b.progress, "    delete-collection ended early (%v); asking again\n", err)
	}
}

// deletionMarkCeiling deletes n elevations that hold the finalizer in one delete-collection,
// with the manager stopped, and returns how many deletions per second the API server marked: the
// pace at which a mass revocation's deletions can reach any controller. They are made as the
// mass revocation's are, and synced by the manager, so that they carry what it writes (status,
// managed fields): the API server decodes and writes each whole to mark it, so bare objects
// would mark faster than the deletion measured. Nothing else writes meanwhile, so this is the
// marking alone. They use an account of their own: the emulator keeps every request of the
// steps before, and in a full run the bench's account holds nearly as many as one list answers.
func (b *bench) deletionMarkCeiling(ctx context.Context, n int) (float64, error) {
	const ns, user = "bench-marking", "pam-marking"
	b.h.pam.SetPassword(user, pamPassword)
	if err := b.createServer(ctx, ns, user); err != nil {
		return 0, err
	}
	names, ids, err := b.createElevationsIn(ctx, ns, user, n, nil)
	if err != nil {
		return 0, err
	}
	if err := b.waitSyncedIn(ctx, ns, n); err != nil {
		return 0, err
	}
	b.manager.stop()
	defer func() { _ = b.startManager(ctx) }()
	start := time.Now()
	if err := b.deleteCollection(ctx, &pamv1.PamElevation{}, ns); err != nil {
		return 0, err
	}
	rate := float64(n) / time.Since(start).Seconds()
	// Release them and end their requests, so that nothing is left for the steps after.
	for _, id := range ids {
		b.h.pam.SetRequestStatus(id, pamapi.StatusClosed)
	}
	err = parallel(ctx, n, 16, func(i int) error {
		patch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`))
		el := &pamv1.PamElevation{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: names[i]}}
		return client.IgnoreNotFound(b.h.client.Patch(ctx, el, patch))
	})
	return rate, err
}

// releaseCeiling is the Kubernetes side of a mass revocation on its own: n elevations deleted in
// one delete-collection and released by the least a controller can do, remove the finalizer
// when it sees the deletion, with the manager's QPS, burst and workers. The manager is stopped
// meanwhile, so the elevations call no PAM, and the API server does only what any controller's
// mass release costs it: mark each deletion, take the finalizer patch, and delete.
func (b *bench) releaseCeiling(ctx context.Context, n int) (float64, map[string]float64, error) {
	const ns = "bench-release"
	b.manager.stop()
	defer func() { _ = b.startManager(ctx) }()
	if err := b.h.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return 0, nil, err
	}
	if err := parallel(ctx, n, 16, func(i int) error {
		return b.h.client.Create(ctx, &pamv1.PamElevation{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("released-%06d", i), Finalizers: []string{pamv1.ElevationFinalizer}},
			Spec:       pamv1.PamElevationSpec{RequestID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), ServerRef: pamv1.ServerReference{Name: "pam"}}})
	}); err != nil {
		return 0, nil, err
	}
	cfg := b.managerRateConfig()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: b.h.client.Scheme(), Metrics: metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0", Cache: cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}}})
	if err != nil {
		return 0, nil, err
	}
	c := mgr.GetClient()
	err = ctrl.NewControllerManagedBy(mgr).Named("releaser").For(&pamv1.PamElevation{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: b.cfg.workers}).
		Complete(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			el := &pamv1.PamElevation{}
			if err := c.Get(ctx, req.NamespacedName, el); err != nil || el.DeletionTimestamp.IsZero() {
				return reconcile.Result{}, client.IgnoreNotFound(err)
			}
			patch := client.MergeFromWithOptions(el.DeepCopy(), client.MergeFromWithOptimisticLock{})
			el.Finalizers = nil
			return reconcile.Result{}, client.IgnoreNotFound(c.Patch(ctx, el, patch))
		}))
	if err != nil {
		return 0, nil, err
	}
	releaserCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = mgr.Start(releaserCtx) }()
	if !mgr.GetCache().WaitForCacheSync(releaserCtx) {
		return 0, nil, fmt.Errorf("the releaser's cache did not sync")
	}
	etcdBefore, err := b.elevationEtcdTimes(ctx)
	if err != nil {
		return 0, nil, err
	}
	start := time.Now()
	if err := b.deleteCollection(ctx, &pamv1.PamElevation{}, ns); err != nil {
		return 0, nil, err
	}
	if err := poll(ctx, 10*time.Minute, 100*time.Millisecond, func() (bool, error) {
		total, _, err := b.baseline.count(ctx, ns)
		return total == 0, err
	}); err != nil {
		return 0, nil, err
	}
	rate := float64(n) / time.Since(start).Seconds()
	etcdAfter, err := b.elevationEtcdTimes(ctx)
	if err != nil {
		return 0, nil, err
	}
	return rate, etcdAfter.meansSince(etcdBefore), nil
}

// reconcileStats are the sums and counts of the manager's PamElevation reconcile and queue-wait
// histograms.
type reconcileStats struct {
	reconcileSum, reconcileCount, queueSum, queueCount float64
}

func (b *bench) reconcileStats() reconcileStats {
	var st reconcileStats
	for name, v := range b.manager.samples() {
		if !strings.Contains(name, `controller="pamelevation"`) && !strings.Contains(name, `name="pamelevation"`) {
			continue
		}
		switch {
		case strings.HasPrefix(name, "controller_runtime_reconcile_time_seconds_sum"):
			st.reconcileSum = v
		case strings.HasPrefix(name, "controller_runtime_reconcile_time_seconds_count"):
			st.reconcileCount = v
		case strings.HasPrefix(name, "workqueue_queue_duration_seconds_sum"):
			st.queueSum = v
		case strings.HasPrefix(name, "workqueue_queue_duration_seconds_count"):
			st.queueCount = v
		}
	}
	return st
}

func (st reconcileStats) meanReconcile(before reconcileStats) float64 {
	if st.reconcileCount == before.reconcileCount {
		return 0
	}
	return 1000 * (st.reconcileSum - before.reconcileSum) / (st.reconcileCount - before.reconcileCount)
}

func (st reconcileStats) meanQueueWait(before reconcileStats) float64 {
	if st.queueCount == before.queueCount {
		return 0
	}
	return 1000 * (st.queueSum - before.queueSum) / (st.queueCount - before.queueCount)
}

// etcdTimes are kube-apiserver's etcd_request_duration_seconds for elevations: the sum and count
// per operation.
type etcdTimes map[string][2]float64

// elevationEtcdTimes reads etcdTimes from kube-apiserver's metrics.
func (b *bench) elevationEtcdTimes(ctx context.Context) (etcdTimes, error) {
	req, err := b.apiServerGet("/metrics")
	if err != nil {
		return nil, err
	}
	body, err := req.DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("kube-apiserver metrics: %w", err)
	}
	field := map[string]int{"etcd_request_duration_seconds_sum": 0, "etcd_request_duration_seconds_count": 1}
	times := etcdTimes{}
	for line := range strings.Lines(string(body)) {
		name, rest, _ := strings.Cut(line, "{")
		i, ok := field[name]
		if !ok || !strings.Contains(rest, `resource="pamelevations"`) {
			continue
		}
		_, op, _ := strings.Cut(rest, `operation="`)
		op, _, _ = strings.Cut(op, `"`)
		fields := strings.Fields(rest)
		if op == "" || len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			continue
		}
		t := times[op]
		t[i] = v
		times[op] = t
	}
	return times, nil
}

// reportStorage reports what etcd holds, as kube-apiserver sees it: the database's size, which
// the objects and events earlier steps left make larger and slower, and the objects by kind.
func (b *bench) reportStorage(ctx context.Context, when string) error {
	req, err := b.apiServerGet("/metrics")
	if err != nil {
		return err
	}
	body, err := req.DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("kube-apiserver metrics: %w", err)
	}
	var size float64
	objects := map[string]float64{}
	for line := range strings.Lines(string(body)) {
		name, rest, _ := strings.Cut(line, "{")
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			continue
		}
		switch name {
		case "apiserver_storage_size_bytes":
			size = max(size, v)
		case "apiserver_storage_objects":
			_, resource, _ := strings.Cut(rest, `resource="`)
			resource, _, _ = strings.Cut(resource, `"`)
			if v >= 100 {
				objects[resource] = v
			}
		}
	}
	var kinds []string
	for resource, n := range objects {
		kinds = append(kinds, fmt.Sprintf("%s %.0f", resource, n))
	}
	slices.Sort(kinds)
	b.report.add(when+", etcd's database size", mib(int64(size)), "MiB", strings.Join(kinds, ", "))
	return nil
}

// meansSince is the mean time of each operation since before, in milliseconds; 0 for one that
// did not run.
func (t etcdTimes) meansSince(before etcdTimes) map[string]float64 {
	means := map[string]float64{}
	for op, now := range t {
		if n := now[1] - before[op][1]; n > 0 {
			means[op] = (now[0] - before[op][0]) / n * 1000
		}
	}
	return means
}

// rawCloseThroughput closes n requests from workers plain clients and returns closes per second.
func (b *bench) rawCloseThroughput(ctx context.Context, n, workers int) (float64, error) {
	pc, err := pam.NewClient(pam.Config{URL: b.h.pamURL, CABundle: []byte(b.h.pam.CABundle), Auth: auth.Basic(pamUser, pamPassword)})
	if err != nil {
		return 0, err
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = b.h.pam.AddRequest(emulator.Request{Owner: pamUser, RoleID: "2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d", RequestedTTL: time.Hour}).ID
	}
	start := time.Now()
	err = parallel(ctx, n, workers, func(i int) error { return pc.Close(ctx, ids[i]) })
	return float64(n) / time.Since(start).Seconds(), err
}

// apiWriteCeiling patches n ConfigMaps from a client limited like the manager's and returns
// writes per second: what the manager's finalizer removals can reach at best.
func (b *bench) apiWriteCeiling(ctx context.Context, n int) (float64, error) {
	cfg := b.managerRateConfig()
	c, err := client.New(cfg, client.Options{Scheme: b.h.client.Scheme()})
	if err != nil {
		return 0, err
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: b.ns, Name: "write-ceiling"}}
	if err := c.Create(ctx, cm); err != nil {
		return 0, err
	}
	start := time.Now()
	err = parallel(ctx, n, 16, func(i int) error {
		patch := client.RawPatch("application/merge-patch+json", []byte(fmt.Sprintf(`{"data":{"k%d":"v"}}`, i%64)))
		return c.Patch(ctx, cm.DeepCopy(), patch)
	})
	return float64(n) / time.Since(start).Seconds(), err
}

// managerRateConfig is a client configuration with the manager's QPS and burst.
func (b *bench) managerRateConfig() *rest.Config {
	cfg := rest.CopyConfig(b.h.env.Config)
	cfg.QPS, cfg.Burst = float32(b.cfg.kubeAPIQPS), 2*b.cfg.kubeAPIQPS
	return cfg
}
