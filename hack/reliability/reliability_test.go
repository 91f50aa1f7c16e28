package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestReliability runs every scenario at a small size against the real manager binary and
// asserts the invariants: no lost close, no duplicate successful close, nothing stuck once the
// faults stop, no credential anywhere, and one active manager at a time.
func TestReliability(t *testing.T) {
	scs := scenarios(12, 4*time.Second, 3, 4*time.Second, 0)
	var out strings.Builder
	results, err := runAll(context.Background(), t.TempDir(), scs, 1, &out)
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
}
