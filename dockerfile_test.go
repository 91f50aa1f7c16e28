package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDockerfileBuild does what the Dockerfile's builder stage does without Docker (there is no
// engine here): it copies exactly the files the COPY lines name into an empty directory and runs
// the RUN line that builds the manager, with the variables the stage sets. A package the image
// needs but the Dockerfile does not copy, or a build that needs cgo, fails here.
func TestDockerfileBuild(t *testing.T) {
	f, err := os.Open("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	var buildLine string
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		switch {
		case len(fields) >= 3 && fields[0] == "COPY" && !strings.HasPrefix(fields[1], "--from"):
			for _, src := range fields[1 : len(fields)-1] {
				copyPath(t, strings.TrimSuffix(src, "/"), filepath.Join(dir, strings.TrimSuffix(src, "/")))
			}
		case len(fields) > 1 && fields[0] == "RUN" && strings.Contains(scanner.Text(), "go build"):
			buildLine = strings.TrimSpace(strings.TrimPrefix(scanner.Text(), "RUN"))
		}
	}
	if buildLine == "" {
		t.Fatal("the Dockerfile has no RUN line with go build")
	}
	cmd := exec.Command("sh", "-c", buildLine)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TARGETOS=linux", "TARGETARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", buildLine, err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "manager")); err != nil {
		t.Fatalf("the build wrote no manager binary: %v", err)
	}
	if out, _ := exec.Command("go", "version", "-m", filepath.Join(dir, "manager")).Output(); !strings.Contains(string(out), "CGO_ENABLED=0") {
		t.Fatalf("the manager is not a static, cgo-free build:\n%s", out)
	}
}

func copyPath(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-R", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("copying %s: %v\n%s", src, err, out)
	}
}
