package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/hack/lab"
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
	// controlPlaneFirst gives the control plane the CPU before everything else.
	controlPlaneFirst bool
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
	if cfg.controlPlaneFirst {
		if err := prioritiseControlPlane(); err != nil {
			return report, fmt.Errorf("giving the control plane the CPU first: %w", err)
		}
		report.Machine += fmt.Sprintf("; the control plane at nice %d", controlPlaneNice)
	}
	if cfg.managerGOGC > 0 {
		h.managerEnv = append(h.managerEnv, fmt.Sprintf("GOGC=%d", cfg.managerGOGC))
	}
	b := &bench{h: h, cfg: cfg, report: report, progress: progress}
	if root, err := lab.RepoRoot(); err == nil {
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
		{"isolation", "isolation from a hung server", b.isolation},
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
	if err := b.createServer(ctx, b.ns, pamUser); err != nil {
		return err
	}
	if err := b.startManager(ctx); err != nil {
		return err
	}
	baseline, err := startDeletionWatcher(ctx, h.env.Config, h.client.Scheme(), nil)
	b.baseline = baseline
	return err
}

// createServer creates namespace ns with the bench's PamServer "pam", which logs in to the
// emulator as user.
func (b *bench) createServer(ctx context.Context, ns, user string) error {
	objects := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"},
			StringData: map[string]string{"username": user, "password": pamPassword}},
		&pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"}, Spec: pamv1.PamServerSpec{
			URL: b.h.pamURL, CABundle: b.h.pam.CABundle, Timeout: &metav1.Duration{Duration: 5 * time.Second},
			Auth:      &pamv1.PamServerAuth{Basic: &pamv1.BasicAuth{SecretRef: pamv1.SecretReference{Name: "pam"}}},
			RateLimit: &pamv1.RateLimit{QPS: int32(b.cfg.rateLimit), Burst: int32(b.cfg.rateLimit), MaxConcurrentCalls: 16},
		}},
	}
	for _, obj := range objects {
		if err := b.h.client.Create(ctx, obj); err != nil {
			return err
		}
	}
	return nil
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
	return b.createElevationsIn(ctx, b.ns, pamUser, n, mutate)
}

// createElevationsIn creates n elevations in namespace ns (made by createServer for user), with
// open requests of user.
func (b *bench) createElevationsIn(ctx context.Context, ns, user string, n int, mutate func(i int, el *pamv1.PamElevation)) ([]string, []string, error) {
	names, ids := make([]string, n), make([]string, n)
	for i := range n {
		b.seq++
		names[i] = fmt.Sprintf("el-%06d", b.seq)
		ids[i] = b.h.pam.AddRequest(emulator.Request{Owner: user, RoleID: "2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d", RequestedTTL: 8 * time.Hour}).ID
	}
	err := parallel(ctx, n, 16, func(i int) error {
		el := &pamv1.PamElevation{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: names[i]},
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
	return b.waitSyncedIn(ctx, b.ns, n)
}

// waitSyncedIn waits until n elevations of namespace ns have been read from PAM once.
func (b *bench) waitSyncedIn(ctx context.Context, ns string, n int) error {
	return poll(ctx, 10*time.Minute, 200*time.Millisecond, func() (bool, error) {
		_, synced, err := b.baseline.count(ctx, ns)
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
