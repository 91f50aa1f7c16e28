package main

import (
	"context"
	"fmt"
	"iter"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/hack/lab"
)

const (
	operatorNamespace = "pam-system"
	pamUser           = "PRIV\\reliability"
	// pamPassword is a canary: it must never appear in logs, events or status.
	pamPassword = "canary-7d1e5f0a-credential"
	// The manager's timers, short so a scenario settles in seconds.
	syncInterval  = 2 * time.Second
	maxRetryDelay = 2 * time.Second
)

// harness is a control plane, the PAM emulator over real HTTP, and the manager binary built
// from this tree, run as child processes that can be killed.
type harness struct {
	workDir    string
	env        *lab.ControlPlane
	kubeconfig string
	client     client.Client
	pam        *lab.Emulator
	// closes records when each request's first successful Close reached the emulator.
	closes     *timeLog
	pamURL     string
	managerBin string
	// managerEnv is added to the environment of every manager started (the benchmarks' GOGC).
	managerEnv []string
	// apiProxy stands between the managers and kube-apiserver, so a scenario can cut them off;
	// nil when the harness runs without faults (the benchmarks), whose managers connect directly.
	apiProxy *cutProxy
	// metrics is how the managers' HTTPS metrics endpoints are scraped.
	metrics *metricsAccess
}

func startHarness(workDir string, faults bool) (*harness, error) {
	root, err := lab.RepoRoot()
	if err != nil {
		return nil, err
	}
	h := &harness{workDir: workDir, managerBin: filepath.Join(workDir, "manager")}
	build := exec.Command("go", "build", "-o", h.managerBin, ".")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the manager: %w\n%s", err, out)
	}

	// The audit log records every request the managers make, so a test can show that each
	// permission the shipped RBAC grants is used.
	policy := filepath.Join(workDir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
		return nil, err
	}
	h.env, err = lab.StartControlPlane(root, "reliability", func(env *envtest.Environment) {
		env.ControlPlane.GetAPIServer().Configure().
			Set("audit-policy-file", policy).
			Set("audit-log-path", filepath.Join(workDir, auditLogName))
	})
	if err != nil {
		return nil, err
	}
	cfg, kubeconfig := h.env.Config, h.env.AdminKubeconfig
	apiAddr := cfg.Host
	if u, err := url.Parse(cfg.Host); err == nil && u.Host != "" {
		apiAddr = u.Host
	}
	if faults {
		h.apiProxy, err = newCutProxy(apiAddr)
		if err != nil {
			h.stop()
			return nil, err
		}
		// The managers reach the API server through the proxy; its certificate is for 127.0.0.1,
		// whatever the port.
		kubeconfig = []byte(strings.ReplaceAll(string(kubeconfig), apiAddr, h.apiProxy.addr()))
		if !strings.Contains(string(kubeconfig), h.apiProxy.addr()) {
			h.stop()
			return nil, fmt.Errorf("the kubeconfig does not name the API server %s", apiAddr)
		}
	}
	// ... and act as the operator's ServiceAccount, with exactly the permissions the shipped
	// RBAC grants: a missing permission breaks the scenarios.
	if err := applyInstall(root, kubeconfig); err != nil {
		h.stop()
		return nil, err
	}
	if kubeconfig, err = impersonate(kubeconfig, managerServiceAccount); err != nil {
		h.stop()
		return nil, err
	}
	if err := checkIdentity(root, kubeconfig); err != nil {
		h.stop()
		return nil, err
	}
	h.kubeconfig = filepath.Join(workDir, "kubeconfig")
	if err := os.WriteFile(h.kubeconfig, kubeconfig, 0o600); err != nil {
		h.stop()
		return nil, err
	}
	if h.client, err = client.New(cfg, client.Options{Scheme: newScheme()}); err != nil {
		h.stop()
		return nil, err
	}
	// The install manifest has created the operator's namespace already.
	if err := h.client.Get(context.Background(), client.ObjectKey{Name: operatorNamespace}, &corev1.Namespace{}); err != nil {
		h.stop()
		return nil, err
	}

	if h.metrics, err = setupMetricsAccess(context.Background(), h.client, workDir); err != nil {
		h.stop()
		return nil, err
	}
	if err := createKerberosServer(context.Background(), h.client); err != nil {
		h.stop()
		return nil, err
	}

	h.closes = newTimeLog()
	h.pam, err = lab.ServeEmulator(emulator.Options{Users: map[string]string{pamUser: pamPassword}, Seed: 1, Observe: observeCloses(h.closes)}, nil)
	if err != nil {
		h.stop()
		return nil, err
	}
	h.pamURL = h.pam.URL
	return h, nil
}

// auditLogName is the API server's audit log in the work directory.
const auditLogName = "audit.log"

// auditPolicy logs who did what to which resource, without bodies.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
`

// managerServiceAccount is the identity config/default installs the manager as.
const managerServiceAccount = "system:serviceaccount:" + operatorNamespace + ":pam-operator-controller-manager"

// applyInstall applies what `make build-installer` ships (CRDs, RBAC, the Deployment) with the
// real kubectl, as an administrator would.
func applyInstall(root string, kubeconfig []byte) error {
	install, err := exec.Command(filepath.Join(root, "bin", "kustomize"), "build", filepath.Join(root, "config", "default")).Output()
	if err != nil {
		return fmt.Errorf("kustomize build config/default: %w", err)
	}
	path, err := writeTemp(kubeconfig)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	apply := exec.Command(filepath.Join(root, "bin", "kubectl"), "apply", "--server-side", "--force-conflicts", "-f", "-")
	apply.Env = append(os.Environ(), "KUBECONFIG="+path)
	apply.Stdin = strings.NewReader(string(install))
	if out, err := apply.CombinedOutput(); err != nil {
		return fmt.Errorf("applying the install manifest: %w\n%s", err, out)
	}
	return nil
}

// checkIdentity proves the managers' kubeconfig acts as the ServiceAccount: it may do what the
// shipped RBAC grants and nothing an administrator could.
func checkIdentity(root string, kubeconfig []byte) error {
	path, err := writeTemp(kubeconfig)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	for _, check := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "secrets", "-n", "default"}, "yes"},
		{[]string{"patch", "secrets", "-n", "default"}, "no"},
		{[]string{"list", "secrets", "-n", "default"}, "no"},
		{[]string{"create", "secrets", "-n", operatorNamespace}, "yes"},
		{[]string{"create", "pods", "-n", "default"}, "no"},
		{[]string{"delete", "pamelevations", "-n", "default"}, "no"},
	} {
		cmd := exec.Command(filepath.Join(root, "bin", "kubectl"), append([]string{"auth", "can-i"}, check.args...)...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+path)
		out, _ := cmd.Output()
		if got := strings.TrimSpace(string(out)); got != check.want {
			return fmt.Errorf("as %s, can-i %v answered %q, want %q", managerServiceAccount, check.args, got, check.want)
		}
	}
	return nil
}

func writeTemp(data []byte) (string, error) {
	f, err := os.CreateTemp("", "kubeconfig-")
	if err != nil {
		return "", err
	}
	defer f.Close()
	_, err = f.Write(data)
	return f.Name(), err
}

// impersonate makes every context of a kubeconfig act as user.
func impersonate(kubeconfig []byte, user string) ([]byte, error) {
	cfg, err := clientcmd.Load(kubeconfig)
	if err != nil {
		return nil, err
	}
	for _, auth := range cfg.AuthInfos {
		auth.Impersonate = user
	}
	return clientcmd.Write(*cfg)
}

func (h *harness) stop() {
	if h.apiProxy != nil {
		h.apiProxy.close()
	}
	if h.pam != nil {
		_ = h.pam.Close()
	}
	if h.env != nil {
		_ = h.env.Stop()
	}
}

// managerProc is one running manager.
type managerProc struct {
	name       string
	cmd        *exec.Cmd
	done       chan struct{}
	metricsURL string
	access     *metricsAccess
}

// metrics scrapes the manager's Prometheus endpoint as an authorized scraper, "" when it
// cannot be reached.
func (m *managerProc) metrics() string {
	code, _, body, err := m.access.get(m.metricsURL, m.access.token)
	if err != nil || code != http.StatusOK {
		return ""
	}
	return body
}

// newScheme holds the Kubernetes types and the operator's.
func newScheme() *runtime.Scheme {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(pamv1.AddToScheme(scheme))
	return scheme
}

// sample returns the value of one sample of the manager's metrics, named with its labels.
func (m *managerProc) sample(name string) (float64, bool) {
	for n, v := range m.samples() {
		if n == name {
			return v, true
		}
	}
	return 0, false
}

// samples yields each sample the manager's metrics hold: its name with labels, and its value.
func (m *managerProc) samples() iter.Seq2[string, float64] {
	return func(yield func(string, float64) bool) {
		for _, line := range strings.Split(m.metrics(), "\n") {
			name, value, ok := strings.Cut(line, " ")
			if !ok || strings.HasPrefix(name, "#") {
				continue
			}
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				continue
			}
			if !yield(name, v) {
				return
			}
		}
	}
}

// freeAddr returns a loopback address with a port nothing listens on.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startManager runs the manager binary as a child process; its log goes to <name>.log.
func (h *harness) startManager(name string, leaderElect bool, extraArgs ...string) (*managerProc, error) {
	logFile, err := os.OpenFile(filepath.Join(h.workDir, name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	metricsAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	args := []string{
		"--kubeconfig", h.kubeconfig,
		"--cluster-resource-namespace", operatorNamespace,
		"--metrics-bind-address", metricsAddr,
		"--metrics-cert-path", h.metrics.certDir,
		"--health-probe-bind-address", "0",
		"--pam-sync-interval", syncInterval.String(),
		"--max-retry-delay", maxRetryDelay.String(),
		"--max-concurrent-reconciles", "8",
	}
	if leaderElect {
		args = append(args, "--leader-elect",
			"--leader-election-lease-duration", "4s",
			"--leader-election-renew-deadline", "3s",
			"--leader-election-retry-period", "500ms")
	}
	cmd := exec.Command(h.managerBin, append(args, extraArgs...)...)
	// The manager's GC settings are its own defaults unless managerEnv sets them, whatever the
	// environment of this process says.
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "GOGC=") || strings.HasPrefix(kv, "GOMEMLIMIT=")
	})
	cmd.Env = append(append(env, h.managerEnv...), "POD_NAME="+name, "POD_NAMESPACE="+operatorNamespace)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	m := &managerProc{name: name, cmd: cmd, done: make(chan struct{}), metricsURL: "https://" + metricsAddr + "/metrics", access: h.metrics}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(m.done)
	}()
	return m, nil
}

// kill ends the manager at once, as a crash or an evicted node would: SIGKILL, no cleanup.
func (m *managerProc) kill() {
	_ = m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.done
}

// stop ends the manager gracefully.
func (m *managerProc) stop() {
	_ = m.cmd.Process.Signal(os.Interrupt)
	select {
	case <-m.done:
	case <-time.After(15 * time.Second):
		m.kill()
	}
}

// userAgent is what the manager sends to PAM, to tell replicas apart in the emulator's log.
func (m *managerProc) userAgent() string { return "pam-operator (pod " + m.name + ")" }

// fleet keeps track of the managers of a scenario.
type fleet struct {
	mu       sync.Mutex
	h        *harness
	procs    []*managerProc
	started  int
	kills    int
	election bool
}

func (f *fleet) start() (*managerProc, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.started++
	m, err := f.h.startManager(fmt.Sprintf("manager-%d", f.started), f.election)
	if err != nil {
		return nil, err
	}
	f.procs = append(f.procs, m)
	return m, nil
}

// killOne SIGKILLs a running manager (the one named, or the newest) and returns it.
func (f *fleet) killOne(name string) *managerProc {
	f.mu.Lock()
	var victim *managerProc
	for i := len(f.procs) - 1; i >= 0; i-- {
		if name == "" || f.procs[i].name == name {
			victim = f.procs[i]
			f.procs = append(f.procs[:i:i], f.procs[i+1:]...)
			break
		}
	}
	if victim != nil {
		f.kills++
	}
	f.mu.Unlock()
	if victim != nil {
		victim.kill()
	}
	return victim
}

// metrics scrapes every running manager.
func (f *fleet) metrics() []string {
	f.mu.Lock()
	procs := append([]*managerProc(nil), f.procs...)
	f.mu.Unlock()
	var out []string
	for _, m := range procs {
		out = append(out, m.metrics())
	}
	return out
}

func (f *fleet) stopAll() {
	f.mu.Lock()
	procs := f.procs
	f.procs = nil
	f.mu.Unlock()
	for _, m := range procs {
		m.stop()
	}
}

// createKerberosServer creates a PamServer whose Kerberos configuration comes from a ConfigMap.
// No elevation uses it; the manager validates it, which reads the ConfigMap as the shipped RBAC
// allows (configuration is checked offline, so no KDC is needed).
func createKerberosServer(ctx context.Context, c client.Client) error {
	const ns = "rel-kerberos"
	objects := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"},
			StringData: map[string]string{"username": "reliability", "password": pamPassword}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "krb5"}, Data: map[string]string{
			"krb5.conf": "[libdefaults]\n default_realm = PAM.TEST\n[realms]\n PAM.TEST = {\n  kdc = 127.0.0.1:88\n }\n"}},
		&pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"}, Spec: pamv1.PamServerSpec{
			URL: "https://pam.example.test",
			Auth: &pamv1.PamServerAuth{Kerberos: &pamv1.KerberosAuth{SecretRef: pamv1.SecretReference{Name: "pam"},
				Krb5ConfigMapRef: &pamv1.ConfigMapReference{Name: "krb5"}}},
		}},
	}
	for _, obj := range objects {
		if err := c.Create(ctx, obj); err != nil {
			return fmt.Errorf("creating the Kerberos PamServer: %w", err)
		}
	}
	return nil
}
