package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// The latency baseline also runs in a process of its own, as the manager does. In the benchmark's
// process it sees a deletion with threads still awake from issuing the delete call, while an idle
// manager's threads must first be woken and given a core by the kernel: a cost every controller
// process pays, which only the baseline in a process of its own pays too.

// externalWatcher is the baseline controller running in a child process; deleting holds when it
// saw each elevation's deletion, as the child reported it.
type externalWatcher struct {
	cmd      *exec.Cmd
	deleting *timeLog
	done     chan struct{}
}

// startExternalWatcher starts this program as the baseline controller in a process of its own,
// with a kubeconfig of its own, and waits until it has made its first pass: its workers start
// only once its watch is in place. The benchmark's namespace must hold an elevation by then.
func (b *bench) startExternalWatcher(ctx context.Context) (*externalWatcher, error) {
	user, err := b.h.env.AddUser(envtest.User{Name: "baseline", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, err
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(b.h.workDir, "baseline-kubeconfig")
	if err := os.WriteFile(path, kubeconfig, 0o600); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self, "--baseline-watcher-kubeconfig", path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	w := &externalWatcher{cmd: cmd, deleting: newTimeLog(), done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		defer close(w.done)
		lines := bufio.NewScanner(out)
		for lines.Scan() {
			w.take(lines.Text(), ready)
		}
		_ = cmd.Wait()
	}()
	select {
	case <-ready:
		return w, nil
	case <-w.done:
		return nil, fmt.Errorf("the baseline controller's process ended before its first pass")
	case <-time.After(time.Minute):
		w.stop()
		return nil, fmt.Errorf("the baseline controller's process made no pass within a minute")
	}
}

// take records one line of the child's report: "ready", or "deleting <name> <unix nanoseconds>".
func (w *externalWatcher) take(line string, ready chan struct{}) {
	fields := strings.Fields(line)
	switch {
	case len(fields) == 1 && fields[0] == "ready":
		close(ready)
	case len(fields) == 3 && fields[0] == "deleting":
		if ns, err := strconv.ParseInt(fields[2], 10, 64); err == nil {
			w.deleting.record(fields[1], time.Unix(0, ns))
		}
	}
}

func (w *externalWatcher) stop() {
	_ = w.cmd.Process.Kill()
	<-w.done
}

// runExternalWatcher is the child's side: the baseline controller, reporting on out its first
// pass, and each deletion it sees as it sees it.
func runExternalWatcher(ctx context.Context, kubeconfig string, out io.Writer) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	var first sync.Once
	// The time is taken where the watcher sees the deletion; the line only carries it.
	report := func(name string, deletionSeen time.Time) {
		first.Do(func() { fmt.Fprintln(out, "ready") })
		if !deletionSeen.IsZero() {
			fmt.Fprintf(out, "deleting %s %d\n", name, deletionSeen.UnixNano())
		}
	}
	if _, err := startDeletionWatcher(ctx, cfg, newScheme(), report); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}
