// Command manager runs pam-operator: it closes MIM PAM requests when their PamElevation objects
// are deleted or expire.
package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/controllers"
	"github.com/pam-operator/pam-operator/internal/credentials"
	"github.com/pam-operator/pam-operator/internal/dialpolicy"
)

// version is the release this binary was built from, stamped by `make release` and the image
// build (-ldflags "-X main.version=v0.2.0"); "dev" for any other build.
var version = "dev"

// serviceAccountNamespaceFile holds the namespace of the pod the operator runs in.
const serviceAccountNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// watchListEnv is client-go's switch for streaming the initial list of an informer over a watch
// (WatchListClient, on by default since 1.35).
const watchListEnv = "KUBE_FEATURE_WatchListClient"

// defaultGCPercent is the garbage collector's target (GOGC) unless the environment sets one. Most
// of the heap is the cache, which lives as long as the process, and little is allocated between
// syncs: at Go's default of 100 the heap may grow to twice the cache before it is collected, and
// the runtime keeps what the heap grew to. At 25 it grows by a quarter, for more collections
// while the manager is busy (see docs/performance.md).
const defaultGCPercent = 25

func run() error {
	// Informers list and then watch, unless told otherwise. Under API server throttling (429 on
	// the first watch) the streaming list was seen to lose elevations created during startup in
	// the benchmarks: never reconciled, they would get no finalizer and could be deleted without
	// a close. A plain list is the long-proven path. It must be set before client-go reads it.
	if _, set := os.LookupEnv(watchListEnv); !set {
		_ = os.Setenv(watchListEnv, "false")
	}
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}

	var (
		metricsAddr              string
		metricsSecure            bool
		metricsCertDir           string
		enableHTTP2              bool
		kubeAPIQPS               float64
		kubeAPIBurst             int
		probeAddr                string
		pprofAddr                string
		leaderElect              bool
		clusterResourceNamespace string
		allowedPAMHosts          string
		leaseDuration            time.Duration
		renewDeadline            time.Duration
		retryPeriod              time.Duration
		opts                     controllers.Options
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8443", "Address the metrics endpoint binds to; 0 disables it.")
	flag.BoolVar(&metricsSecure, "metrics-secure", true,
		"Serve metrics over HTTPS, to callers the API server authenticates and authorizes for GET /metrics; false serves plain HTTP to anyone.")
	flag.StringVar(&metricsCertDir, "metrics-cert-path", "",
		"Directory holding tls.crt and tls.key for the metrics endpoint, reloaded when they change; empty uses a self-signed certificate generated in memory.")
	flag.BoolVar(&enableHTTP2, "enable-http2", false,
		"Offer HTTP/2 on the metrics endpoint. Off by default because of the HTTP/2 Stream Cancellation and Rapid Reset CVEs.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address the health and readiness probes bind to.")
	flag.StringVar(&pprofAddr, "pprof-bind-address", "0",
		"Address Go's pprof profiles are served on, without authentication (keep it on loopback); 0 disables them.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader, so that only one replica calls PAM at a time.")
	flag.DurationVar(&leaseDuration, "leader-election-lease-duration", 15*time.Second,
		"How long a lost leader's lease blocks the others: the longest failover after a crash.")
	flag.DurationVar(&renewDeadline, "leader-election-renew-deadline", 10*time.Second, "How long the leader keeps trying to renew before it steps down.")
	flag.DurationVar(&retryPeriod, "leader-election-retry-period", 2*time.Second, "How often candidates try to acquire or renew the lease.")
	flag.StringVar(&clusterResourceNamespace, "cluster-resource-namespace", "",
		"Namespace from which ClusterPamServer Secrets are read (default: the namespace the operator runs in).")
	namespacedServers := flag.Bool("namespaced-servers", true,
		"Use PamServers, which any tenant allowed to create them can point anywhere; false uses ClusterPamServers only, and elevations naming a PamServer stall with ServerNotAllowed.")
	flag.StringVar(&allowedPAMHosts, "allowed-pam-hosts", "",
		"Comma-separated host names, *.domain globs, IP addresses and CIDRs where PAM hosts and KDCs may be: a host passes when its name matches or the address dialled is in a CIDR. Empty allows any host. Link-local and cloud metadata addresses are never dialled, whatever this says.")
	flag.DurationVar(&opts.AuthFailureBackoff, "auth-failure-backoff", credentials.DefaultAuthFailureBackoff,
		"How long an account whose login PAM or the KDC refused is left alone before one more try with the same credentials (a change of the Secret's data tries at once): each refused logon counts towards the account's lockout in Active Directory.")
	flag.DurationVar(&opts.SyncInterval, "pam-sync-interval", controllers.DefaultSyncInterval, "How often each open request is read from PAM.")
	flag.DurationVar(&opts.MaxRetryDelay, "max-retry-delay", controllers.DefaultMaxRetryDelay,
		"Cap of the exponential backoff between retries of failed PAM calls; the operator heals within this long of PAM coming back.")
	flag.DurationVar(&opts.ClockSkewMargin, "clock-skew-margin", controllers.DefaultClockSkewMargin,
		"How far past the ExpirationTime PAM reported a request counts as ended by MIM, so its deletion completes even while PAM is unreachable.")
	// Passes mostly wait on the API server and PAM, and each server's rateLimit bounds what PAM
	// sees: workers are cheap, and elevations expiring in the same second must not queue.
	flag.IntVar(&opts.MaxConcurrentReconciles, "max-concurrent-reconciles", 64, "How many PamElevations are reconciled in parallel.")
	flag.Float64Var(&kubeAPIQPS, "kube-api-qps", 50,
		"Sustained requests per second to the Kubernetes API server: a mass revocation costs one write per elevation.")
	flag.IntVar(&kubeAPIBurst, "kube-api-burst", 100, "Burst of requests to the Kubernetes API server above --kube-api-qps.")
	showVersion := flag.Bool("version", false, "Print the version and exit.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	if *showVersion {
		fmt.Println("pam-operator", version)
		return nil
	}
	opts.RefuseNamespacedServers = !*namespacedServers

	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")

	if opts.SyncInterval <= 0 || opts.MaxRetryDelay <= 0 || opts.MaxConcurrentReconciles <= 0 || opts.ClockSkewMargin <= 0 || opts.AuthFailureBackoff <= 0 {
		return errors.New("--pam-sync-interval, --max-retry-delay, --clock-skew-margin, --auth-failure-backoff and --max-concurrent-reconciles must be positive")
	}
	policy, err := dialpolicy.Parse(allowedPAMHosts)
	if err != nil {
		return fmt.Errorf("--allowed-pam-hosts: %w", err)
	}
	opts.DialPolicy = policy
	if clusterResourceNamespace == "" {
		clusterResourceNamespace = podNamespace()
	}
	opts.ClusterResourceNamespace = clusterResourceNamespace
	opts.OperatorNamespace = podNamespace()
	// The pod name in the User-Agent tells replicas apart in IIS logs.
	opts.UserAgent = "pam-operator"
	if pod := os.Getenv("POD_NAME"); pod != "" {
		opts.UserAgent += " (pod " + pod + ")"
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(pamv1.AddToScheme(scheme))

	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = float32(kubeAPIQPS), kubeAPIBurst
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsOptions(metricsAddr, metricsSecure, metricsCertDir, enableHTTP2),
		Cache:                         controllers.CacheOptions(),
		HealthProbeBindAddress:        probeAddr,
		PprofBindAddress:              pprofAddr,
		LeaderElection:                leaderElect,
		LeaderElectionID:              "pam-operator.pam.mim.dev",
		LeaderElectionNamespace:       podNamespace(),
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &leaseDuration,
		RenewDeadline:                 &renewDeadline,
		RetryPeriod:                   &retryPeriod,
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}

	ctx := ctrl.SetupSignalHandler()
	if err := controllers.Setup(ctx, mgr, opts); err != nil {
		return fmt.Errorf("setting up controllers: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}

	log.Info("Starting manager", "version", version, "clusterResourceNamespace", clusterResourceNamespace,
		"pamSyncInterval", opts.SyncInterval.String(), "maxRetryDelay", opts.MaxRetryDelay.String(),
		"leaderElect", leaderElect, "allowedPAMHosts", policy.String(), "startedAt", time.Now().UTC().Format(time.RFC3339))
	return mgr.Start(ctx)
}

// podNamespace is the namespace the operator runs in, "pam-system" outside a cluster.
func podNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	if data, err := os.ReadFile(serviceAccountNamespaceFile); err == nil {
		if ns := strings.TrimSpace(string(data)); ns != "" {
			return ns
		}
	}
	return "pam-system"
}

// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// metricsOptions serves metrics as current kubebuilder projects do: over TLS, to callers whose
// bearer token the API server accepts (TokenReview) and who may GET /metrics
// (SubjectAccessReview), over HTTP/1.1 unless HTTP/2 is asked for.
func metricsOptions(addr string, secure bool, certDir string, enableHTTP2 bool) metricsserver.Options {
	opts := metricsserver.Options{BindAddress: addr, SecureServing: secure}
	if !secure {
		return opts
	}
	opts.FilterProvider = filters.WithAuthenticationAndAuthorization
	opts.CertDir = certDir
	if !enableHTTP2 {
		opts.TLSOpts = append(opts.TLSOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	return opts
}
