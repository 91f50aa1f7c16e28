// Command reliability runs the fault, outage, crash and failover scenarios against the real
// manager binary, a local control plane and the PAM emulator, and prints a table of what held:
// lost closes, duplicate successful closes, extra close calls and recovery times. `make
// reliability` runs the long versions; `make test` runs small ones with the same invariants.
// With --bench (`make bench`) it measures performance in the same lab instead: latency, expiry
// precision, mass revocation, memory and economy, each against a baseline of the same run.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/hack/lab"
)

func main() {
	elevations := flag.Int("elevations", 200, "Elevations per scenario (half deleted, half expiring, during the faults).")
	window := flag.Duration("fault-window", 20*time.Second, "How long faults last in each scenario.")
	kills := flag.Int("kills", 8, "Manager SIGKILLs in the crash scenarios.")
	outage := flag.Duration("outage", 30*time.Second, "Length of the short full outage scenario.")
	longOutage := flag.Duration("long-outage", 5*time.Minute, "Length of the long full outage scenario; 0 skips it.")
	seed := flag.Int64("seed", 1, "Seed for the random timings.")
	only := flag.String("scenarios", "", "Comma-separated scenario names to run; empty runs all.")
	benchMode := flag.Bool("bench", false, "Run the performance benchmarks instead of the scenarios (make bench).")
	var bc benchConfig
	flag.IntVar(&bc.latencyCount, "bench-latency", 500, "Elevations deleted one by one for the delete → close latency.")
	flag.IntVar(&bc.expiryCount, "bench-expiry", 1000, "Elevations for the expiry precision.")
	flag.DurationVar(&bc.expirySpread, "bench-expiry-spread", 30*time.Second, "Window their expiresAt is spread over.")
	flag.IntVar(&bc.massCount, "bench-mass", 5000, "Elevations deleted in one call for the mass revocation.")
	memorySizes := flag.String("bench-memory", "1000,10000", "Elevation counts at which memory is measured (and idle sync at the first).")
	flag.IntVar(&bc.kubeAPIQPS, "bench-kube-api-qps", 100, "The manager's --kube-api-qps.")
	flag.IntVar(&bc.rateLimit, "bench-rate-limit", 300, "The PamServer's rateLimit.qps.")
	flag.IntVar(&bc.workers, "bench-workers", 64, "The manager's --max-concurrent-reconciles (its default is 64).")
	flag.BoolVar(&bc.controlPlaneFirst, "bench-control-plane-first", false, "Give kube-apiserver and etcd the CPU before the manager and the emulator, as on machines of their own (needs the right to raise priorities).")
	flag.IntVar(&bc.managerGOGC, "bench-manager-gogc", 0, "GOGC of the manager alone; 0 leaves the manager's own default (25).")
	flag.BoolVar(&bc.baselineApart, "bench-baseline-apart", false, "Also time the latency baseline in a process of its own, as the manager is (one more process on the cores).")
	steps := flag.String("bench-steps", "", "Comma-separated benchmarks to run (latency, expiry, economy, memory, isolation, mass); empty runs all.")
	baselineKubeconfig := flag.String("baseline-watcher-kubeconfig", "", "Used by --bench itself: run as the latency baseline's controller, in a process of its own, with this kubeconfig.")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *baselineKubeconfig != "" {
		ctrl.SetLogger(logr.Discard())
		if err := runExternalWatcher(ctx, *baselineKubeconfig, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(1)
		}
		return
	}
	workDir, err := os.MkdirTemp("", "pam-reliability-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	// os.Exit runs no deferred calls: every exit from here on goes through exit, which removes
	// the work directory (the control plane's data) first.
	exit := func(code int) {
		_ = os.RemoveAll(workDir)
		os.Exit(code)
	}
	defer os.RemoveAll(workDir)

	if *benchMode {
		ctrl.SetLogger(logr.Discard()) // the baseline controller's logs are not the measurement
		for _, f := range strings.Split(*memorySizes, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 || (len(bc.memorySizes) > 0 && n <= bc.memorySizes[len(bc.memorySizes)-1]) {
				fmt.Fprintln(os.Stderr, "error: --bench-memory wants increasing positive counts")
				exit(2)
			}
			bc.memorySizes = append(bc.memorySizes, n)
		}
		if *steps != "" {
			bc.steps = map[string]bool{}
			for _, name := range strings.Split(*steps, ",") {
				bc.steps[strings.TrimSpace(name)] = true
			}
		}
		exit(benchMain(ctx, workDir, bc))
	}

	scs := scenarios(*elevations, *window, *kills, *outage, *longOutage)
	if *only != "" {
		wanted := map[string]bool{}
		for _, name := range strings.Split(*only, ",") {
			wanted[strings.TrimSpace(name)] = true
		}
		var picked []scenario
		for _, sc := range scs {
			if wanted[sc.name] {
				picked = append(picked, sc)
			}
		}
		if len(picked) != len(wanted) {
			fmt.Fprintln(os.Stderr, "error: unknown scenario in --scenarios")
			exit(2)
		}
		scs = picked
	}
	results, err := runAll(ctx, workDir, scs, *seed, os.Stdout)
	printTable(os.Stdout, results)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		exit(1)
	}
	for _, r := range results {
		if v := r.violations(); len(v) > 0 {
			fmt.Fprintf(os.Stderr, "scenario %s broke an invariant: %s\n", r.name, strings.Join(v, ", "))
			exit(1)
		}
	}
}

// benchMain runs the benchmarks, prints the table and writes it as JSON under bin/bench/.
func benchMain(ctx context.Context, workDir string, bc benchConfig) int {
	// The benchmark's own process (emulator, baseline controller, load) shares the 2 cores with
	// what it measures: its profiles show what it costs.
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		fmt.Printf("benchmark profiles: http://%s/debug/pprof/\n", ln.Addr())
		go func() { _ = http.Serve(ln, mux) }()
	}
	report, err := runBench(ctx, workDir, bc, os.Stdout)
	if report != nil {
		printBench(os.Stdout, report)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 1
	}
	root, err := lab.RepoRoot()
	if err == nil {
		var path string
		if path, err = writeBenchJSON(root, report); err == nil {
			fmt.Println("wrote", path)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 1
	}
	return 0
}

// scenarios are the runs, sized by the flags.
func scenarios(elevations int, window time.Duration, kills int, outage, longOutage time.Duration) []scenario {
	mixed := func(fraction float64) []emulator.Fault {
		return []emulator.Fault{
			{Status: 503, RetryAfter: "1", Fraction: fraction / 6},
			{Status: 500, Fraction: fraction / 5},
			{Status: 408, Fraction: fraction / 4},
			{Status: 429, Fraction: fraction / 3},
			{Endpoint: emulator.EndpointCloseRequest, LoseResponse: true, Fraction: fraction / 2},
			{Drop: true, Fraction: fraction},
		}
	}
	scs := []scenario{
		{name: "faults-10pct", elevations: elevations, faults: mixed(0.1), faultWindow: window},
		{name: "faults-50pct", elevations: elevations, faults: mixed(0.5), faultWindow: window},
		{name: "slow-pam", elevations: elevations, faultWindow: window,
			faults: []emulator.Fault{{Delay: 1500 * time.Millisecond, Fraction: 0.3}}},
		{name: "outage", elevations: elevations, faultWindow: outage, faults: []emulator.Fault{{Status: 503}}},
		// MIM's close workflow failing while the rest of the API answers: the same close is
		// retried and refused again and again, so its Warning events become a series (a patch).
		{name: "close-refused", elevations: elevations, faultWindow: 2 * window,
			faults: []emulator.Fault{{Endpoint: emulator.EndpointCloseRequest, Status: 500}}},
		{name: "crash", elevations: elevations, faultWindow: window, kills: kills, faults: mixed(0.2), clusterServer: true},
		{name: "failover", elevations: elevations, faultWindow: window, kills: max(kills/4, 1), failover: true},
		{name: "apiserver-unreachable", elevations: elevations, faultWindow: window, apiServerDown: window / 4, faults: mixed(0.1)},
		{name: "user-edits", elevations: elevations, faultWindow: window, conflicts: true, faults: mixed(0.2)},
		{name: "same-instant-expiry", elevations: 5 * elevations, faultWindow: window, sameInstant: true},
	}
	if longOutage > 0 {
		scs = append(scs, scenario{name: "outage-long", elevations: elevations, faultWindow: longOutage, faults: []emulator.Fault{{Status: 503}}})
	}
	return scs
}

func runAll(ctx context.Context, workDir string, scs []scenario, seed int64, progress io.Writer) ([]result, error) {
	h, err := startHarness(workDir, true)
	if err != nil {
		return nil, err
	}
	defer h.stop()
	rng := rand.New(rand.NewSource(seed))
	var results []result
	for _, sc := range scs {
		fmt.Fprintf(progress, "==> %s: %d elevations, faults for %s\n", sc.name, sc.elevations, sc.faultWindow)
		r, err := h.run(ctx, sc, rng)
		if err != nil {
			return results, fmt.Errorf("scenario %s: %w", sc.name, err)
		}
		results = append(results, r)
	}
	return results, nil
}

func printTable(w io.Writer, results []result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\televations\tfaults injected\tmanager kills\tlost closes\tduplicate closes\textra close calls\tstuck\tfault end → last finalizer\tfailover")
	for _, r := range results {
		failover := "-"
		if r.failover {
			failover = r.failoverTime.Round(10 * time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", r.name, r.elevations, r.faultsInjected, r.managerKills,
			r.lost, r.duplicates, r.extraCloses, r.stuck, r.recovery.Round(10*time.Millisecond), failover)
	}
	_ = tw.Flush()
}
