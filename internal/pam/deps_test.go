package pam_test

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestKnowsNothingOfKubernetes: internal/pam and its transports import no Kubernetes package,
// directly or through another, so the client can be read, tested and reused on its own.
func TestKnowsNothingOfKubernetes(t *testing.T) {
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goTool, "list", "-deps", ".", "./auth/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "k8s.io/") || strings.HasPrefix(pkg, "sigs.k8s.io/") ||
			strings.Contains(pkg, "pam-operator/api/") || strings.Contains(pkg, "pam-operator/controllers") {
			t.Errorf("internal/pam depends on %s", pkg)
		}
	}
}
