package controllers

// The deletion of an elevation: close its request, then release it.

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/credentials"
	"github.com/pam-operator/pam-operator/internal/pam"
)

// reconcileDelete closes the request of an object being deleted and only then releases it.
func (r *PamElevationReconciler) reconcileDelete(ctx context.Context, req reconcile.Request, el *pamv1.PamElevation, slots *pam.Pass, p *pass) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(el, pamv1.ElevationFinalizer) {
		return ctrl.Result{}, nil
	}
	log := ctrl.LoggerFrom(ctx)

	switch {
	case el.Spec.DeletionPolicy == pamv1.DeletionPolicyOrphan:
		log.Info("Releasing PamElevation without closing its PAM request", "requestID", requestIDOf(el), "deletionPolicy", el.Spec.DeletionPolicy)
		r.Recorder.Eventf(el, nil, corev1.EventTypeNormal, pamv1.ReasonOrphaned, "Release",
			"Released without closing PAM request %s (deletionPolicy Orphan)", requestIDOf(el))
		return ctrl.Result{}, r.removeFinalizer(ctx, req, el, unchangedSince)
	case r.requestEnded(el):
		return r.releaseEnded(ctx, req, el)
	case awaitsCreate(el) && el.Status.RequestCreateTime == nil:
		return r.releaseUncreated(ctx, req, el, "never asked PAM for its request")
	}

	// A duplicate never owned the request: deleting it must not revoke access the original tracks.
	// One whose close this process sent owned it then: the passes that confirm the close skip
	// the lookup.
	var owner string
	if _, closeSent := r.reads.closeAcceptedAt(el.UID); !closeSent {
		var err error
		if owner, err = r.trackedElsewhere(ctx, el); err != nil {
			return ctrl.Result{}, err
		}
	}
	if owner != "" {
		log.Info("Releasing duplicate PamElevation without closing the request", "requestID", requestIDOf(el), "trackedBy", owner)
		r.Recorder.Eventf(el, nil, corev1.EventTypeNormal, pamv1.ReasonDuplicateRequest, "Release",
			"Released without closing PAM request %s: PamElevation %s tracks it", requestIDOf(el), owner)
		return ctrl.Result{}, r.removeFinalizer(ctx, req, el, unchangedSince)
	}

	original := el.DeepCopy()
	p.now = r.Clock.Now()
	server, err := r.server(ctx, el, true)
	if ce, ok := credentials.AsError(err); ok && refusedByPolicy(ce.Reason) && !tracksRequest(el) {
		// Refused from the start, it never read the request, so there is nothing it could
		// close. One that tracks its request and is refused by the administrator's switches
		// keeps its finalizer: fail closed.
		log.Info("Releasing PamElevation its server never allowed", "requestID", requestIDOf(el), "reason", ce.Reason)
		r.Recorder.Eventf(el, nil, corev1.EventTypeWarning, ce.Reason, "Release",
			"Released without closing PAM request %s: %s", requestIDOf(el), ce.Message)
		return ctrl.Result{}, r.removeFinalizer(ctx, req, el, unchangedSince)
	}
	next := time.Duration(0)
	switch {
	case err != nil:
		p.failConnect(err)
	case awaitsCreate(el):
		// A create was asked for and its answer lost: release only once a list shows no
		// request was made; one found is recorded, and closed by the next pass.
		if r.noRequestMade(ctx, el, server, p) {
			return r.releaseUncreated(ctx, req, el, "asked PAM for its request, and PAM made none")
		}
		next = time.Millisecond
	case r.closeVia(ctx, el, server, p, pamv1.ReasonDeleted):
		return r.queueRelease(req, el)
	}
	slots.End()
	if p.apiErr != nil {
		return ctrl.Result{}, p.apiErr
	}
	if res, paused := r.paused(req, p); paused {
		return res, nil
	}
	if r.endedByPAMExpiry(ctx, el, p) {
		return r.queueRelease(req, el)
	}
	if err := r.patchStatus(ctx, original, el, p); err != nil {
		return ctrl.Result{}, err
	}
	return r.schedule(req, p, next)
}

// releaseUncreated releases a create-mode object being deleted for which PAM holds no request:
// there is nothing to close.
func (r *PamElevationReconciler) releaseUncreated(ctx context.Context, req reconcile.Request, el *pamv1.PamElevation, why string) (ctrl.Result, error) {
	ctrl.LoggerFrom(ctx).Info("Releasing PamElevation that "+why, "role", roleAsked(el))
	r.Recorder.Eventf(el, nil, corev1.EventTypeNormal, pamv1.ReasonDeleted, "Release", "Released: no request was made in PAM")
	return ctrl.Result{}, r.removeFinalizer(ctx, req, el, unchangedSince)
}
