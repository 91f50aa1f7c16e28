package main

import (
	"os"
	"testing"

	. "github.com/onsi/gomega"
)

// TestRuleFileRefusesOtherKinds: a file that is not a PrometheusRule fails with its name, not
// as a puzzling promtool error about a rule file.
func TestRuleFileRefusesOtherKinds(t *testing.T) {
	g := NewWithT(t)
	path := t.TempDir() + "/monitor.yaml"
	g.Expect(os.WriteFile(path, []byte("apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nspec: {}\n"), 0o600)).To(Succeed())
	_, err := ruleFile(path)
	g.Expect(err).To(MatchError(ContainSubstring("not a monitoring.coreos.com/v1 PrometheusRule")))
}
