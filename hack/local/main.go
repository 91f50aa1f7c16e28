// Command local runs pam-operator on this machine without a cluster or an internet connection:
// a control plane from the kube-apiserver, etcd and kubectl built into ./bin, and the PAM
// emulator.
//
//	go run ./hack/local env    # the control plane and emulator alone, in the foreground
//	go run ./hack/local run    # the same, plus the manager (bin/manager), with any manager flags
//	go run ./hack/local demo   # the walk-through of `make demo`; exits 0 only if every step happened
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/emulator/ntlmserver"
	"github.com/pam-operator/pam-operator/hack/lab"
)

const (
	demoUser     = "PRIV\\jen"
	demoPassword = "demo-only-password"
	// operatorNamespace is where the manager runs and reads ClusterPamServer Secrets from.
	operatorNamespace = "pam-system"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: local env | run [manager flags] | demo")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var err error
	switch os.Args[1] {
	case "env":
		err = withEnv(ctx, func(env *localEnv) error {
			fmt.Printf("\nControl plane and PAM emulator are running. Press Ctrl-C to stop.\n")
			<-ctx.Done()
			return nil
		})
	case "run":
		err = withEnv(ctx, func(env *localEnv) error {
			return env.runManager(ctx, os.Args[2:], os.Stdout)
		})
	case "demo":
		err = withEnv(ctx, runDemo)
	default:
		err = fmt.Errorf("unknown command %q: use env, run or demo", os.Args[1])
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// Where the generated files go and which manager runs; tests point them elsewhere.
var (
	// stateDir holds the kubeconfig and the manager's log; "" means bin/local.
	stateDir string
	// managerBinary is the manager to run; "" means bin/manager.
	managerBinary string
)

// localEnv is a running control plane and emulator.
type localEnv struct {
	// auth is how the emulator authenticates Jen: "basic" or "ntlm" (DEMO_AUTH).
	auth       string
	root       string
	stateDir   string
	manager    string
	kubeconfig string
	pamURL     string
	// caBundle is the certificate the emulator serves, PEM.
	caBundle string
	pam      *emulator.Server
}

// withEnv starts the control plane and the emulator, runs fn, and stops both whatever happens.
func withEnv(ctx context.Context, fn func(*localEnv) error) error {
	root, err := lab.RepoRoot()
	if err != nil {
		return err
	}
	bin := filepath.Join(root, "bin")

	fmt.Println("==> Starting the local control plane (kube-apiserver and etcd from ./bin)")
	cp, err := lab.StartControlPlane(root, "local-admin", nil)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("==> Stopping the local control plane")
		_ = cp.Stop()
	}()
	kubeconfig := cp.AdminKubeconfig
	env := &localEnv{root: root, stateDir: stateDir, manager: managerBinary}
	if env.stateDir == "" {
		env.stateDir = filepath.Join(bin, "local")
	}
	if env.manager == "" {
		env.manager = filepath.Join(bin, "manager")
	}
	env.kubeconfig = filepath.Join(env.stateDir, "kubeconfig")
	if err := os.MkdirAll(env.stateDir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(env.kubeconfig, kubeconfig, 0o600); err != nil {
		return err
	}
	fmt.Printf("    kubeconfig: %s\n", env.kubeconfig)

	env.auth = cmp.Or(os.Getenv("DEMO_AUTH"), "basic")
	emuOpts := emulator.Options{
		Users: map[string]string{demoUser: demoPassword},
		Log:   func(line string) { fmt.Println("    pam-emulator | " + line) },
	}
	var connContext func(context.Context, net.Conn) context.Context
	switch env.auth {
	case "basic":
	case "ntlm":
		// As IIS with Windows authentication: NTLMv2, bound to each connection.
		verifier, err := ntlmserver.New(ntlmserver.Options{Users: map[string]ntlmserver.User{demoUser: {Username: demoUser, Password: demoPassword}}})
		if err != nil {
			return err
		}
		emuOpts.Authenticate, connContext = verifier.Authenticate, verifier.ConnContext
	default:
		return fmt.Errorf("DEMO_AUTH=%q: want basic or ntlm", env.auth)
	}
	emu, err := lab.ServeEmulator(emuOpts, connContext)
	if err != nil {
		return err
	}
	defer emu.Close()
	env.pam, env.pamURL, env.caBundle = emu.Server, emu.URL, emu.CABundle
	caFile := filepath.Join(env.stateDir, "pam-ca.pem")
	if err := os.WriteFile(caFile, []byte(env.caBundle), 0o644); err != nil {
		return err
	}
	fmt.Printf("==> PAM emulator listening at %s (%s, account %q, password %q; its certificate, a PamServer's caBundle, is in %s)\n", env.pamURL, env.auth, demoUser, demoPassword, caFile)

	if _, err := env.kubectl(ctx, "", "create", "namespace", operatorNamespace); err != nil {
		return err
	}
	return fn(env)
}

// runManager runs bin/manager against the local control plane until ctx ends.
func (e *localEnv) runManager(ctx context.Context, extraArgs []string, logTo *os.File) error {
	cmd := e.managerCommand(ctx, extraArgs)
	cmd.Stdout, cmd.Stderr = logTo, logTo
	fmt.Println("==> Running the manager; press Ctrl-C to stop")
	err := cmd.Run()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (e *localEnv) managerCommand(ctx context.Context, extraArgs []string) *exec.Cmd {
	args := append([]string{
		"--kubeconfig", e.kubeconfig,
		"--cluster-resource-namespace", operatorNamespace,
		"--metrics-bind-address", "0",
		"--health-probe-bind-address", "0",
	}, extraArgs...)
	cmd := exec.CommandContext(ctx, e.manager, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// kubectl runs the real kubectl against the local control plane, echoing the command when
// echo is set, and returns its combined output.
func (e *localEnv) kubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(e.root, "bin", "kubectl"), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.kubeconfig)
	if stdin != "" {
		cmd.Stdin = stringsReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %v: %w\n%s", args, err, out)
	}
	return string(out), nil
}
