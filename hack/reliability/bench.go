package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
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
)

// benchConfig sizes the benchmarks.
type benchConfig struct {
	latencyCount int
	expiryCount  int
	expirySpread time.Duration
	massCount    int
	memorySizes  []int
	// kubeAPIQPS is the manager's client QPS, which bounds its writes.
	kubeAPIQPS int
	// rateLimit is the PamServer's rateLimit.qps, part of what bounds a mass revocation.
	rateLimit int
	// workers is the manager's --max-concurrent-reconciles.
	workers int
	// managerGOGC is the manager's GOGC; 0 leaves the manager's own default.
	managerGOGC int
	// steps names the benchmarks to run; nil runs all.
	steps map[string]bool
	// baselineApart also times the latency baseline in a process of its own.
	baselineApart bool
}

// benchRow is one line of the report.
type benchRow struct {
	Measure string  `json:"measure"`
	Value   float64 `json:"value"`
	Unit    string  `json:"unit"`
	Note    string  `json:"note,omitempty"`
}

// benchReport is what `make bench` prints and writes to bin/bench/.
type benchReport struct {
	Started time.Time  `json:"started"`
	Machine string     `json:"machine"`
	Config  string     `json:"config"`
	Rows    []benchRow `json:"rows"`
}

func (r *benchReport) add(measure string, value float64, unit, note string) {
	r.Rows = append(r.Rows, benchRow{Measure: measure, Value: value, Unit: unit, Note: note})
}

// runBench starts the lab once and runs every measurement in it.
func runBench(ctx context.Context, workDir string, cfg benchConfig, progress io.Writer) (*benchReport, error) {
	report := &benchReport{Started: time.Now().UTC(), Machine: machineSummary(),
		Config: fmt.Sprintf("%+v", cfg)}
	h, err := startHarness(workDir, false)
	if err != nil {
		return nil, err
	}
	defer h.stop()
	if cfg.managerGOGC > 0 {
		h.managerEnv = append(h.managerEnv, fmt.Sprintf("GOGC=%d", cfg.managerGOGC))
	}
	b := &bench{h: h, cfg: cfg, report: report, progress: progress}
	if root, err := repoRoot(); err == nil {
		b.profileDir = filepath.Join(root, "bin", "bench", "profiles-"+report.Started.Format("20060102T150405Z"))
	}
	if err := b.setup(ctx); err != nil {
		return report, err
	}
	defer func() { b.manager.stop() }()
	type benchStep struct {
		key, name string
		run       func(context.Context) error
	}
	// The benchmarks that time single closes run first, on a control plane nothing has loaded
	// yet: ten thousand elevations deleted leave the API server and etcd busy for a while after
	// the objects are gone, which a settled manager cannot show.
	steps := []benchStep{
		{"latency", "delete → close latency", b.latency},
		{"expiry", "expiry precision", b.expiry},
		{"economy", "economy", b.economy},
		{"memory", "memory and idle sync", b.memory},
		{"mass", "mass revocation", b.mass},
	}
	for key := range cfg.steps {
		if !slices.ContainsFunc(steps, func(s benchStep) bool { return s.key == key }) {
			return report, fmt.Errorf("--bench-steps: no benchmark %q", key)
		}
	}
	for _, step := range steps {
		if cfg.steps != nil && !cfg.steps[step.key] {
			continue
		}
		if err := b.settle(ctx); err != nil {
			return report, fmt.Errorf("waiting for the manager to settle before %s: %w", step.name, err)
		}
		fmt.Fprintf(progress, "==> %s\n", step.name)
		if err := step.run(ctx); err != nil {
			return report, fmt.Errorf("%s: %w", step.name, err)
		}
	}
	return report, nil
}

type bench struct {
	h        *harness
	cfg      benchConfig
	report   *benchReport
	progress io.Writer
	manager  *managerProc
	ns       string
	// baseline is a minimal controller that records when it sees each deletion.
	baseline *deletionWatcher
	seq      int
	// perElevationSetup is how long creating and first syncing took per elevation, measured at
	// the first memory size.
	perElevationSetup time.Duration
	// pprofURL is where the manager serves its Go profiles.
	pprofURL string
	// profileDir receives the profiles the benchmarks take (bin/bench/profiles-<start>/).
	profileDir string
}

const benchNamespace = "bench"

// benchSyncInterval is the manager's sync interval in the benchmarks: long enough that the
// periodic sync (one status write per elevation and interval) does not compete with what is
// measured, short enough to count a few intervals.
const benchSyncInterval = 20 * time.Second

func (b *bench) setup(ctx context.Context) error {
	b.ns = benchNamespace
	h := b.h
	objects := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: b.ns}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: b.ns, Name: "pam"},
			StringData: map[string]string{"username": pamUser, "password": pamPassword}},
		&pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: b.ns, Name: "pam"}, Spec: pamv1.PamServerSpec{
			URL: h.pamURL, Timeout: &metav1.Duration{Duration: 5 * time.Second},
			Auth:      &pamv1.PamServerAuth{Basic: &pamv1.BasicAuth{SecretRef: pamv1.SecretReference{Name: "pam"}}},
			RateLimit: &pamv1.RateLimit{QPS: int32(b.cfg.rateLimit), Burst: int32(b.cfg.rateLimit), MaxConcurrentCalls: 16},
		}},
	}
	for _, obj := range objects {
		if err := h.client.Create(ctx, obj); err != nil {
			return err
		}
	}
	if err := b.startManager(ctx); err != nil {
		return err
	}
	baseline, err := startDeletionWatcher(ctx, h.env.Config, h.client.Scheme(), nil)
	b.baseline = baseline
	return err
}

// startManager starts the manager built from the tree and waits until it is up.
func (b *bench) startManager(ctx context.Context) error {
	pprofAddr, err := freeAddr()
	if err != nil {
		return err
	}
	b.pprofURL = "http://" + pprofAddr + "/debug/pprof/"
	fmt.Fprintf(b.progress, "manager profiles: %s\n", b.pprofURL)
	b.manager, err = b.h.startManager("bench", false,
		"--kube-api-qps", strconv.Itoa(b.cfg.kubeAPIQPS), "--kube-api-burst", strconv.Itoa(2*b.cfg.kubeAPIQPS),
		"--max-concurrent-reconciles", strconv.Itoa(b.cfg.workers), "--pam-sync-interval", benchSyncInterval.String(),
		"--pprof-bind-address", pprofAddr)
	if err != nil {
		return err
	}
	// The manager is up once its metrics answer.
	if err := poll(ctx, time.Minute, 100*time.Millisecond, func() (bool, error) {
		_, _, err := b.manager.memoryUse()
		return err == nil, nil
	}); err != nil {
		return fmt.Errorf("the manager did not come up: %w", err)
	}
	return nil
}

// createElevations creates n elevations of the bench server with open requests; mutate may set
// an expiry. It returns their names and request ids.
func (b *bench) createElevations(ctx context.Context, n int, mutate func(i int, el *pamv1.PamElevation)) ([]string, []string, error) {
	names, ids := make([]string, n), make([]string, n)
	for i := range n {
		b.seq++
		names[i] = fmt.Sprintf("el-%06d", b.seq)
		ids[i] = b.h.pam.AddRequest(emulator.Request{Owner: pamUser, RoleID: "2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d", RequestedTTL: 8 * time.Hour}).ID
	}
	err := parallel(ctx, n, 16, func(i int) error {
		el := &pamv1.PamElevation{ObjectMeta: metav1.ObjectMeta{Namespace: b.ns, Name: names[i]},
			Spec: pamv1.PamElevationSpec{RequestID: ids[i], ServerRef: pamv1.ServerReference{Name: "pam"}}}
		if mutate != nil {
			mutate(i, el)
		}
		return b.h.client.Create(ctx, el)
	})
	return names, ids, err
}

// waitSynced waits until n elevations of the namespace have been read from PAM once.
func (b *bench) waitSynced(ctx context.Context, n int) error {
	return poll(ctx, 10*time.Minute, 200*time.Millisecond, func() (bool, error) {
		_, synced, err := b.baseline.count(ctx, b.ns)
		return synced == n, err
	})
}

// deleteAll deletes the namespace's elevations and waits until they are gone.
func (b *bench) deleteAll(ctx context.Context) error {
	if err := b.deleteCollection(ctx, &pamv1.PamElevation{}, b.ns); err != nil {
		return err
	}
	return poll(ctx, 10*time.Minute, 100*time.Millisecond, func() (bool, error) {
		total, _, err := b.baseline.count(ctx, b.ns)
		return total == 0, err
	})
}

// memory measures the manager's RSS and heap with 0 and more elevations, and the PAM calls a
// sync interval costs at the first size.
func (b *bench) memory(ctx context.Context) error {
	// A manager started afresh: the empty baseline holds nothing the benchmarks before left.
	b.manager.stop()
	if err := b.startManager(ctx); err != nil {
		return err
	}
	if err := b.settle(ctx); err != nil {
		return err
	}
	rss0, peak0, err := b.restingRSS(ctx, benchSyncInterval)
	if err != nil {
		return err
	}
	_, heap0, err := b.manager.memoryUse()
	if err != nil {
		return err
	}
	if gogc, ok := b.manager.sample("go_gc_gogc_percent"); ok {
		b.report.add("memory: the manager's GC target (GOGC)", gogc, "%", "")
	}
	b.report.add("memory: RSS at rest (median of samples over a sync interval), 0 elevations", mib(rss0), "MiB", fmt.Sprintf("highest %.2f", mib(peak0)))
	if err := b.reportMemoryMap(0); err != nil {
		return err
	}
	b.report.add("memory: Go heap in use, 0 elevations", mib(heap0), "MiB", "")
	live0, err := b.liveHeap(ctx, 0)
	if err != nil {
		return err
	}
	total := 0
	var rss, peak, prevRSS int64
	prevSize := 0
	for i, size := range b.cfg.memorySizes {
		created := time.Now()
		if _, _, err := b.createElevations(ctx, size-total, nil); err != nil {
			return err
		}
		if err := b.waitSynced(ctx, size); err != nil {
			return err
		}
		if i == 0 {
			b.perElevationSetup = time.Since(created) / time.Duration(size)
		}
		total = size
		if i == 0 {
			// Idle: every elevation Active, nothing due but the periodic sync.
			b.h.pam.ResetCalls()
			start := time.Now()
			if rss, peak, err = b.restingRSS(ctx, 3*benchSyncInterval); err != nil {
				return err
			}
			lists := 0
			for _, c := range b.h.pam.Calls() {
				if c.Endpoint == emulator.EndpointListRequests {
					lists++
				}
			}
			intervals := time.Since(start).Seconds() / benchSyncInterval.Seconds()
			b.report.add(fmt.Sprintf("economy: PAM calls per sync interval, %d idle elevations, 1 server", total),
				float64(lists)/intervals, "calls", "goal: 1 (the number of servers)")
		} else {
			// Measured at rest, as the first size is after its idle intervals: once the burst of
			// creating them has been worked off and as many periodic syncs have run.
			if err := b.settle(ctx); err != nil {
				return err
			}
			if rss, peak, err = b.restingRSS(ctx, 3*benchSyncInterval); err != nil {
				return err
			}
		}
		_, heap, err := b.manager.memoryUse()
		if err != nil {
			return err
		}
		b.report.add(fmt.Sprintf("memory: RSS at rest (median of samples over 3 sync intervals), %d elevations", total), mib(rss), "MiB", fmt.Sprintf("highest %.2f", mib(peak)))
		if err := b.reportMemoryMap(total); err != nil {
			return err
		}
		b.report.add(fmt.Sprintf("memory: Go heap in use, %d elevations", total), mib(heap), "MiB", "")
		b.report.add(fmt.Sprintf("memory: RSS per elevation above empty, at %d", total),
			float64(rss-rss0)/float64(total)/1024, "KiB", "goal: ≤ 2 KiB (medians)")
		b.report.add(fmt.Sprintf("memory: RSS per elevation above empty, highest samples, at %d", total),
			float64(peak-peak0)/float64(total)/1024, "KiB", "")
		if i > 0 {
			// What one more elevation costs, without the fixed cost of having been busy once
			// (code paged in, stacks and buffers grown), which the smaller size carries alone.
			b.report.add(fmt.Sprintf("memory: RSS per elevation from %d to %d", prevSize, total),
				float64(rss-prevRSS)/float64(total-prevSize)/1024, "KiB", "")
		}
		prevSize, prevRSS = total, rss
		if err := b.saveProfile(ctx, fmt.Sprintf("heap-%d.pb.gz", total), "heap?gc=1"); err != nil {
			return err
		}
		live, err := b.liveHeap(ctx, total)
		if err != nil {
			return err
		}
		b.report.add(fmt.Sprintf("memory: live Go heap per elevation above empty, at %d", total),
			float64(live-live0)/float64(total)/1024, "KiB", "after a forced GC: what the elevations hold, without the GC's headroom")
	}
	return b.deleteAll(ctx)
}

// restingRSS samples the manager's RSS every half second for d and returns the median and the
// highest sample. One sample falls anywhere between two collections, and before or after the
// runtime has returned what the last one freed.
func (b *bench) restingRSS(ctx context.Context, d time.Duration) (median, peak int64, err error) {
	var samples []int64
	for end := time.Now().Add(d); time.Now().Before(end); {
		rss, err := b.manager.rss()
		if err != nil {
			return 0, 0, err
		}
		samples = append(samples, rss)
		if !sleepCtx(ctx, 500*time.Millisecond) {
			return 0, 0, ctx.Err()
		}
	}
	slices.Sort(samples)
	return samples[len(samples)/2], samples[len(samples)-1], nil
}

// reportMemoryMap reports how much of the manager's RSS is the binary's own pages, which grow
// as code runs for the first time, not with the elevations held, and keeps the manager's
// smaps_rollup as smaps-<size>.txt.
func (b *bench) reportMemoryMap(size int) error {
	rollup, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", b.manager.cmd.Process.Pid))
	if err != nil {
		return err
	}
	fields := map[string]int64{}
	for line := range strings.Lines(string(rollup)) {
		name, value, ok := strings.Cut(line, ":")
		if kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(value), "kB")), 10, 64); ok && err == nil {
			fields[name] = kb * 1024
		}
	}
	if fields["Rss"] == 0 {
		return fmt.Errorf("smaps_rollup without Rss")
	}
	b.report.add(fmt.Sprintf("memory: of the RSS, the binary's pages (file-backed), %d elevations", size),
		mib(fields["Rss"]-fields["Anonymous"]), "MiB", "")
	if b.profileDir == "" {
		return nil
	}
	return b.writeProfile(fmt.Sprintf("smaps-%d.txt", size), bytes.NewReader(rollup))
}

// liveHeap forces a collection in the manager and returns the heap still allocated after it.
// The runtime's whole account (runtime.MemStats) is kept as heap-<size>.txt: what the RSS holds
// besides the live heap, such as freed memory not yet returned and goroutine stacks.
func (b *bench) liveHeap(ctx context.Context, size int) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.pprofURL+"heap?gc=1&debug=1", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	dump, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("heap dump: HTTP %d: %v", resp.StatusCode, err)
	}
	if b.profileDir != "" {
		if err := b.writeProfile(fmt.Sprintf("heap-%d.txt", size), bytes.NewReader(dump)); err != nil {
			return 0, err
		}
	}
	for line := range strings.Lines(string(dump)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "# HeapAlloc = "); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("heap dump without HeapAlloc")
}

// latency deletes elevations one by one and times the Close reaching the emulator and the
// object going, against a minimal controller that sees the same deletion plus a raw Close.
func (b *bench) latency(ctx context.Context) error {
	n := b.cfg.latencyCount
	names, ids, err := b.createElevations(ctx, n, nil)
	if err != nil {
		return err
	}
	if err := b.waitSynced(ctx, n); err != nil {
		return err
	}
	rawRTT, err := b.rawCloseRoundTrips(ctx, n)
	if err != nil {
		return err
	}
	// Only for this step: in the others it would be one more process decoding every change.
	var external *externalWatcher
	if b.cfg.baselineApart {
		if external, err = b.startExternalWatcher(ctx); err != nil {
			return err
		}
		defer external.stop()
	}
	gcsBefore := b.managerGCs()
	var toClose, toGone, baseline, apart []time.Duration
	deletedAt := make([]time.Time, 0, n)
	for i := range n {
		el := &pamv1.PamElevation{ObjectMeta: metav1.ObjectMeta{Namespace: b.ns, Name: names[i]}}
		if err := b.h.client.Delete(ctx, el); err != nil {
			return err
		}
		deleted := time.Now()
		deletedAt = append(deletedAt, deleted)
		closedAt, err := b.h.closes.wait(ctx, ids[i], time.Minute)
		if err != nil {
			return err
		}
		gone, err := b.baseline.gone.wait(ctx, names[i], time.Minute)
		if err != nil {
			return err
		}
		seen, ok := b.baseline.deleting.get(names[i])
		if !ok {
			return fmt.Errorf("the baseline controller never saw %s deleted", names[i])
		}
		if external != nil {
			seenApart, err := external.deleting.wait(ctx, names[i], time.Minute)
			if err != nil {
				return fmt.Errorf("the baseline controller in its own process: %w", err)
			}
			apart = append(apart, seenApart.Sub(deleted)+rawRTT[i])
		}
		toClose = append(toClose, closedAt.Sub(deleted))
		toGone = append(toGone, gone.Sub(deleted))
		baseline = append(baseline, seen.Sub(deleted)+rawRTT[i])
	}
	// The slowest closes, against when the baseline saw the same deletion: whether the event
	// came late to both or the manager was slow after it.
	slowest := make([]int, n)
	for i := range slowest {
		slowest[i] = i
	}
	slices.SortFunc(slowest, func(i, j int) int { return cmp.Compare(toClose[j], toClose[i]) })
	for _, i := range slowest[:min(5, n)] {
		apartNote := ""
		if external != nil {
			apartNote = fmt.Sprintf(", in its own process %.2f ms", ms(apart[i]-rawRTT[i]))
		}
		fmt.Fprintf(b.progress, "    slow close %s, deleted at %s: %.2f ms; the baseline saw it after %.2f ms%s (raw Close %.2f ms)\n",
			names[i], deletedAt[i].UTC().Format(time.RFC3339Nano), ms(toClose[i]), ms(baseline[i]-rawRTT[i]), apartNote, ms(rawRTT[i]))
	}
	b.report.add("delete → close: the manager's garbage collections during the step", b.managerGCs()-gcsBefore, "GCs", "")
	for _, q := range []float64{0.5, 0.9, 0.99} {
		label := fmt.Sprintf("p%d", int(q*100))
		b.report.add("delete → Close at PAM, "+label, ms(quantile(toClose, q)), "ms", "")
		b.report.add("delete → object gone, "+label, ms(quantile(toGone, q)), "ms", "")
		b.report.add("baseline (event seen + raw Close), "+label, ms(quantile(baseline, q)), "ms", "")
		if external != nil {
			b.report.add("baseline in its own process (event seen + raw Close), "+label, ms(quantile(apart, q)), "ms", "")
		}
	}
	b.report.add("delete → Close p99 / baseline p99", ratio(quantile(toClose, 0.99), quantile(baseline, 0.99)), "×", "goal: ≤ 1.5")
	if external != nil {
		b.report.add("delete → Close p99 / baseline in its own process p99", ratio(quantile(toClose, 0.99), quantile(apart, 0.99)), "×", "")
	}
	return nil
}

// rawCloseRoundTrips closes n requests of their own from a plain client, one at a time.
func (b *bench) rawCloseRoundTrips(ctx context.Context, n int) ([]time.Duration, error) {
	pc, err := pam.NewClient(pam.Config{URL: b.h.pamURL, Auth: auth.Basic(pamUser, pamPassword)})
	if err != nil {
		return nil, err
	}
	out := make([]time.Duration, n)
	for i := range n {
		id := b.h.pam.AddRequest(emulator.Request{Owner: pamUser, RoleID: "2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d", RequestedTTL: time.Hour}).ID
		start := time.Now()
		if err := pc.Close(ctx, id); err != nil {
			return nil, err
		}
		out[i] = time.Since(start)
	}
	return out, nil
}

// expiry creates elevations whose expiresAt is spread over a window and measures how late (or
// early) each Close reached the emulator.
func (b *bench) expiry(ctx context.Context) error {
	n := b.cfg.expiryCount
	rng := rand.New(rand.NewSource(1))
	// The first expiry comes once all of them should be created and synced (at twice the pace
	// measured before, plus 10 s): what is measured is the precision of expiry, not how fast
	// elevations are created. Whether that held is reported.
	setup := b.perElevationSetup
	if setup == 0 {
		setup = 10 * time.Millisecond // the memory benchmark, which measures it, did not run
	}
	lead := 10*time.Second + 2*time.Duration(n)*setup
	start := time.Now().Add(lead)
	expires := make([]time.Time, n)
	for i := range expires {
		// metav1.Time keeps whole seconds.
		expires[i] = start.Add(time.Duration(rng.Int63n(int64(b.cfg.expirySpread)))).Truncate(time.Second)
	}
	_, ids, err := b.createElevations(ctx, n, func(i int, el *pamv1.PamElevation) {
		at := metav1.NewTime(expires[i])
		el.Spec.ExpiresAt = &at
	})
	if err != nil {
		return err
	}
	if err := b.waitSynced(ctx, n); err != nil {
		return err
	}
	if ready := time.Now(); ready.After(start) {
		b.report.add("expiry: created and synced after the first expiresAt by", ms(ready.Sub(start)), "ms", "the lead was too short: the lags include creation")
	}
	var lags []time.Duration
	early := 0
	if err := poll(ctx, b.cfg.expirySpread+5*time.Minute, 250*time.Millisecond, func() (bool, error) {
		return b.h.closes.count(ids) == n, nil
	}); err != nil {
		return err
	}
	for i, id := range ids {
		closedAt, _ := b.h.closes.get(id)
		lag := closedAt.Sub(expires[i])
		if lag < 0 {
			early++
		}
		lags = append(lags, lag)
	}
	b.report.add("expiry → Close at PAM, p50", ms(quantile(lags, 0.5)), "ms", "")
	b.report.add("expiry → Close at PAM, p99", ms(quantile(lags, 0.99)), "ms", "goal: < 100")
	b.report.add("expiry → Close at PAM, max", ms(quantile(lags, 1)), "ms", "")
	b.report.add("closes before expiresAt", float64(early), "closes", "goal: 0")
	return b.deleteAll(ctx)
}

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
	auditBefore, err := b.auditLines()
	if err != nil {
		return err
	}
	etcdBefore, err := b.elevationEtcdTimes(ctx)
	if err != nil {
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
	// A close of a request read open costs the Close and a confirming read: two calls under the limit.
	pamRate := float64(b.cfg.rateLimit) / 2
	b.report.add("ceiling: emulator raw Close throughput (16 plain clients)", emuRate, "closes/s", "")
	b.report.add(fmt.Sprintf("ceiling: API server writes at the manager's QPS %d", b.cfg.kubeAPIQPS), apiRate, "writes/s", "one write per close")
	b.report.add(fmt.Sprintf("ceiling: PAM rateLimit %d calls/s ÷ 2 calls per close", b.cfg.rateLimit), pamRate, "closes/s", "")
	b.report.add(fmt.Sprintf("ceiling: API server deletes %d elevations, released at QPS %d by a client that only removes the finalizer", n, b.cfg.kubeAPIQPS),
		releaseRate, "deletions/s", "the Kubernetes side of a mass revocation alone")
	lowest := min(emuRate, apiRate, pamRate, releaseRate)
	b.report.add("mass revocation / lowest ceiling", rate/lowest, "×", "goal: ≥ 0.9")
	runEtcd := etcdAfter.meansSince(etcdBefore)
	for _, op := range []string{"get", "update"} {
		b.report.add(fmt.Sprintf("mass revocation: API server → etcd, mean %s of an elevation", op),
			runEtcd[op], "ms", fmt.Sprintf("%.2f ms in the ceiling; marking a deletion takes one get and one update", releaseEtcd[op]))
	}
	b.report.add(fmt.Sprintf("limit: API server marks a delete-collection of %d finalized objects, nothing else running", n),
		markRate, "deletions/s", "a deletion cannot be closed before it is marked")
	b.report.add("mass revocation / deletion marking", rate/markRate, "×", "")
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

// deletionMarkCeiling deletes n ConfigMaps that each hold a finalizer in one delete-collection,
// with nothing else running, and returns how many deletions per second the API server marked:
// the pace at which a mass revocation's deletions can reach any controller. ConfigMaps, which the
// manager does not watch, are cheaper for the API server than custom resources, so this is an
// upper bound.
func (b *bench) deletionMarkCeiling(ctx context.Context, n int) (float64, error) {
	const ns, finalizer = "bench-ceiling", "bench.pam.mim.dev/hold"
	if err := b.h.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return 0, err
	}
	if err := parallel(ctx, n, 16, func(i int) error {
		return b.h.client.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns,
			Name: fmt.Sprintf("held-%06d", i), Finalizers: []string{finalizer}}})
	}); err != nil {
		return 0, err
	}
	start := time.Now()
	if err := b.deleteCollection(ctx, &corev1.ConfigMap{}, ns); err != nil {
		return 0, err
	}
	rate := float64(n) / time.Since(start).Seconds()
	// Release them, so nothing is left holding the API server.
	err := parallel(ctx, n, 16, func(i int) error {
		patch := client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"finalizers":null}}`))
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("held-%06d", i)}}
		return client.IgnoreNotFound(b.h.client.Patch(ctx, cm, patch))
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

// settle waits until the manager has nothing queued and has stopped writing Events for what a
// previous benchmark did (ten thousand closes leave Events to send for a while), so that a
// measurement is not paying for the one before it.
func (b *bench) settle(ctx context.Context) error {
	var lastPosts float64
	quietSince := time.Now()
	return poll(ctx, 10*time.Minute, 250*time.Millisecond, func() (bool, error) {
		var depth, posts float64
		for name, v := range b.manager.samples() {
			switch {
			case strings.HasPrefix(name, "workqueue_depth{") && strings.Contains(name, `name="pamelevation`):
				depth += v // the elevations' queue and the releases
			case strings.HasPrefix(name, "rest_client_requests_total{") && strings.Contains(name, `method="POST"`):
				posts += v // the manager's only creates are Events (and an escrow Secret, once)
			}
		}
		if depth > 0 || posts != lastPosts {
			lastPosts, quietSince = posts, time.Now()
		}
		return time.Since(quietSince) >= 2*time.Second, nil
	})
}

// managerGCs returns how many garbage collections the manager has run.
func (b *bench) managerGCs() float64 {
	gcs, _ := b.manager.sample("go_gc_duration_seconds_count")
	return gcs
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

// saveProfile fetches one of the manager's Go profiles into the profile directory, for
// `go tool pprof`.
func (b *bench) saveProfile(ctx context.Context, file, query string) error {
	if b.profileDir == "" {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.pprofURL+query, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile %s: HTTP %d", query, resp.StatusCode)
	}
	return b.writeProfile(file, resp.Body)
}

// saveAPIServerProfile writes a CPU profile of kube-apiserver over the next d: where the API
// server's time goes while the manager works.
func (b *bench) saveAPIServerProfile(ctx context.Context, file string, d time.Duration) error {
	if b.profileDir == "" {
		return nil
	}
	req, err := b.apiServerGet("/debug/pprof/profile")
	if err != nil {
		return err
	}
	body, err := req.Param("seconds", strconv.Itoa(int(d.Seconds()))).Timeout(d + time.Minute).DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("kube-apiserver profile: %w", err)
	}
	return b.writeProfile(file, bytes.NewReader(body))
}

// apiServerGet is a GET of one of kube-apiserver's own paths (metrics, profiles), as the
// administrator.
func (b *bench) apiServerGet(path string) (*rest.Request, error) {
	cs, err := kubernetes.NewForConfig(b.h.env.Config)
	if err != nil {
		return nil, err
	}
	return cs.CoreV1().RESTClient().Get().AbsPath(path), nil
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

func (b *bench) writeProfile(file string, profile io.Reader) error {
	if err := os.MkdirAll(b.profileDir, 0o755); err != nil {
		return err
	}
	out, err := os.Create(filepath.Join(b.profileDir, file))
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, profile); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// rawCloseThroughput closes n requests from workers plain clients and returns closes per second.
func (b *bench) rawCloseThroughput(ctx context.Context, n, workers int) (float64, error) {
	pc, err := pam.NewClient(pam.Config{URL: b.h.pamURL, Auth: auth.Basic(pamUser, pamPassword)})
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

// deletionWatcher is the latency baseline: the least a controller-runtime controller can do,
// note when it sees an elevation's deletion. It also notes when each elevation is gone, and its
// cache lets the benchmarks count elevations without listing them from the API server.
type deletionWatcher struct {
	cache    client.Reader
	deleting *timeLog
	gone     *timeLog
}

// report, unless nil, is told of each pass: the elevation's name, and when it saw the elevation
// deleted, or the zero time.
func startDeletionWatcher(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme, report func(name string, deletionSeen time.Time)) (*deletionWatcher, error) {
	w := &deletionWatcher{deleting: newTimeLog(), gone: newTimeLog()}
	if report == nil {
		report = func(string, time.Time) {}
	}
	seen := func(name string, at time.Time) {
		w.deleting.record(name, at)
		report(name, at)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0"})
	if err != nil {
		return nil, err
	}
	w.cache = mgr.GetCache()
	err = ctrl.NewControllerManagedBy(mgr).Named("baseline").For(&pamv1.PamElevation{}).
		Complete(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			el := &pamv1.PamElevation{}
			if err := w.cache.Get(ctx, req.NamespacedName, el); err != nil {
				if apierrors.IsNotFound(err) {
					// Its pass may come only after the object is gone: it sees the deletion then.
					now := time.Now()
					seen(req.Name, now)
					w.gone.record(req.Name, now)
				}
				return reconcile.Result{}, client.IgnoreNotFound(err)
			}
			if !el.DeletionTimestamp.IsZero() {
				seen(req.Name, time.Now())
			} else {
				report(req.Name, time.Time{})
			}
			return reconcile.Result{}, nil
		}))
	if err != nil {
		return nil, err
	}
	go func() { _ = mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		return nil, fmt.Errorf("the baseline controller's cache did not sync")
	}
	return w, nil
}

// count returns how many elevations the namespace holds and how many of them were read from
// PAM, from the watcher's cache.
func (w *deletionWatcher) count(ctx context.Context, namespace string) (total, synced int, err error) {
	var list pamv1.PamElevationList
	if err := w.cache.List(ctx, &list, client.InNamespace(namespace), client.UnsafeDisableDeepCopy); err != nil {
		return 0, 0, err
	}
	for i := range list.Items {
		if list.Items[i].Status.LastSyncTime != nil {
			synced++
		}
	}
	return len(list.Items), synced, nil
}

// rss returns the manager's resident set, in bytes, read from /proc alone.
func (m *managerProc) rss() (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", m.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", m.cmd.Process.Pid)
}

// memoryUse returns the manager's resident set and the Go heap in use, in bytes.
func (m *managerProc) memoryUse() (rss, heap int64, err error) {
	if rss, err = m.rss(); err != nil {
		return 0, 0, err
	}
	inUse, _ := m.sample("go_memstats_heap_inuse_bytes")
	heap = int64(inUse)
	if rss == 0 || heap == 0 {
		return rss, heap, fmt.Errorf("could not read the manager's memory (rss %d, heap %d)", rss, heap)
	}
	return rss, heap, nil
}

func printBench(w io.Writer, r *benchReport) {
	fmt.Fprintf(w, "\n%s — %s\n", r.Started.Format(time.RFC3339), r.Machine)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "measure\tvalue\tunit\tnote")
	for _, row := range r.Rows {
		fmt.Fprintf(tw, "%s\t%.2f\t%s\t%s\n", row.Measure, row.Value, row.Unit, row.Note)
	}
	_ = tw.Flush()
}

func writeBenchJSON(root string, r *benchReport) (string, error) {
	dir := filepath.Join(root, "bin", "bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, r.Started.Format("20060102T150405Z")+".json")
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(path, data, 0o644)
}

func machineSummary() string {
	cpus := 0
	model := ""
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "processor") {
				cpus++
			}
			if v, ok := strings.CutPrefix(line, "model name\t: "); ok && model == "" {
				model = v
			}
		}
	}
	mem := ""
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		if line, _, ok := strings.Cut(string(data), "\n"); ok {
			fields := strings.Fields(line)
			if len(fields) >= 2 {
				kb, _ := strconv.ParseFloat(fields[1], 64)
				mem = fmt.Sprintf("%.0f GiB", kb/1024/1024)
			}
		}
	}
	return fmt.Sprintf("%d CPUs (%s), %s RAM", cpus, model, mem)
}

// parallel runs fn for 0..n-1 on workers goroutines and returns the first error.
func parallel(ctx context.Context, n, workers int, fn func(i int) error) error {
	next := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var err error
feed:
	for i := range n {
		select {
		case next <- i:
		case err = <-errs:
			break feed
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}

// poll checks cond until it holds or timeout passes. Benchmarks poll: the quantity measured is
// when something happened, read from timestamps, not when the poll noticed.
func poll(ctx context.Context, timeout, every time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not done within %s", timeout)
		}
		if !sleepCtx(ctx, every) {
			return ctx.Err()
		}
	}
}

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
