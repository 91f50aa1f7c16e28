package controllers_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/controllers"
	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/internal/dialpolicy"
)

const (
	// clusterResourceNamespace is where the manager under test reads ClusterPamServer Secrets.
	clusterResourceNamespace = "pam-system"
	// syncInterval is short so that tests see PAM-side changes quickly.
	syncInterval = time.Second
	// maxRetryDelay is the backoff cap under test.
	maxRetryDelay = 2 * time.Second
	// authFailureBackoff is the manager's --auth-failure-backoff: how long a refused account is
	// left alone before one more try.
	authFailureBackoff = 4 * time.Second
	// clockSkewMargin is how far past PAM's ExpirationTime a deletion may complete unconfirmed.
	clockSkewMargin = time.Second
	// allowedPAMHosts is the manager's --allowed-pam-hosts: the loopback address the suite's
	// servers listen on. 127.0.0.2 is loopback too, yet outside it, for refused dials.
	allowedPAMHosts = "127.0.0.1,::1"

	pamUser     = "jen"
	pamPassword = "jen-password-canary-7f3a"
	otherUser   = "bob"
	otherPass   = "bob-password-canary-91c2"
)

var (
	// kubeconfigPath lets tests run the real kubectl against the control plane.
	kubeconfigPath string
	// k8sClient talks to the API server directly, and can watch.
	k8sClient client.WithWatch
	// managerClient is the manager's own client: reads from its cache, writes to the API server.
	managerClient client.Client
	// managerCache is the manager's cache.
	managerCache cache.Cache
	pamServer    *emulator.Server
	pamURL       string
	// pamCABundle is the certificate the emulator at pamURL serves.
	pamCABundle string
	managerLog  = &syncBuffer{}
)

// TestMain starts the real kube-apiserver and etcd (built into ./bin from pinned modules, see
// the Makefile), the PAM emulator over real HTTP, and one manager running every controller.
func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	ctrl.SetLogger(zap.New(zap.WriteTo(managerLog), zap.UseDevMode(true)))
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: run the tests with 'make test', which builds the control plane into ./bin")
		return 1
	}

	testEnv := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := testEnv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		return 1
	}
	defer func() { _ = testEnv.Stop() }()

	admin, err := testEnv.AddUser(envtest.User{Name: "test-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "admin user:", err)
		return 1
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubeconfig:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "pam-controllers-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	kubeconfigPath = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(pamv1.AddToScheme(scheme))
	if k8sClient, err = client.NewWithWatch(cfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		return 1
	}

	pamServer = emulator.New(emulator.Options{Users: map[string]string{pamUser: pamPassword, otherUser: otherPass}})
	httpServer := httptest.NewTLSServer(pamServer)
	defer httpServer.Close()
	pamURL, pamCABundle = httpServer.URL, certificatePEM(httpServer)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: clusterResourceNamespace}}); err != nil {
		fmt.Fprintln(os.Stderr, "namespace:", err)
		return 1
	}

	// What a crashed operator left behind is there before the manager starts, as in a restart.
	if err := leaveEscrowOfACrash(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "escrow of a crash:", err)
		return 1
	}

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		Cache:                  controllers.CacheOptions(),
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		return 1
	}
	dialPolicy, err := dialpolicy.Parse(allowedPAMHosts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial policy:", err)
		return 1
	}
	if err := controllers.Setup(ctx, mgr, controllers.Options{
		ClusterResourceNamespace: clusterResourceNamespace,
		SyncInterval:             syncInterval,
		MaxRetryDelay:            maxRetryDelay,
		MaxConcurrentReconciles:  4,
		ClockSkewMargin:          clockSkewMargin,
		DialPolicy:               dialPolicy,
		AuthFailureBackoff:       authFailureBackoff,
	}); err != nil {
		fmt.Fprintln(os.Stderr, "setup:", err)
		return 1
	}
	managerClient = mgr.GetClient()
	managerCache = mgr.GetCache()
	mgrDone := make(chan error, 1)
	go func() { mgrDone <- mgr.Start(ctx) }()

	code := m.Run()
	cancel()
	if err := <-mgrDone; err != nil {
		fmt.Fprintln(os.Stderr, "manager stopped with:", err)
		code = 1
	}
	if code != 0 && os.Getenv("SHOW_MANAGER_LOG") != "" {
		fmt.Fprintln(os.Stderr, managerLog.String())
	}
	return code
}

// syncBuffer collects the manager's log, so tests can scan it for credentials.
type syncBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// newNamespace creates a namespace of its own for one test.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "pam-test-"}}
	if err := k8sClient.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	return ns.Name
}

// randomGUID returns a request id PAM does not know.
func randomGUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
