package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDockerfileBuild does what each Dockerfile's builder stage does without Docker (there is no
// engine here): it copies exactly the files the COPY lines name into an empty directory and runs
// the RUN line that builds the binary, with the variables the stage sets. A package the image
// needs but the Dockerfile does not copy, or a build that needs cgo, fails here. The final stage
// must ship that binary alone on distroless as a non-root user, started without a shell.
func TestDockerfileBuild(t *testing.T) {
	for _, tc := range []struct {
		dockerfile, binary string
		// flag is one the binary's --help lists: the binary built starts and is the right one.
		flag string
	}{
		{"Dockerfile", "manager", "-leader-elect"},
		{"Dockerfile.emulator", "pam-emulator", "-fault"},
	} {
		t.Run(tc.dockerfile, func(t *testing.T) {
			stages := readStages(t, tc.dockerfile)
			if len(stages) != 2 {
				t.Fatalf("want a builder and a final stage, got %d stages", len(stages))
			}
			binary := checkBuilder(t, stages[0], tc.binary)
			checkFinal(t, stages[1], tc.binary)
			// The exit status of --help differs between flag sets; what it prints does not.
			out, _ := exec.Command(binary, "--help").CombinedOutput()
			if !strings.Contains(string(out), tc.flag) {
				t.Fatalf("%s --help does not list %s:\n%s", tc.binary, tc.flag, out)
			}
		})
	}
}

// readStages returns each stage's instructions (FROM included), one line each.
func readStages(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages [][]string
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		line := strings.TrimSpace(scanner.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "FROM ") {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			continue // ARG before the first FROM
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], line)
	}
	return stages
}

// checkBuilder runs the builder stage's COPY lines and go build in an empty directory and
// returns the binary it wrote.
func checkBuilder(t *testing.T, stage []string, binary string) string {
	t.Helper()
	dir := t.TempDir()
	var buildLine string
	for _, line := range stage {
		fields := strings.Fields(line)
		switch {
		case len(fields) >= 3 && fields[0] == "COPY" && !strings.HasPrefix(fields[1], "--from"):
			for _, src := range fields[1 : len(fields)-1] {
				copyPath(t, strings.TrimSuffix(src, "/"), filepath.Join(dir, strings.TrimSuffix(src, "/")))
			}
		case fields[0] == "RUN" && strings.Contains(line, "go build"):
			buildLine = strings.TrimSpace(strings.TrimPrefix(line, "RUN"))
		}
	}
	if buildLine == "" {
		t.Fatal("the builder stage has no RUN line with go build")
	}
	cmd := exec.Command("sh", "-c", buildLine)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TARGETOS=linux", "TARGETARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", buildLine, err, out)
	}
	built := filepath.Join(dir, binary)
	if _, err := os.Stat(built); err != nil {
		t.Fatalf("the build wrote no %s binary: %v", binary, err)
	}
	if out, _ := exec.Command("go", "version", "-m", built).Output(); !strings.Contains(string(out), "CGO_ENABLED=0") {
		t.Fatalf("%s is not a static, cgo-free build:\n%s", binary, out)
	}
	return built
}

// checkFinal checks that the final stage is distroless, copies only the binary from the builder,
// runs it as a non-root user, and starts it in exec form: distroless has no shell.
func checkFinal(t *testing.T, stage []string, binary string) {
	t.Helper()
	var user string
	var entrypoint []string
	for _, line := range stage {
		keyword, rest, _ := strings.Cut(line, " ")
		switch keyword {
		case "FROM":
			if rest != "gcr.io/distroless/static:nonroot" {
				t.Errorf("the final stage is FROM %s, not distroless static nonroot", rest)
			}
		case "COPY":
			if want := "--from=builder /workspace/" + binary + " ."; rest != want {
				t.Errorf("the final stage copies %q, want only the binary: %q", rest, want)
			}
		case "RUN":
			t.Errorf("the final stage runs %q: distroless has no shell", rest)
		case "USER":
			user = rest
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &entrypoint); err != nil {
				t.Errorf("ENTRYPOINT %s is not in exec form: distroless has no shell to run it", rest)
			}
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	if uid == "" || uid == "0" || uid == "root" {
		t.Errorf("the final stage runs as %q, want a non-root numeric user", user)
	}
	if len(entrypoint) == 0 || entrypoint[0] != "/"+binary {
		t.Errorf("ENTRYPOINT %q does not start /%s", entrypoint, binary)
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
