package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestRelease runs `make release` as a maintainer would and checks what it wrote: the install
// manifest naming the release's image, the CRDs, the chart stamped with the release, a manager
// that tells its version, and sums that match. A version that is not semantic is refused.
func TestRelease(t *testing.T) {
	dist := t.TempDir()
	release := func(version string) (string, error) {
		cmd := exec.Command("make", "--no-print-directory", "release", "VERSION="+version, "DIST="+dist, "RELEASE_ARCHES="+runtime.GOARCH)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := release("0.2"); err == nil || !strings.Contains(out, "VERSION must be a semantic version") {
		t.Fatalf("make release VERSION=0.2: %v\n%s", err, out)
	}
	if out, err := release("v0.2.0"); err != nil {
		t.Fatalf("make release VERSION=v0.2.0: %v\n%s", err, out)
	}

	install := readFile(t, filepath.Join(dist, "install.yaml"))
	if !strings.Contains(install, "image: ghcr.io/pam-operator/pam-operator:v0.2.0\n") {
		t.Error("install.yaml does not name the release's image")
	}
	crds := readFile(t, filepath.Join(dist, "crds.yaml"))
	for _, kind := range []string{"PamElevation", "PamServer", "ClusterPamServer"} {
		if !strings.Contains(crds, "kind: "+kind+"\n") || !strings.Contains(install, "kind: "+kind+"\n") {
			t.Errorf("the CRD of %s is missing from crds.yaml or install.yaml", kind)
		}
	}
	chart, err := exec.Command("tar", "-xzOf", filepath.Join(dist, "pam-operator-0.2.0.tgz"), "pam-operator/Chart.yaml").Output()
	if err != nil {
		t.Fatalf("reading the chart package: %v", err)
	}
	if !strings.Contains(string(chart), "\nversion: 0.2.0\n") || !strings.Contains(string(chart), "\nappVersion: v0.2.0\n") {
		t.Errorf("the chart package is not stamped with the release:\n%s", chart)
	}
	values, err := exec.Command("tar", "-xzOf", filepath.Join(dist, "pam-operator-0.2.0.tgz"), "pam-operator/values.yaml").Output()
	if err != nil || !strings.Contains(string(values), "repository: ghcr.io/pam-operator/pam-operator\n") {
		t.Errorf("the chart's image is not the release's repository (%v)", err)
	}
	out, err := exec.Command(filepath.Join(dist, "manager-linux-"+runtime.GOARCH), "--version").Output()
	if err != nil || strings.TrimSpace(string(out)) != "pam-operator v0.2.0" {
		t.Errorf("manager --version: %q %v, want pam-operator v0.2.0", out, err)
	}

	sums, err := os.Open(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	defer sums.Close()
	listed := map[string]bool{}
	scanner := bufio.NewScanner(sums)
	for scanner.Scan() {
		sum, name, ok := strings.Cut(scanner.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q", scanner.Text())
		}
		got := sha256.Sum256([]byte(readFile(t, filepath.Join(dist, name))))
		if hex.EncodeToString(got[:]) != sum {
			t.Errorf("SHA256SUMS: %s does not match", name)
		}
		listed[name] = true
	}
	entries, err := os.ReadDir(dist)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "SHA256SUMS" && !listed[e.Name()] {
			t.Errorf("%s is not in SHA256SUMS", e.Name())
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
