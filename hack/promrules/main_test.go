package main

import (
	"os"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"sigs.k8s.io/yaml"
)

// alert is what the documentation says of an alert rule.
type alert struct {
	Name, Severity, For, Summary string
}

// TestAlertTable: the alert table of docs/operations.md lists exactly the shipped alerts, with
// their severity, for and summary, in the same order.
func TestAlertTable(t *testing.T) {
	g := NewWithT(t)
	out, err := ruleFile("../../config/prometheus/rules.yaml")
	g.Expect(err).NotTo(HaveOccurred())
	var file struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `json:"alert"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	g.Expect(yaml.Unmarshal(out, &file)).To(Succeed())
	var rules []alert
	for _, group := range file.Groups {
		for _, r := range group.Rules {
			if r.Alert != "" {
				rules = append(rules, alert{r.Alert, r.Labels["severity"], r.For, r.Annotations["summary"]})
			}
		}
	}
	g.Expect(rules).NotTo(BeEmpty())
	g.Expect(documentedAlerts(t, "../../docs/operations.md")).To(Equal(rules))
}

// documentedAlerts reads the rows of the table headed "| alert | severity | for | meaning |".
func documentedAlerts(t *testing.T, path string) []alert {
	t.Helper()
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, table, found := strings.Cut(string(doc), "| alert | severity | for | meaning |\n| --- | --- | --- | --- |\n")
	if !found {
		t.Fatalf("%s has no alert table", path)
	}
	var alerts []alert
	for _, line := range strings.Split(table, "\n") {
		if !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if len(cells) != 4 {
			t.Fatalf("%s: alert table row %q has %d cells, want 4", path, line, len(cells))
		}
		alerts = append(alerts, alert{strings.Trim(cells[0], "`"), cells[1], cells[2], cells[3]})
	}
	return alerts
}

// TestRuleFileRefusesOtherKinds: a file that is not a PrometheusRule fails with its name, not
// as a puzzling promtool error about a rule file.
func TestRuleFileRefusesOtherKinds(t *testing.T) {
	g := NewWithT(t)
	path := t.TempDir() + "/monitor.yaml"
	g.Expect(os.WriteFile(path, []byte("apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nspec: {}\n"), 0o600)).To(Succeed())
	_, err := ruleFile(path)
	g.Expect(err).To(MatchError(ContainSubstring("not a monitoring.coreos.com/v1 PrometheusRule")))
}
