package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/pam"
	"github.com/pam-operator/pam-operator/pamapi"
)

// closeVia closes the request through the server. The close goes out at once, with the client
// built from the credentials last read, while they are read again alongside (unless they were
// read within the last second): neither the close nor, once it succeeded, the release of the
// object waits for that read. A close that failed with credentials the read shows have changed
// is sent again with the new ones.
func (r *PamElevationReconciler) closeVia(ctx context.Context, el *pamv1.PamElevation, server pamv1.ServerObject, p *pass, reason string) bool {
	if accepted, ok := r.reads.closeAcceptedAt(el.UID); ok {
		p.confirming = true
		if r.burst.hold(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(el)}) {
			p.heldByBurst = true
			return false
		}
		return r.confirmClose(ctx, el, server, p, reason, accepted)
	}
	ahead, current := r.Connector.ConnectAhead(ctx, server)
	if ahead == nil {
		pc, err := current()
		if err != nil {
			p.failConnect(err)
			return false
		}
		r.noteEscrow(el, pc, "Close")
		return r.closeRequest(ctx, el, pc, p, reason)
	}
	r.noteEscrow(el, ahead, "Close")
	if r.closeRequest(ctx, el, ahead, p, reason) {
		return true // a read alongside, if one was started, refreshes the client for the next call
	}
	if p.refusedSlot || p.confirming {
		return false
	}
	latest, err := current()
	switch {
	case err != nil:
		// The credentials can no longer be read: that, not the close, is what a person must fix.
		p.problem = nil
		p.failConnect(err)
		return false
	case latest == ahead:
		return false
	}
	ctrl.LoggerFrom(ctx).Info("Credentials changed during the close; closing with the new ones", "requestID", requestIDOf(el))
	p.problem, p.synced, p.syncedLive = nil, nil, false
	r.noteEscrow(el, latest, "Close")
	return r.closeRequest(ctx, el, latest, p, reason)
}

// closeRequest ends the request in PAM and reports whether it is confirmed ended.
//
// A close is sent at once for a request this process last read open, with no close sent since
// and PAM's own expiry still ahead. Otherwise — after a crash, a close whose answer was lost, or
// a pass working from a stale copy of an object another pass released — it reads the request
// first, and sends no close for a request PAM lists as ended. That read is the authority; the
// object is not read again from the API server, since a close this or another pass made shows in
// PAM first. After a 200 the pass ends with p.confirming set: a pass of its own reads the
// request again (confirmClose), so that a server that answers 200 without closing is caught.
func (r *PamElevationReconciler) closeRequest(ctx context.Context, el *pamv1.PamElevation, pc pam.Client, p *pass, reason string) bool {
	// A batched read may be a sync interval old; unless this process knows the request open,
	// the decision to send a close needs a live one.
	if (p.synced == nil || !p.syncedLive) && !r.knownOpen(el, p.now) {
		if !r.sync(ctx, el, pc, p) {
			return false
		}
	}
	// PAM lists it as ended: nothing is left to close, whether or not the object records it
	// (another pass may have closed it and released the object already).
	if p.requestClosed(el) || (p.synced != nil && p.synced.Status.Ended()) {
		return true
	}
	if p.synced != nil && p.synced.Status == pamapi.StatusClosing {
		// PAM is already ending it: wait for Closed rather than send a second close.
		p.problem = &problem{reason: pamv1.ReasonClosing, message: "PAM is closing the request; waiting for it to report Closed"}
		return false
	}
	log := ctrl.LoggerFrom(ctx).WithValues("requestID", requestIDOf(el), "reason", reason)
	log.Info("Closing PAM request")
	sentBefore := r.reads.closeSentAt(el.UID)
	r.reads.closeSent(el.UID, r.Clock.Now())
	start := r.Clock.Now()
	err := pc.Close(ctx, requestIDOf(el))
	if errors.Is(err, pam.ErrServerBusy) {
		// Not sent: the last read still tells whether the request is open.
		r.reads.restoreCloseSent(el.UID, sentBefore)
		p.fail(err)
		return false
	}
	// Again once answered: a list asked for while the close was on its way may still show the
	// request open, and must not count as newer than it.
	r.reads.closeSent(el.UID, r.Clock.Now())
	if err == nil {
		audit(ctx, el, "close", requestedRole(el), "", "accepted (HTTP 200)")
		log.V(1).Info("PAM accepted the close", "duration", r.Clock.Since(start).Round(time.Millisecond))
		r.reads.acceptClose(el.UID, r.Clock.Now())
		p.confirming = true
		return false
	}
	audit(ctx, el, "close", requestedRole(el), "", "failed: "+err.Error())

	observeCloseFailure(err)
	log.Info("Closing PAM request failed", "error", err.Error(), "class", pam.ClassOf(err).String())
	r.Recorder.Eventf(el, nil, corev1.EventTypeWarning, pamv1.ReasonCloseFailed, "Close",
		"Closing PAM request %s failed: %s", requestIDOf(el), err.Error())

	// What PAM answers to closing an already closed or unknown request is not documented: a
	// definite answer other than 401/403 is confirmed by reading the request again.
	if class := pam.ClassOf(err); class == pam.ClassOther || class == pam.ClassNotFound {
		p.synced = nil
		if r.sync(ctx, el, pc, p) && (p.requestClosed(el) || p.synced.Status.Ended()) {
			return true
		}
		if p.problem != nil {
			return false
		}
	}
	p.failClose(err)
	return false
}

// confirmClose reads the request after PAM answered 200 to this process's close at accepted:
// Closed, Expired or Rejected confirm the close; Closing means PAM accepted it but has not
// removed the access yet — in MIM a removal workflow can stall there with the membership in
// place — so the object waits for Closed, with no second close; a request still open means the
// answer was not true, and a later pass closes it again.
//
// The read is kept off the path of the closes: it is a pass of its own, which waits for the
// server's call slots behind the closes (confirmPriority). What a security team measures in a
// mass revocation is when the last access is gone; the confirmations, the Events and the
// releases come after.
func (r *PamElevationReconciler) confirmClose(ctx context.Context, el *pamv1.PamElevation, server pamv1.ServerObject, p *pass, reason string, accepted time.Time) bool {
	after, ok := r.readAfterClose(ctx, el, server, p, accepted)
	if !ok {
		return false // the next pass tries the read again; the close is not sent twice
	}
	p.confirming = false
	r.reads.closeConfirmed(el.UID)
	log := ctrl.LoggerFrom(ctx).WithValues("requestID", requestIDOf(el), "reason", reason)
	el.Status.RequestStatus = string(after.Status)
	if !after.Status.Ended() && after.Status != pamapi.StatusClosing {
		msg := fmt.Sprintf("PAM answered 200 to Close but still lists the request %s", after.Status)
		observeCloseUnconfirmed()
		log.Info("Close not confirmed", "requestStatus", after.Status)
		r.Recorder.Eventf(el, nil, corev1.EventTypeWarning, pamv1.ReasonCloseFailed, "Close",
			"Closing PAM request %s not confirmed: %s", requestIDOf(el), msg)
		p.problem = &problem{reason: pamv1.ReasonCloseFailed, message: msg}
		return false
	}
	observeCloseSuccess(el, reason, accepted)
	if after.Status == pamapi.StatusClosing {
		log.Info("PAM accepted the close and lists the request Closing")
		r.Recorder.Eventf(el, nil, corev1.EventTypeNormal, pamv1.ReasonClosing, "Close",
			"PAM accepted the close of request %s (HTTP 200, %s) and lists it Closing; waiting for Closed", requestIDOf(el), closeCause(reason))
		p.problem = &problem{reason: pamv1.ReasonClosing, message: "PAM accepted the close and is closing the request; waiting for it to report Closed"}
		return false
	}
	log.Info("Closed PAM request", "requestStatus", after.Status)
	r.Recorder.Eventf(el, nil, corev1.EventTypeNormal, pamv1.ConditionClosed, "Close",
		"Closed PAM request %s (HTTP 200, %s; PAM now lists it %s)", requestIDOf(el), closeCause(reason), after.Status)
	p.markClosed(reason, closedMessage(reason, after.Status))
	return true
}

// readAfterClose reads the request as PAM lists it after accepted. While other passes wait for
// the server's call slots — a mass revocation, whose confirmations queue behind its closes — it
// takes the request from the server's shared list: one list, asked for after the closes it
// confirms, answers them all. Alone, it reads the request on its own, which costs PAM less
// than a list of every request of the account.
func (r *PamElevationReconciler) readAfterClose(ctx context.Context, el *pamv1.PamElevation, server pamv1.ServerObject, p *pass, accepted time.Time) (*pam.Request, bool) {
	// The client the close used will do: a read needs no newer credentials, and reading the
	// Secret for each of thousands of confirmations would load the API server for nothing.
	var pc pam.Client
	connect := func(context.Context) (pam.Client, error) {
		if pc != nil {
			return pc, nil
		}
		ahead, current := r.Connector.ConnectAhead(ctx, server)
		if pc = ahead; pc == nil {
			var err error
			if pc, err = current(); err != nil {
				return nil, err
			}
		}
		r.noteEscrow(el, pc, "Close")
		return pc, nil
	}
	if batcher := r.Connector.Batcher(server); batcher.Contended() || batcher.Fresher(accepted, pam.BatchSince(p.now)) {
		req, at, found, err := batcher.Lookup(ctx, connect, requestIDOf(el), accepted, pam.BatchSince(p.now), r.Clock.Now)
		if cf, ok := errors.AsType[*pam.ConnectError](err); ok {
			p.failConnect(cf.Err)
			return nil, false
		}
		switch {
		case err == nil && found:
			r.reads.store(el.UID, at, readOpen(req.Status))
			return &req, true
		case err != nil && !errors.Is(err, pam.ErrAnswerTooLarge):
			p.fail(err)
			return nil, false
		}
	}
	if _, err := connect(ctx); err != nil {
		p.failConnect(err)
		return nil, false
	}
	at := r.Clock.Now()
	req, err := pc.Get(ctx, requestIDOf(el))
	if err != nil {
		if !errors.Is(err, pam.ErrServerBusy) {
			ctrl.LoggerFrom(ctx).Info("PAM accepted the close; reading the request back failed", "requestID", requestIDOf(el), "error", err.Error())
		}
		p.fail(err)
		return nil, false
	}
	r.reads.store(el.UID, at, readOpen(req.Status))
	return req, true
}

// knownOpen reports whether a close can go out without reading the request first: this process
// read it open within the last two sync intervals, has sent no close for it since, and PAM's
// own ExpirationTime is not near. Should PAM have ended it meanwhile all the same (a person
// closed it in MIM), the close is answered with 200 or an error, and either is confirmed by a
// read before anything is concluded.
func (r *PamElevationReconciler) knownOpen(el *pamv1.PamElevation, now time.Time) bool {
	at, ok := r.reads.openAt(el.UID)
	if !ok || now.Sub(at) > 2*r.SyncInterval {
		return false
	}
	t := el.Status.RequestExpirationTime
	return t == nil || now.Add(r.ClockSkewMargin).Before(t.Time)
}

// endedByPAMExpiry bounds how long a deletion can wait for PAM: once the request's own
// ExpirationTime, as last read from PAM, has passed by more than the clock-skew margin, MIM has
// ended the access by itself, so the request counts as closed even while PAM cannot confirm it.
func (r *PamElevationReconciler) endedByPAMExpiry(ctx context.Context, el *pamv1.PamElevation, p *pass) bool {
	t := el.Status.RequestExpirationTime
	if p.problem == nil || t == nil || !p.now.After(t.Add(r.ClockSkewMargin)) {
		return false
	}
	msg := fmt.Sprintf("MIM ended the elevation at its ExpirationTime %s; PAM could not be reached to confirm (%s)",
		t.UTC().Format(time.RFC3339), p.problem.reason)
	ctrl.LoggerFrom(ctx).Info("PAM request passed its own expiry", "requestID", requestIDOf(el), "expirationTime", t.UTC(), "problem", p.problem.reason)
	r.Recorder.Eventf(el, nil, corev1.EventTypeNormal, pamv1.ReasonEndedInPAM, "Sync", "PAM request %s: %s", requestIDOf(el), msg)
	p.markClosed(pamv1.ReasonEndedInPAM, msg)
	p.problem = nil
	return true
}

func closeCause(reason string) string {
	switch reason {
	case pamv1.ReasonExpired:
		return "expiry reached"
	case pamv1.ReasonCloseRequested:
		return "spec.closed set"
	}
	return "object deleted"
}
