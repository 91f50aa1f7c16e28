package emulator_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// TestImportableFromAnotherModule builds a module of its own, as a user's pipeline would be,
// that requires this repository through a replace directive, and runs this package's Example in
// it: the emulator and everything it imports must be importable from outside (no internal/).
func TestImportableFromAnotherModule(t *testing.T) {
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string]string{
		"go.mod": "module example.com/pipeline\n\ngo 1.26\n\nrequire github.com/pam-operator/pam-operator v0.0.0\n\n" +
			"replace github.com/pam-operator/pam-operator => " + repo + "\n",
		"emulator/doc.go": "// Package emulator is the user's own package, testing their pipeline against the emulator.\npackage emulator\n",
		// The server sides of NTLM and Negotiate are importable too.
		"emulator/auth.go": "package emulator\n\nimport (\n\t\"github.com/pam-operator/pam-operator/emulator/kerberosserver\"\n" +
			"\t\"github.com/pam-operator/pam-operator/emulator/ntlmserver\"\n)\n\n" +
			"var _, _ = ntlmserver.New, kerberosserver.New\n",
		"emulator/example_test.go": string(example),
	}
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	for _, args := range [][]string{{"mod", "tidy"}, {"test", "-count=1", "-run", "Example", "./..."}} {
		cmd := exec.Command(goTool, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %v in the outside module: %v\n%s", args, err, out)
		}
		t.Logf("go %v:\n%s", args, out)
	}
}
