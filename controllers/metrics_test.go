package controllers_test

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
)

// metricValue sums a metric family's samples whose labels include want (counters and gauges as
// values, histograms as sample counts).
func metricValue(t *testing.T, name string, want map[string]string) float64 {
	t.Helper()
	kind, samples := matchingSamples(t, name, want)
	var sum float64
	for _, m := range samples {
		sum += sampleValue(kind, m)
	}
	return sum
}

// matchingSamples returns the type of the metric family name and its samples whose labels
// include want.
func matchingSamples(t *testing.T, name string, want map[string]string) (dto.MetricType, []*dto.Metric) {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		var samples []*dto.Metric
	next:
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue next
				}
			}
			samples = append(samples, m)
		}
		return f.GetType(), samples
	}
	return 0, nil
}

func sampleValue(kind dto.MetricType, m *dto.Metric) float64 {
	switch kind {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_HISTOGRAM:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}

func TestMetricsRecordCloses(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	withServer(t, ns)
	successes := metricValue(t, "pam_operator_close_attempts_total", map[string]string{"result": "success", "code": "200"})
	lagDeleted := metricValue(t, "pam_operator_close_lag_seconds", map[string]string{"trigger": "deleted"})
	closeCalls := metricValue(t, "pam_operator_pam_call_duration_seconds", map[string]string{"operation": "close", "code": "200"})

	el := elevation(ns, "metered", seedRequest(pamUser, time.Hour))
	create(t, el)
	waitActive(t, el)
	// The gauge counts the manager's cache, which may see the status a moment after the API server.
	g.Eventually(func() float64 {
		return metricValue(t, "pam_operator_elevations", map[string]string{"state": "active"})
	}).Should(BeNumerically(">=", 1))

	deleteObj(t, el)
	waitGone(t, el)
	g.Expect(metricValue(t, "pam_operator_close_attempts_total", map[string]string{"result": "success", "code": "200"})).To(Equal(successes + 1))
	g.Expect(metricValue(t, "pam_operator_close_lag_seconds", map[string]string{"trigger": "deleted"})).To(Equal(lagDeleted + 1))
	g.Expect(metricValue(t, "pam_operator_pam_call_duration_seconds", map[string]string{"operation": "close", "code": "200"})).To(Equal(closeCalls + 1))
	g.Expect(metricValue(t, "pam_operator_pam_call_duration_seconds", map[string]string{"operation": "list"})).To(BeNumerically(">", 0))
	// Per server: this namespace's PamServer made exactly that close.
	g.Expect(metricValue(t, "pam_operator_pam_call_duration_seconds",
		map[string]string{"server": "PamServer/" + ns + "/pam", "operation": "close", "code": "200"})).To(Equal(1.0))

	// A deleted server's series go with it.
	server := &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"}}
	deleteObj(t, server)
	waitGone(t, server)
	g.Eventually(func() []*dto.Metric {
		_, samples := matchingSamples(t, "pam_operator_pam_call_duration_seconds", map[string]string{"server": "PamServer/" + ns + "/pam"})
		return samples
	}).Should(BeEmpty())
}

// TestMetricsSeriesExistBeforeAnyClose: the alert on failing closes must work from a start in
// which no close has succeeded yet, and rate() must see the first increment of each result. The
// series exist from the start (at 0 until something happens; other tests may have closed by now).
func TestMetricsSeriesExistBeforeAnyClose(t *testing.T) {
	g := NewWithT(t)
	for _, tc := range []struct {
		name   string
		labels map[string]string
	}{
		{"pam_operator_close_attempts_total", map[string]string{"result": "success", "code": "200"}},
		{"pam_operator_close_attempts_total", map[string]string{"result": "unconfirmed", "code": "200"}},
		{"pam_operator_close_attempts_total", map[string]string{"result": "failure", "code": "0"}},
		{"pam_operator_close_lag_seconds", map[string]string{"trigger": "deleted"}},
		{"pam_operator_close_lag_seconds", map[string]string{"trigger": "expired"}},
	} {
		_, samples := matchingSamples(t, tc.name, tc.labels)
		g.Expect(samples).To(HaveLen(1), "%s%v", tc.name, tc.labels)
	}
}
