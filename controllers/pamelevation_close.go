package controllers

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/pam"
)

// reconcileDelete closes the request of an object being deleted and only then releases it.
func (r *PamElevationReconciler) reconcileDelete(ctx context.Context, req reconcile.Request, el *pamv1.PamElevation) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(el, pamv1.ElevationFinalizer) {
		return ctrl.Result{}, nil
	}
	log := ctrl.LoggerFrom(ctx)

	switch {
	case el.Spec.DeletionPolicy == pamv1.DeletionPolicyOrphan:
		log.Info("Releasing PamElevation without closing its PAM request", "requestID", el.Spec.RequestID, "deletionPolicy", el.Spec.DeletionPolicy)
		r.Recorder.Eventf(el, nil, corev1.EventTypeNormal, pamv1.ReasonOrphaned, "Release",
			"Released without closing PAM request %s (deletionPolicy Orphan)", el.Spec.RequestID)
		return ctrl.Result{}, r.removeFinalizer(ctx, req, el)
	case isClosed(el):
		return ctrl.Result{}, r.removeFinalizer(ctx, req, el)
	}

	original := el.DeepCopy()
	p := &pass{now: r.Clock.Now()}
	if pc, err := r.connect(ctx, el); err != nil {
		p.fail(err)
	} else if r.closeRequest(ctx, el, pc, p, pamv1.ReasonDeleted) {
		// One write: the object goes away with the finalizer, so its status is not worth a patch.
		return ctrl.Result{}, r.removeFinalizer(ctx, req, el)
	}
	if err := r.patchStatus(ctx, original, el, p); err != nil {
		return ctrl.Result{}, err
	}
	return r.schedule(req, p, 0)
}

// closeRequest ends the request in PAM and reports whether it is confirmed ended. It first reads
// the request: after a crash, a lost answer or a stale cache the request may already be closed,
// and a close is never sent for a request PAM lists as ended.
func (r *PamElevationReconciler) closeRequest(ctx context.Context, el *pamv1.PamElevation, pc pam.Client, p *pass, reason string) bool {
	if p.synced == nil {
		if !r.sync(ctx, el, pc, p) {
			return false
		}
	}
	if isClosed(el) {
		return true
	}
	if p.synced.Status == pam.StatusClosing {
		// PAM is already ending it: wait for Closed rather than send a second close.
		p.problem = &problem{reason: pamv1.ReasonClosing, message: "PAM is closing the request; waiting for it to report Closed"}
		return false
	}

	log := ctrl.LoggerFrom(ctx).WithValues("requestID", el.Spec.RequestID, "reason", reason)
	log.Info("Closing PAM request")
	start := time.Now()
	err := pc.Close(ctx, normalizedID(el))
	if err == nil {
		log.Info("Closed PAM request", "duration", time.Since(start).Round(time.Millisecond))
		r.Recorder.Eventf(el, nil, corev1.EventTypeNormal, pamv1.ConditionClosed, "Close",
			"Closed PAM request %s (HTTP 200, %s)", el.Spec.RequestID, closeCause(reason))
		el.Status.RequestStatus = string(pam.StatusClosed)
		markClosed(el, reason, p.now)
		return true
	}

	log.Info("Closing PAM request failed", "error", err.Error(), "class", pam.ClassOf(err).String())
	r.Recorder.Eventf(el, nil, corev1.EventTypeWarning, pamv1.ReasonCloseFailed, "Close",
		"Closing PAM request %s failed: %s", el.Spec.RequestID, err.Error())

	// What PAM answers to closing an already closed or unknown request is not documented: a
	// definite answer other than 401/403 is confirmed by reading the request again.
	if class := pam.ClassOf(err); class == pam.ClassOther || class == pam.ClassNotFound {
		p.synced = nil
		if r.sync(ctx, el, pc, p) && isClosed(el) {
			return true
		}
		if p.problem != nil {
			return false
		}
	}
	p.failClose(err)
	return false
}

// sync reads the request from PAM and mirrors its state. A request PAM has ended is marked
// Closed with reason EndedInPAM. It reports whether the read succeeded.
func (r *PamElevationReconciler) sync(ctx context.Context, el *pamv1.PamElevation, pc pam.Client, p *pass) bool {
	req, err := pc.Get(ctx, normalizedID(el))
	if err != nil {
		p.fail(err)
		return false
	}
	p.synced = req
	now := metav1.NewTime(p.now)
	el.Status.RequestStatus = string(req.Status)
	el.Status.LastSyncTime = &now
	if req.Status.Ended() && !isClosed(el) {
		ctrl.LoggerFrom(ctx).Info("PAM request ended in PAM", "requestID", el.Spec.RequestID, "requestStatus", req.Status)
		r.Recorder.Eventf(el, nil, corev1.EventTypeNormal, pamv1.ReasonEndedInPAM, "Sync",
			"PAM reports request %s %s", el.Spec.RequestID, req.Status)
		markClosed(el, pamv1.ReasonEndedInPAM, p.now)
	}
	return true
}

// connect resolves the elevation's server and returns a client for it.
func (r *PamElevationReconciler) connect(ctx context.Context, el *pamv1.PamElevation) (pam.Client, error) {
	server, err := r.Connector.GetServer(ctx, el)
	if err != nil {
		return nil, err
	}
	return r.Connector.Connect(ctx, server)
}

// removeFinalizer releases the object. The optimistic lock makes a concurrent change (say, a
// user switching deletionPolicy) win and come back through another pass.
func (r *PamElevationReconciler) removeFinalizer(ctx context.Context, req reconcile.Request, el *pamv1.PamElevation) error {
	patch := client.MergeFromWithOptions(el.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(el, pamv1.ElevationFinalizer)
	if err := r.Patch(ctx, el, patch); err != nil {
		return client.IgnoreNotFound(err)
	}
	r.retries.Forget(req)
	return nil
}

func normalizedID(el *pamv1.PamElevation) string {
	id, err := pam.NormalizeID(el.Spec.RequestID)
	if err != nil {
		return el.Spec.RequestID // admission validates the form; pam rejects it again if not
	}
	return id
}

func closeCause(reason string) string {
	if reason == pamv1.ReasonExpired {
		return "expiry reached"
	}
	return "object deleted"
}
