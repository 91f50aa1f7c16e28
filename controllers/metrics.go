package controllers

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/pam"
	"github.com/pam-operator/pam-operator/pamapi"
)

// Metrics, in controller-runtime's registry so they are served with its own on /metrics. Labels
// are bounded sets: no request ids, names or messages.
var (
	closeAttempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pam_operator_close_attempts_total",
		Help: "Close calls sent to PAM, by result (success, failure, unconfirmed) and HTTP status (0 when no answer arrived).",
	}, []string{"result", "code"})

	pamCallDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pam_operator_pam_call_duration_seconds",
		Help:    "Duration of calls to the MIM PAM REST API, by server (PamServer/<namespace>/<name> or ClusterPamServer/<name>), operation (close, list, create, roles) and HTTP status.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"server", "operation", "code"})

	createAttempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pam_operator_create_attempts_total",
		Help: "Create calls sent to PAM, by result (success, failure, unknown: the answer was lost and the request is looked for) and HTTP status (0 when no answer arrived).",
	}, []string{"result", "code"})

	createToActive = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "pam_operator_create_to_active_seconds",
		Help:    "Seconds from the operator's create of a request to the first read that shows it Active: approval, MFA and PAM's processing.",
		Buckets: []float64{.1, .5, 1, 5, 15, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600},
	})

	closeLag = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pam_operator_close_lag_seconds",
		Help:    "Seconds from a deletion or an expiry to the successful close of the request, by trigger (deleted, expired).",
		Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600},
	}, []string{"trigger"})
)

func init() {
	ctrlmetrics.Registry.MustRegister(closeAttempts, pamCallDuration, closeLag, createAttempts, createToActive)
	// Every result and trigger starts at 0 with the process, so that rate() counts the first
	// increment after a start and an alert can tell "none yet" from "no series". A failure's
	// code is known only once PAM answered; "0" (no answer: PAM unreachable, a dial refused) is
	// the one known before.
	closeAttempts.WithLabelValues("success", "200")
	closeAttempts.WithLabelValues("unconfirmed", "200")
	closeAttempts.WithLabelValues("failure", "0")
	closeLag.WithLabelValues("deleted")
	closeLag.WithLabelValues("expired")
	createAttempts.WithLabelValues("success", "201")
	createAttempts.WithLabelValues("failure", "0")
	createAttempts.WithLabelValues("unknown", "0")
}

// observeCreate records a create call's outcome.
func observeCreate(err error) {
	switch {
	case err == nil:
		createAttempts.WithLabelValues("success", "201").Inc()
	case errors.Is(err, pam.ErrCreateOutcomeUnknown):
		createAttempts.WithLabelValues("unknown", strconv.Itoa(pam.StatusCodeOf(err))).Inc()
	default:
		createAttempts.WithLabelValues("failure", strconv.Itoa(pam.StatusCodeOf(err))).Inc()
	}
}

// observeActivation records how long a created request took to become Active.
func observeActivation(el *pamv1.PamElevation, now time.Time) {
	if el.Spec.Request != nil && el.Status.RequestCreateTime != nil {
		createToActive.Observe(max(now.Sub(el.Status.RequestCreateTime.Time), 0).Seconds())
	}
}

// registerStateMetrics adds the elevation state gauge, counted from the cached elevations.
func registerStateMetrics(index *elevationIndex) error {
	err := ctrlmetrics.Registry.Register(newElevationStates(index))
	if _, dup := err.(prometheus.AlreadyRegisteredError); dup {
		return nil
	}
	return err
}

// forgetServerMetrics drops a deleted server's series, which would otherwise stay until the
// manager restarts. The in-use finalizer keeps a server until no elevation may call it.
func forgetServerMetrics(serverKey string) {
	pamCallDuration.DeletePartialMatch(prometheus.Labels{"server": serverKey})
}

// observePAMCall records one PAM call; it is the pam.Config Observe hook.
func observePAMCall(server, op string, code int, d time.Duration) {
	pamCallDuration.WithLabelValues(server, op, strconv.Itoa(code)).Observe(d.Seconds())
}

// observeCloseFailure records a close PAM did not accept.
func observeCloseFailure(err error) {
	closeAttempts.WithLabelValues("failure", strconv.Itoa(pam.StatusCodeOf(err))).Inc()
}

// observeCloseUnconfirmed records a 200 that reading the request back did not confirm.
func observeCloseUnconfirmed() {
	closeAttempts.WithLabelValues("unconfirmed", "200").Inc()
}

// observeCloseSuccess records a confirmed close and how long after its trigger it came.
func observeCloseSuccess(el *pamv1.PamElevation, reason string, now time.Time) {
	closeAttempts.WithLabelValues("success", "200").Inc()
	var since time.Time
	trigger := "deleted"
	if reason == pamv1.ReasonCloseRequested {
		return // when spec.closed was set is not recorded: there is no lag to tell
	} else if reason == pamv1.ReasonExpired {
		trigger = "expired"
		if expiry, ok := el.Expiry(); ok {
			since = expiry.Time
		}
	} else if el.DeletionTimestamp != nil {
		since = el.DeletionTimestamp.Time
	}
	if !since.IsZero() {
		closeLag.WithLabelValues(trigger).Observe(max(now.Sub(since), 0).Seconds())
	}
}

// elevationStates is a collector that counts elevations by state from the cache at scrape time,
// so the gauge is never stale and costs nothing between scrapes. It reads the cached objects in
// place: a scrape copies none of them.
type elevationStates struct {
	index *elevationIndex
	desc  *prometheus.Desc
}

func newElevationStates(index *elevationIndex) *elevationStates {
	return &elevationStates{index: index, desc: prometheus.NewDesc("pam_operator_elevations",
		"PamElevations by state: active, pending, closed, stalled, retrying, terminating.", []string{"state"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *elevationStates) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector. Until the cache has synced it reports nothing, rather
// than counts that are short.
func (c *elevationStates) Collect(ch chan<- prometheus.Metric) {
	if !c.index.synced() {
		return
	}
	counts := c.index.stateCounts()
	for _, state := range elevationStateNames {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[state]), state)
	}
}

// elevationStateNames are the values of stateOf.
var elevationStateNames = []string{"active", "pending", "closed", "stalled", "retrying", "terminating"}

func stateOf(el *pamv1.PamElevation) string {
	switch {
	case !el.DeletionTimestamp.IsZero():
		return "terminating"
	case isClosed(el):
		return "closed"
	case meta.IsStatusConditionTrue(el.Status.Conditions, pamv1.ConditionStalled):
		return "stalled"
	case waitsForGrant(el):
		return "pending" // Reconciling while an approver or the account acts: nothing is retried
	case meta.IsStatusConditionTrue(el.Status.Conditions, pamv1.ConditionReconciling):
		return "retrying"
	case el.Status.RequestStatus == string(pamapi.StatusActive):
		return "active"
	}
	return "pending"
}

// registerBreakerMetrics adds the gauge of accounts whose login breaker is open.
func registerBreakerMetrics(reader client.Reader, clk clock.PassiveClock) error {
	err := ctrlmetrics.Registry.Register(&loginBackoffs{reader: reader, clock: clk, desc: prometheus.NewDesc(
		"pam_operator_login_backoff_accounts",
		"Accounts whose login breaker is open: a login was refused and no call sends those credentials until the Secret's data changes or the backoff ends.",
		nil, nil)})
	if _, dup := err.(prometheus.AlreadyRegisteredError); dup {
		return nil
	}
	return err
}

// loginBackoffs counts, at scrape time, the open breakers the servers' status records in the
// cache. The status, not this process's breakers, is the source: it is what survives a restart
// and what every replica sees, so the gauge does not drop to 0 on a failover while logins stay
// paused. Servers sharing an account and its credentials count once, as they share a breaker.
type loginBackoffs struct {
	reader client.Reader
	clock  clock.PassiveClock
	desc   *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (c *loginBackoffs) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector. A cache not synced yet reports nothing: a scrape must
// not wait for it, nor report a 0 it does not know.
func (c *loginBackoffs) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var servers pamv1.PamServerList
	var clusterServers pamv1.ClusterPamServerList
	if c.reader.List(ctx, &servers) != nil || c.reader.List(ctx, &clusterServers) != nil {
		return
	}
	now := c.clock.Now()
	open := map[string]bool{}
	count := func(lb *pamv1.LoginBackoff) {
		if lb != nil && now.Before(lb.RetryAt.Time) {
			open[lb.Account+"\x00"+lb.CredentialHash] = true
		}
	}
	for i := range servers.Items {
		count(servers.Items[i].Status.LoginBackoff)
	}
	for i := range clusterServers.Items {
		count(clusterServers.Items[i].Status.LoginBackoff)
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(len(open)))
}
