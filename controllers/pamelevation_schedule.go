package controllers

// When a pass comes back: its timer, its retry, or a call slot of its server.

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
)

// retryCreateAt is when a create-mode pass that got no request looks again: the problem's
// schedule, or its expiry, when nothing is wrong (a request the create found).
func (r *PamElevationReconciler) retryCreateAt(el *pamv1.PamElevation, p *pass, expiry metav1.Time, hasExpiry bool) time.Duration {
	if p.problem != nil || p.closed != nil || !hasExpiry {
		return 0
	}
	return max(expiry.Sub(p.now), time.Millisecond)
}

// Queue priorities, in the work queue and for a server's call slots: a pass that closes goes
// before everything else waiting, then the reads that confirm closes; the periodic syncs go
// last.
const (
	closePriority   = 100
	confirmPriority = 0
	syncPriority    = handler.LowPriority
)

// schedule turns the outcome of a pass into a requeue: the backoff after a problem, honouring
// the server's Retry-After and the cap, else the next timer; a close comes before syncs.
func (r *PamElevationReconciler) schedule(req reconcile.Request, p *pass, next time.Duration) (ctrl.Result, error) {
	priority := p.priority()
	if p.problem == nil {
		r.retries.Forget(req)
		if next > 0 {
			// next counts from the start of the pass; the queue counts from now. An expiry is
			// due at its instant, not a pass's duration later.
			next = max(next-r.Clock.Since(p.now), time.Millisecond)
		}
		return ctrl.Result{RequeueAfter: next, Priority: &priority}, nil
	}
	delay := min(max(r.retries.When(req), p.problem.retryAfter), r.MaxRetryDelay)
	if next > 0 {
		delay = min(delay, next)
	}
	return ctrl.Result{RequeueAfter: delay, Priority: &priority}, nil
}

// waitForSlot ends a pass refused a call slot, or whose confirmation waits for a burst of
// deletions to end: it learned nothing, so nothing is written, and it is queued again when a
// slot frees (slotWaits) or the burst ends (deletionBurst). The retry cap only bounds a wake-up
// lost all the same.
func (r *PamElevationReconciler) waitForSlot(p *pass) ctrl.Result {
	priority := p.priority()
	return ctrl.Result{RequeueAfter: r.MaxRetryDelay, Priority: &priority}
}

// priority is where the pass's next one goes in the queue: a close before a confirmation, and
// both before the syncs.
func (p *pass) priority() int {
	switch {
	case p.confirming:
		return confirmPriority
	case p.closing:
		return closePriority
	}
	return syncPriority
}

// paused ends a pass that learned nothing to write: it was refused a call slot, its
// confirmation is held, or PAM has just accepted its close.
func (r *PamElevationReconciler) paused(req reconcile.Request, p *pass) (ctrl.Result, bool) {
	switch {
	case p.refusedSlot || p.heldByBurst:
		return r.waitForSlot(p), true
	case p.confirming && p.problem == nil:
		return r.awaitConfirmation(req), true
	}
	return ctrl.Result{}, false
}

// awaitConfirmation ends a pass whose close PAM accepted: nothing is written yet, and the pass
// that confirms it is queued at once, behind the closes waiting, or, in a burst of deletions,
// when the burst ends (deletionBurst).
func (r *PamElevationReconciler) awaitConfirmation(req reconcile.Request) ctrl.Result {
	r.retries.Forget(req)
	priority := confirmPriority
	if r.burst.hold(req) {
		return ctrl.Result{RequeueAfter: r.MaxRetryDelay, Priority: &priority}
	}
	return ctrl.Result{RequeueAfter: time.Nanosecond, Priority: &priority}
}
