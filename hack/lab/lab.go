// Package lab is what the local tools share (hack/local for `make demo`, `make run` and `make
// local-env`; hack/reliability for `make reliability` and `make bench`): finding the repository,
// the local control plane built into ./bin, and the PAM emulator served on loopback.
package lab

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/pam-operator/pam-operator/emulator"
)

// RepoRoot finds the root of the repository from the working directory, so the tools work from
// any directory inside it.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "hack", "tools", "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run this from inside the pam-operator repository")
		}
		dir = parent
	}
}

// ControlPlane is kube-apiserver and etcd from ./bin with the CRDs installed, and an
// administrator's kubeconfig.
type ControlPlane struct {
	*envtest.Environment
	// AdminKubeconfig is a kubeconfig of a member of system:masters.
	AdminKubeconfig []byte
}

// StartControlPlane starts the control plane of the repository at root; configure, when set,
// changes the environment before it starts (API server flags). admin names the administrator.
func StartControlPlane(root, admin string, configure func(*envtest.Environment)) (*ControlPlane, error) {
	bin := filepath.Join(root, "bin")
	for _, tool := range []string{"kube-apiserver", "etcd", "kubectl"} {
		if _, err := os.Stat(filepath.Join(bin, tool)); err != nil {
			return nil, fmt.Errorf("bin/%s is missing: run 'make control-plane' first", tool)
		}
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: bin,
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	if configure != nil {
		configure(env)
	}
	if _, err := env.Start(); err != nil {
		return nil, fmt.Errorf("starting the control plane: %w", err)
	}
	cp := &ControlPlane{Environment: env}
	user, err := env.AddUser(envtest.User{Name: admin, Groups: []string{"system:masters"}}, nil)
	if err == nil {
		cp.AdminKubeconfig, err = user.KubeConfig()
	}
	if err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("creating the administrator: %w", err)
	}
	return cp, nil
}

// Emulator is the PAM emulator served over HTTPS on loopback: basic credentials never travel
// over plain http, not even here.
type Emulator struct {
	*emulator.Server
	// URL is where it listens, https://127.0.0.1:port.
	URL string
	// CABundle is the PEM certificate it serves, the caBundle of a PamServer that uses it.
	CABundle string
	server   *httptest.Server
}

// ServeEmulator serves an emulator made from opts on a free loopback port, with a certificate
// made for it. connContext, when set, is the http.Server's ConnContext (NTLM keeps its state
// per connection).
func ServeEmulator(opts emulator.Options, connContext func(context.Context, net.Conn) context.Context) (*Emulator, error) {
	e := &Emulator{Server: emulator.New(opts)}
	e.server = httptest.NewUnstartedServer(e.Server)
	e.server.Config.ReadHeaderTimeout = 10 * time.Second
	e.server.Config.ConnContext = connContext
	e.server.StartTLS()
	e.URL = e.server.URL
	e.CABundle = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.server.Certificate().Raw}))
	return e, nil
}

// Close stops serving.
func (e *Emulator) Close() error {
	e.server.CloseClientConnections() // Close waits for the requests still being answered
	e.server.Close()
	return nil
}
