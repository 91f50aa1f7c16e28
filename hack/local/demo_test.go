package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/pam-operator/pam-operator/hack/lab"
)

// TestDemo runs `make demo`'s walk-through end to end: the real kube-apiserver, etcd and
// kubectl from ./bin, the manager built from this tree as a child process, and the emulator.
// runDemo checks every step itself (the close on delete, the close at expiry, exactly one
// Close each), so a nil error means each step happened.
func TestDemo(t *testing.T) {
	root, err := lab.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	managerBinary = filepath.Join(t.TempDir(), "manager")
	stateDir = t.TempDir()
	build := exec.Command("go", "build", "-o", managerBinary, ".")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the manager: %v\n%s", err, out)
	}
	// The demo as `make demo` runs it, and as `make demo DEMO_AUTH=ntlm` does.
	for _, auth := range []string{"basic", "ntlm"} {
		t.Run(auth, func(t *testing.T) {
			t.Setenv("DEMO_AUTH", auth)
			if err := withEnv(context.Background(), runDemo); err != nil {
				t.Fatalf("demo failed: %v", err)
			}
		})
	}
}
