package main

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pam-operator/pam-operator/hack/lab"
)

// TestReliability runs every scenario at a small size against the real manager binary and
// asserts the invariants: no lost close, no duplicate successful close, nothing stuck once the
// faults stop, no credential anywhere, and one active manager at a time.
func TestReliability(t *testing.T) {
	scs := scenarios(12, 4*time.Second, 3, 4*time.Second, 0)
	var out strings.Builder
	workDir := t.TempDir()
	results, err := runAll(context.Background(), workDir, scs, 1, &out)
	printTable(&out, results)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != len(scs) {
		t.Fatalf("%d of %d scenarios ran", len(results), len(scs))
	}
	for _, r := range results {
		if v := r.violations(); len(v) > 0 {
			t.Errorf("%s: %s", r.name, strings.Join(v, ", "))
		}
		if r.name == "crash" && r.managerKills != 3 {
			t.Errorf("crash: %d kills, want 3", r.managerKills)
		}
		if r.failover && r.failoverTime <= 0 {
			t.Errorf("failover: the standby never called PAM after the leader was killed")
		}
		if r.scrapes == 0 {
			t.Errorf("%s: no manager's metrics could be scanned for credentials", r.name)
		}
		if len(r.faults) > 0 && r.faultsInjected == 0 {
			t.Errorf("%s: no fault reached the operator", r.name)
		}
	}

	// The scenarios are the operator's whole life: every permission it holds must have been used.
	root, err := lab.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	unused, err := unusedPermissions(root, filepath.Join(workDir, auditLogName))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range unused {
		t.Errorf("the shipped RBAC grants %s, which the manager never used: remove its marker", p)
	}
}

// TestSecureMetrics scrapes the real manager binary as Prometheus would: HTTPS only, HTTP/1.1
// only, 401 without a token, 403 for a ServiceAccount without the shipped metrics-reader role,
// and the operator's metrics for one with it. The manager checks tokens with the permissions the
// shipped RBAC gives its own ServiceAccount.
func TestSecureMetrics(t *testing.T) {
	h, err := startHarness(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	defer h.stop()
	m, err := h.startManager("metrics", false)
	if err != nil {
		t.Fatal(err)
	}
	defer m.stop()

	// The endpoint starts with the manager; poll until it answers.
	var code int
	var proto, body string
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, proto, body, err = h.metrics.get(m.metricsURL, h.metrics.token)
		if err == nil || time.Now().After(deadline) {
			break
		}
		select {
		case <-m.done:
			t.Fatal("the manager exited; see its log in the test's temp dir")
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		t.Fatalf("scraping %s: %v", m.metricsURL, err)
	}
	// The close counters exist from the process's start; the elevation gauge only once the cache
	// has synced, which the first answer may precede.
	if code != http.StatusOK || !strings.Contains(body, `pam_operator_close_attempts_total{code="0",result="failure"} 0`) {
		t.Fatalf("authorized scrape: HTTP %d, want 200 with the operator's metrics; body starts %.200q", code, body)
	}
	if proto != "HTTP/1.1" {
		t.Errorf("authorized scrape used %s: HTTP/2 must be off unless --enable-http2", proto)
	}
	// Without GOGC in its environment, the manager collects at its own default target.
	if !strings.Contains(body, "\ngo_gc_gogc_percent 25\n") {
		t.Errorf("the manager's metrics do not show GOGC 25, its default")
	}

	if code, _, _, err := h.metrics.get(m.metricsURL, ""); err != nil || code != http.StatusUnauthorized {
		t.Errorf("scrape without a token: HTTP %d (%v), want 401", code, err)
	}
	stranger, err := serviceAccountToken(context.Background(), h.client, "stranger")
	if err != nil {
		t.Fatal(err)
	}
	if code, _, _, err := h.metrics.get(m.metricsURL, stranger); err != nil || code != http.StatusForbidden {
		t.Errorf("scrape by a ServiceAccount without the metrics-reader role: HTTP %d (%v), want 403", code, err)
	}
	plain := "http" + strings.TrimPrefix(m.metricsURL, "https")
	if resp, err := http.Get(plain); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP scrape of %s succeeded; metrics must be served over TLS only", plain)
		}
	}
}
