package controllers_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/yaml"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/emulator"
)

// PromQL is tokenised here rather than parsed: Prometheus's parser lives only in promtool's own
// module (hack/tools/promtool), whose dependencies the operator's module must not take on. What
// is left of an expression once strings, label matchers, ranges, grouping lists and variables
// are cut out is operators, numbers, function and aggregation names (followed by "("), keywords
// and metric names.
var (
	promStrings   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'` + "|`[^`]*`")
	promBraces    = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promGrouping  = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promVariables = regexp.MustCompile(`\$\{?\w+\}?`)
	promNumbers   = regexp.MustCompile(`\b\d[\w.]*`) // 0.99, 1e3, 0x1f, durations like 5m
	promTokens    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?`)
	promKeywords  = []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
		"group_left", "group_right", "inf", "nan", "atan2", "start", "end"}
)

// promMetricNames returns the metric names a PromQL expression selects.
func promMetricNames(expr string) []string {
	for _, re := range []*regexp.Regexp{promStrings, promBraces, promGrouping, promVariables, promNumbers} {
		expr = re.ReplaceAllString(expr, " ")
	}
	var names []string
	for _, tok := range promTokens.FindAllString(expr, -1) {
		if strings.HasSuffix(tok, "(") || slices.Contains(promKeywords, strings.ToLower(tok)) {
			continue
		}
		names = append(names, tok)
	}
	return names
}

func TestPromMetricNames(t *testing.T) {
	for _, tc := range []struct {
		reason string
		expr   string
		want   []string
	}{
		{"a selector with matchers and a range", `rate(a_total{result!="success", code=~"5.."}[5m])`, []string{"a_total"}},
		{"grouping lists hold labels, not metrics", `histogram_quantile(0.99, sum by (le, trigger) (rate(b_bucket[$__rate_interval])))`, []string{"b_bucket"}},
		{"a grouping clause after the aggregation", `sum(rate(c_count[1h])) without (instance) / on(job) group_left(x) d`, []string{"c_count", "d"}},
		{"binary operators, keywords and numbers", `e > 0 unless f offset 5m and bool 1e3`, []string{"e", "f"}},
		{"a label value that looks like a metric", `g{state="stalled_total"}`, []string{"g"}},
	} {
		if got := promMetricNames(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q: got %q, want %q", tc.reason, tc.expr, got, tc.want)
		}
	}
}

// shippedQueries returns every PromQL expression of the Grafana dashboard and the alert rules,
// each with where it comes from.
func shippedQueries(t *testing.T) map[string]string {
	t.Helper()
	queries := map[string]string{}
	data, err := os.ReadFile(filepath.Join("..", "config", "grafana", "pam-operator.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dashboard struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dashboard); err != nil {
		t.Fatalf("config/grafana/pam-operator.json: %v", err)
	}
	for _, p := range dashboard.Panels {
		for _, target := range p.Targets {
			queries["dashboard panel "+p.Title+" "+target.RefID] = target.Expr
		}
	}
	data, err = os.ReadFile(filepath.Join("..", "config", "prometheus", "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rule struct {
		Spec struct {
			Groups []struct {
				Rules []struct {
					Alert  string `json:"alert"`
					Record string `json:"record"`
					Expr   string `json:"expr"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(data, &rule); err != nil {
		t.Fatalf("config/prometheus/rules.yaml: %v", err)
	}
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			queries["rule "+r.Alert+r.Record] = r.Expr
		}
	}
	return queries
}

// servedNames returns the names of the series the manager's registry serves on /metrics: a
// histogram as its _bucket, _sum and _count series.
func servedNames(g Gomega) map[string]bool {
	families, err := ctrlmetrics.Registry.Gather()
	g.Expect(err).NotTo(HaveOccurred())
	served := map[string]bool{}
	for _, f := range families {
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				served[f.GetName()+suffix] = true
			}
			continue
		}
		served[f.GetName()] = true
	}
	return served
}

// TestDashboardAndAlertsQueryServedMetrics: every metric the Grafana dashboard and the alert
// rules query is served by the suite's running manager, once it has done what a manager does
// (a server, an elevation synced and closed): a renamed metric or a typo leaves an empty panel
// or an alert that never fires, which no one notices until it is needed.
func TestDashboardAndAlertsQueryServedMetrics(t *testing.T) {
	g := NewWithT(t)
	queries := shippedQueries(t)
	var panels, rules int
	for where := range queries {
		if strings.HasPrefix(where, "rule ") {
			rules++
		} else {
			panels++
		}
	}
	g.Expect(panels).To(BeNumerically(">=", 10), "the dashboard's queries were not found")
	g.Expect(rules).To(BeNumerically(">=", 1), "the alert rules' queries were not found")

	// PAM call latencies exist only once a call was made: make some, as a running manager does.
	el, _ := trackActive(t, "dashboard")
	deleteObj(t, el)
	waitGone(t, el)

	g.Eventually(func(g Gomega) {
		served := servedNames(g)
		for where, expr := range queries {
			names := promMetricNames(expr)
			g.Expect(names).NotTo(BeEmpty(), "%s: no metric in %q", where, expr)
			for _, name := range names {
				g.Expect(served).To(HaveKey(name), "%s queries %s, which the manager does not serve: %q", where, name, expr)
			}
		}
	}).WithTimeout(waitTimeout).WithPolling(pollEvery).Should(Succeed())
}

// TestLoginBackoffGauge: an account whose login was refused counts in
// pam_operator_login_backoff_accounts while its breaker is open, read from the servers' status.
func TestLoginBackoffGauge(t *testing.T) {
	g := NewWithT(t)
	// An emulator of its own: the refusals count against no other test's account.
	ns, own := withOwnEmulator(t, func(spec *pamv1.PamServerSpec) { spec.Auth.Basic.SecretRef.Name = "wrong-credentials" })
	create(t, basicSecret(ns, "wrong-credentials", pamUser, "wrong-password"))
	id := own.AddRequest(emulator.Request{Owner: pamUser, RoleID: randomGUID(), RequestedTTL: time.Hour}).ID
	// Orphan: with the breaker open no close can be sent, and the test must be able to leave.
	el := elevation(ns, "refused", id, func(el *pamv1.PamElevation) { el.Spec.DeletionPolicy = pamv1.DeletionPolicyOrphan })
	create(t, el)
	t.Cleanup(func() { deleteObj(t, el); waitGone(t, el) })
	waitFor(t, el, refusedOrPaused)

	server := &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"}}
	// The gauge is read while the status records the refusal, both in one poll: the breaker
	// lets one probe through every backoff, and the record may lapse around it.
	g.Eventually(func(g Gomega) {
		g.Expect(k8sClient.Get(t.Context(), client.ObjectKeyFromObject(server), server)).To(Succeed())
		g.Expect(server.Status.LoginBackoff).NotTo(BeNil())
		g.Expect(metricValue(t, "pam_operator_login_backoff_accounts", nil)).To(BeNumerically(">=", 1))
	}).WithTimeout(waitTimeout).WithPolling(pollEvery).Should(Succeed())
}

// TestDashboardImportsAnywhere: the dashboard names no data source of one Grafana (every query
// goes to the ${datasource} variable, which asks for a Prometheus at import) and uses only
// panels Grafana ships, so that it imports into any Grafana without plugins.
func TestDashboardImportsAnywhere(t *testing.T) {
	g := NewWithT(t)
	data, err := os.ReadFile(filepath.Join("..", "config", "grafana", "pam-operator.json"))
	g.Expect(err).NotTo(HaveOccurred())
	type datasource struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	}
	var dashboard struct {
		SchemaVersion int `json:"schemaVersion"`
		Templating    struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query string `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title      string      `json:"title"`
			Type       string      `json:"type"`
			Datasource *datasource `json:"datasource"`
			Targets    []struct {
				Datasource *datasource `json:"datasource"`
			} `json:"targets"`
		} `json:"panels"`
	}
	g.Expect(json.Unmarshal(data, &dashboard)).To(Succeed())
	g.Expect(dashboard.SchemaVersion).To(BeNumerically(">=", 36), "datasource references as objects need schema 36 or later")
	g.Expect(dashboard.Templating.List).To(ContainElement(And(
		HaveField("Name", "datasource"), HaveField("Type", "datasource"), HaveField("Query", "prometheus"))))
	want := &datasource{Type: "prometheus", UID: "${datasource}"}
	for _, p := range dashboard.Panels {
		g.Expect(p.Type).To(BeElementOf("row", "timeseries", "stat"), "panel %s", p.Title)
		if p.Type == "row" {
			continue
		}
		g.Expect(p.Datasource).To(Equal(want), "panel %s", p.Title)
		g.Expect(p.Targets).NotTo(BeEmpty(), "panel %s", p.Title)
		for _, target := range p.Targets {
			g.Expect(target.Datasource).To(Equal(want), "panel %s", p.Title)
		}
	}
}
