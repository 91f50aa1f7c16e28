// Package controllers holds the reconcilers of pam-operator: PamElevation, which closes PAM
// requests on deletion and at expiry, and PamServer/ClusterPamServer, which report whether a
// server configuration can be used.
package controllers

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/pam"
)

const (
	// DefaultSyncInterval is how often an open request is read from PAM.
	DefaultSyncInterval = 5 * time.Minute
	// DefaultMaxRetryDelay caps the backoff between retries, so the operator heals within
	// this long of PAM coming back.
	DefaultMaxRetryDelay = time.Minute
	// initialRetryDelay is the first backoff step.
	initialRetryDelay = 500 * time.Millisecond

	// DefaultClockSkewMargin is how far past PAM's own ExpirationTime a request counts as ended
	// without confirmation.
	DefaultClockSkewMargin = 5 * time.Minute
)

// PamElevationReconciler closes the PAM request of a PamElevation when the object is deleted or
// its expiry passes, and mirrors the request's state from PAM.
type PamElevationReconciler struct {
	client.Client
	// APIReader reads objects from the API server, bypassing the cache, before a close.
	APIReader client.Reader
	// Connector builds PAM clients for servers.
	Connector Connector
	// Recorder emits the Events users see in kubectl describe.
	Recorder recorder.EventRecorder
	// Clock is injected so tests can control time; nil means the real clock.
	Clock clock.PassiveClock
	// SyncInterval is how often an open request is read from PAM.
	SyncInterval time.Duration
	// MaxRetryDelay caps the retry backoff.
	MaxRetryDelay time.Duration

	// index finds cached elevations by request and by server; set up by SetupWithManager.
	index *elevationIndex
	// reads records each request's reads from PAM and the closes sent, which the status
	// records only when something changed.
	reads readRecords
	// MaxConcurrentReconciles bounds parallel reconciles.
	MaxConcurrentReconciles int
	// ClockSkewMargin is how far past PAM's own ExpirationTime a request counts as ended.
	ClockSkewMargin time.Duration

	retries workqueue.TypedRateLimiter[reconcile.Request]
	// releases is the queue of the release controller (release.go), once it has started.
	releases atomic.Pointer[workqueue.TypedRateLimitingInterface[reconcile.Request]]
	// slotWaits queues again the passes refused a call slot of their server.
	slotWaits slotWaits
	// burst holds the confirmations of closes while a burst of deletions arrives in their
	// namespace.
	burst deletionBursts
}

// Least privilege, proven by the reliability test's audit of what the manager uses: objects are
// read from the informers' cache (list, watch) or live (get), and written only with patches.
// +kubebuilder:rbac:groups=pam.mim.dev,resources=pamelevations,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=pam.mim.dev,resources=pamelevations/status,verbs=patch
// +kubebuilder:rbac:groups=pam.mim.dev,resources=pamservers;clusterpamservers,verbs=list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile moves one PamElevation one step through its life: ensure the finalizer, sync from
// PAM, close at expiry or on deletion, and requeue at the next moment something is due.
func (r *PamElevationReconciler) Reconcile(ctx context.Context, req reconcile.Request) (ctrl.Result, error) {
	// The pass's calls to PAM share one call slot of their server, taken without waiting.
	ctx, slots := pam.WithPass(ctx, req)
	p := &pass{}
	defer func() { r.slotWaits.passEnded(req, slots, p.priority()) }()
	el := &pamv1.PamElevation{}
	if err := r.Get(ctx, req.NamespacedName, el); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}

	if !el.DeletionTimestamp.IsZero() {
		p.closing = true
		return r.reconcileDelete(ctx, req, el, slots, p)
	}

	// The finalizer is stored before any call to PAM, so no close can be lost to a deletion
	// that races the first pass.
	if !controllerutil.ContainsFinalizer(el, pamv1.ElevationFinalizer) {
		patch := client.MergeFromWithOptions(el.DeepCopy(), client.MergeFromWithOptimisticLock{})
		controllerutil.AddFinalizer(el, pamv1.ElevationFinalizer)
		if err := r.Patch(ctx, el, patch); err != nil {
			return ctrl.Result{}, err
		}
	}

	original := el.DeepCopy()
	p.now = r.Clock.Now()
	next := r.reconcileNormal(ctx, el, p)
	slots.End() // the server's slot is not held over the writes to the API server
	if p.apiErr != nil {
		return ctrl.Result{}, p.apiErr
	}
	if res, paused := r.paused(req, p); paused {
		return res, nil
	}
	if err := r.patchStatus(ctx, original, el, p); err != nil {
		return ctrl.Result{}, err
	}
	return r.schedule(req, p, next)
}

// reconcileNormal syncs the request and closes it when its expiry has passed. It returns when
// the next pass is due, or zero for never.
func (r *PamElevationReconciler) reconcileNormal(ctx context.Context, el *pamv1.PamElevation, p *pass) time.Duration {
	expiry, hasExpiry := el.Expiry()
	if hasExpiry {
		el.Status.ExpiresAt = &expiry
	} else {
		el.Status.ExpiresAt = nil
	}
	if isClosed(el) {
		return 0 // the request has ended in PAM: nothing is left to do, ever
	}
	if el.Status.RequestID == "" && el.Spec.RequestID != "" {
		el.Status.RequestID = requestIDOf(el)
	}

	owner, err := r.trackedElsewhere(ctx, el)
	if err != nil {
		p.apiErr = err
		return 0
	}
	if owner != "" {
		p.problem = &problem{reason: pamv1.ReasonDuplicateRequest, stalled: true,
			message: fmt.Sprintf("PamElevation %s already tracks this request; this object never calls PAM for it", owner)}
		return 0
	}

	expired := hasExpiry && !p.now.Before(expiry.Time)
	closeNow := expired || el.Spec.Closed
	if closeNow && awaitsCreate(el) && el.Status.RequestCreateTime == nil {
		// Never asked for: nothing was made, and nothing will be.
		p.markClosed(closeReason(el), "No request was made in PAM")
		return 0
	}
	server, err := r.server(ctx, el, closeNow)
	if err != nil {
		p.failConnect(err)
		if r.endedByPAMExpiry(ctx, el, p) || !hasExpiry || !tracksRequest(el) {
			return 0
		}
		// Refused or broken until a person acts, it still owes the close at expiry.
		return max(expiry.Sub(p.now), time.Millisecond)
	}
	if awaitsCreate(el) && !r.ensureCreated(ctx, el, server, p, closeNow) {
		r.endedByPAMExpiry(ctx, el, p)
		return r.retryCreateAt(el, p, expiry, hasExpiry)
	}
	// A pass that closes reads the request live, before the close or after it, so a sync that
	// is due as well is left to it. A pass that finds a list of the server's requests newer
	// than its last read takes it, as it costs no call: the sweep queues the elevations a new
	// list changes.
	if !closeNow && (!p.now.Before(r.nextSync(el)) || r.Connector.Batcher(server).Fresher(r.syncedUpTo(el), pam.BatchSince(p.now))) {
		if !r.syncBatched(ctx, el, server, p) || p.requestClosed(el) {
			r.endedByPAMExpiry(ctx, el, p)
			return 0
		}
	}

	if closeNow {
		p.closing = true
		if !r.closeVia(ctx, el, server, p, closeReason(el)) {
			r.endedByPAMExpiry(ctx, el, p)
		}
		return 0
	}

	// The periodic sync is the sweep's (syncsweep.go): an idle elevation waits for it outside
	// the queue, which holds it only until its expiry. One whose request waits for a grant is
	// read sooner, on its own schedule.
	if pendingReason(el) != "" {
		next := r.nextSync(el).Sub(p.now)
		if hasExpiry && !expiry.Time.After(r.nextSync(el)) {
			p.closing, next = true, expiry.Sub(p.now)
		}
		return max(next, time.Millisecond)
	}
	if !hasExpiry {
		return 0
	}
	p.closing = true
	return max(expiry.Sub(p.now), time.Millisecond)
}

// patchStatus derives the conditions from what the pass learned and writes the status once,
// only when it changed.
func (r *PamElevationReconciler) patchStatus(ctx context.Context, original, el *pamv1.PamElevation, p *pass) error {
	setConditions(el, p)
	if p.written != nil {
		original = p.written
	}
	if equality.Semantic.DeepEqual(original.Status, el.Status) {
		return nil
	}
	// An object whose finalizer another pass just removed is gone: nothing is left to report.
	return client.IgnoreNotFound(r.Status().Patch(ctx, el, client.MergeFrom(original)))
}

// setDefaults fills in what was left unset.
func (r *PamElevationReconciler) setDefaults() {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.SyncInterval <= 0 {
		r.SyncInterval = DefaultSyncInterval
	}
	if r.MaxRetryDelay <= 0 {
		r.MaxRetryDelay = DefaultMaxRetryDelay
	}
	if r.ClockSkewMargin <= 0 {
		r.ClockSkewMargin = DefaultClockSkewMargin
	}
	r.retries = errorBackoff(r.MaxRetryDelay)
}

// server returns the elevation's server once it may be used for the pass. A namespace the
// server does not allow, or no longer allows, still closes what it tracks — closing only
// removes access — but reads and takes nothing new (DESIGN.md, "Behaviour").
func (r *PamElevationReconciler) server(ctx context.Context, el *pamv1.PamElevation, closing bool) (pamv1.ServerObject, error) {
	server, err := r.Connector.Server(ctx, el)
	if err != nil || (closing && tracksRequest(el)) {
		return server, err
	}
	if err := r.Connector.CheckNamespaceAllowed(ctx, server, el.Namespace); err != nil {
		return nil, err
	}
	return server, nil
}

// closeReason is why the operator closes el's request now: its deletion, spec.closed, or its
// expiry.
func closeReason(el *pamv1.PamElevation) string {
	switch {
	case !el.DeletionTimestamp.IsZero():
		return pamv1.ReasonDeleted
	case el.Spec.Closed:
		return pamv1.ReasonCloseRequested
	}
	return pamv1.ReasonExpired
}

// requestIDOf is the request the elevation tracks, in the lower case PAM's examples use: the one
// recorded in its status, else the one its spec names; "" for one whose create has not been
// answered yet.
func requestIDOf(el *pamv1.PamElevation) string {
	if el.Status.RequestID != "" {
		return el.Status.RequestID
	}
	id, err := pam.NormalizeID(el.Spec.RequestID)
	if err != nil {
		return el.Spec.RequestID // admission validates the form; pam rejects it again if not
	}
	return id
}
