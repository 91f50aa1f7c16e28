package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/credentials"
	"github.com/pam-operator/pam-operator/internal/pam"
	"github.com/pam-operator/pam-operator/pamapi"
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
	case r.requestEnded(el):
		return r.releaseNow(ctx, req, el)
	}

	// A duplicate never owned the request: deleting it must not revoke access the original tracks.
	owner, err := r.trackedElsewhere(ctx, el)
	if err != nil {
		return ctrl.Result{}, err
	}
	if owner != "" {
		log.Info("Releasing duplicate PamElevation without closing the request", "requestID", el.Spec.RequestID, "trackedBy", owner)
		r.Recorder.Eventf(el, nil, corev1.EventTypeNormal, pamv1.ReasonDuplicateRequest, "Release",
			"Released without closing PAM request %s: PamElevation %s tracks it", el.Spec.RequestID, owner)
		return ctrl.Result{}, r.removeFinalizer(ctx, req, el)
	}

	original := el.DeepCopy()
	p := &pass{now: r.Clock.Now(), closing: true}
	server, err := r.server(ctx, el)
	if ce, ok := credentials.AsError(err); ok && ce.Reason == pamv1.ReasonNamespaceNotAllowed && el.Status.LastSyncTime == nil {
		// Refused from the start, it never tracked the request, so there is nothing it could
		// close. One that was allowed and synced before keeps its finalizer: fail closed.
		log.Info("Releasing PamElevation its server never allowed", "requestID", el.Spec.RequestID)
		r.Recorder.Eventf(el, nil, corev1.EventTypeWarning, pamv1.ReasonNamespaceNotAllowed, "Release",
			"Released without closing PAM request %s: %s", el.Spec.RequestID, ce.Message)
		return ctrl.Result{}, r.removeFinalizer(ctx, req, el)
	}
	if err != nil {
		p.failConnect(err)
	} else if r.closeVia(ctx, el, server, p, pamv1.ReasonDeleted) {
		return r.releaseNext(req, el)
	}
	if p.apiErr != nil {
		return ctrl.Result{}, p.apiErr
	}
	if r.endedByPAMExpiry(ctx, el, p) {
		return r.releaseNext(req, el)
	}
	if err := r.patchStatus(ctx, original, el, p); err != nil {
		return ctrl.Result{}, err
	}
	return r.schedule(req, p, 0)
}

// closeVia closes the request through the server. The close goes out at once, with the client
// built from the credentials last read, while they are read again alongside (unless they were
// read within the last second): neither the close nor, once it succeeded, the release of the
// object waits for that read. A close that failed with credentials the read shows have changed
// is sent again with the new ones.
func (r *PamElevationReconciler) closeVia(ctx context.Context, el *pamv1.PamElevation, server pamv1.ServerObject, p *pass, reason string) bool {
	ahead, current := r.Connector.ConnectAhead(ctx, server)
	if ahead == nil {
		pc, err := current()
		if err != nil {
			p.failConnect(err)
			return false
		}
		return r.closeRequest(ctx, el, pc, p, reason)
	}
	if r.closeRequest(ctx, el, ahead, p, reason) {
		return true // a read alongside, if one was started, refreshes the client for the next call
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
	ctrl.LoggerFrom(ctx).Info("Credentials changed during the close; closing with the new ones", "requestID", el.Spec.RequestID)
	p.problem, p.synced, p.syncedLive = nil, nil, false
	return r.closeRequest(ctx, el, latest, p, reason)
}

// closeRequest ends the request in PAM and reports whether it is confirmed ended.
//
// A close is sent at once for a request this process last read open, with no close sent since
// and PAM's own expiry still ahead. Otherwise — after a crash, a close whose answer was lost, or
// a pass working from a stale copy of an object another pass released — it reads the request
// first, and sends no close for a request PAM lists as ended. That read is the authority; the
// object is not read again from the API server, since a close this or another pass made shows in
// PAM first. After a 200 it reads the request again, so that a server that answers 200 without
// closing is caught.
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
	if isClosed(el) || (p.synced != nil && p.synced.Status.Ended()) {
		return true
	}
	if p.synced != nil && p.synced.Status == pamapi.StatusClosing {
		// PAM is already ending it: wait for Closed rather than send a second close.
		p.problem = &problem{reason: pamv1.ReasonClosing, message: "PAM is closing the request; waiting for it to report Closed"}
		return false
	}
	log := ctrl.LoggerFrom(ctx).WithValues("requestID", el.Spec.RequestID, "reason", reason)
	log.Info("Closing PAM request")
	r.lastSynced.closeSent(el.UID, r.Clock.Now())
	start := time.Now()
	err := pc.Close(ctx, normalizedID(el))
	// Again once answered: a list asked for while the close was on its way may still show the
	// request open, and must not count as newer than it.
	r.lastSynced.closeSent(el.UID, r.Clock.Now())
	if err == nil {
		return r.confirmClose(ctx, el, pc, p, reason, time.Since(start))
	}

	observeCloseFailure(err)
	log.Info("Closing PAM request failed", "error", err.Error(), "class", pam.ClassOf(err).String())
	r.Recorder.Eventf(el, nil, corev1.EventTypeWarning, pamv1.ReasonCloseFailed, "Close",
		"Closing PAM request %s failed: %s", el.Spec.RequestID, err.Error())

	// What PAM answers to closing an already closed or unknown request is not documented: a
	// definite answer other than 401/403 is confirmed by reading the request again.
	if class := pam.ClassOf(err); class == pam.ClassOther || class == pam.ClassNotFound {
		p.synced = nil
		if r.sync(ctx, el, pc, p) && (isClosed(el) || p.synced.Status.Ended()) {
			return true
		}
		if p.problem != nil {
			return false
		}
	}
	p.failClose(err)
	return false
}

// confirmClose reads the request after PAM answered 200: Closed, Expired, Rejected or Closing
// confirm the close; a request still open means the answer was not true.
func (r *PamElevationReconciler) confirmClose(ctx context.Context, el *pamv1.PamElevation, pc pam.Client, p *pass, reason string, took time.Duration) bool {
	log := ctrl.LoggerFrom(ctx).WithValues("requestID", el.Spec.RequestID, "reason", reason)
	after, err := pc.Get(ctx, normalizedID(el))
	if err != nil {
		// The close was accepted; the next pass reads the request before anything else.
		observeCloseUnconfirmed()
		log.Info("PAM accepted the close; reading the request back failed", "error", err.Error())
		p.fail(err)
		return false
	}
	el.Status.RequestStatus = string(after.Status)
	if !after.Status.Ended() && after.Status != pamapi.StatusClosing {
		msg := fmt.Sprintf("PAM answered 200 to Close but still lists the request %s", after.Status)
		observeCloseUnconfirmed()
		log.Info("Close not confirmed", "requestStatus", after.Status)
		r.Recorder.Eventf(el, nil, corev1.EventTypeWarning, pamv1.ReasonCloseFailed, "Close",
			"Closing PAM request %s not confirmed: %s", el.Spec.RequestID, msg)
		p.problem = &problem{reason: pamv1.ReasonCloseFailed, message: msg}
		return false
	}
	observeCloseSuccess(el, reason, r.Clock.Now())
	log.Info("Closed PAM request", "requestStatus", after.Status, "duration", took.Round(time.Millisecond))
	r.Recorder.Eventf(el, nil, corev1.EventTypeNormal, pamv1.ConditionClosed, "Close",
		"Closed PAM request %s (HTTP 200, %s; PAM now lists it %s)", el.Spec.RequestID, closeCause(reason), after.Status)
	markClosed(el, reason, p.now)
	return true
}

// knownOpen reports whether a close can go out without reading the request first: this process
// read it open within the last two sync intervals, has sent no close for it since, and PAM's
// own ExpirationTime is not near. Should PAM have ended it meanwhile all the same (a person
// closed it in MIM), the close is answered with 200 or an error, and either is confirmed by a
// read before anything is concluded.
func (r *PamElevationReconciler) knownOpen(el *pamv1.PamElevation, now time.Time) bool {
	at, ok := r.lastSynced.openAt(el.UID)
	if !ok || now.Sub(at) > 2*r.SyncInterval {
		return false
	}
	t := el.Status.RequestExpirationTime
	return t == nil || now.Add(r.ClockSkewMargin).Before(t.Time)
}

// closedElsewhere reads the object from the API server, bypassing the cache, and reports
// whether nothing is left to close: the object is gone, or it already records the close.
func (r *PamElevationReconciler) closedElsewhere(ctx context.Context, el *pamv1.PamElevation) (bool, error) {
	live := &pamv1.PamElevation{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(el), live); err != nil {
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	}
	if isClosed(live) {
		el.Status = live.Status
		return true, nil
	}
	return false, nil
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
	ctrl.LoggerFrom(ctx).Info("PAM request passed its own expiry", "requestID", el.Spec.RequestID, "expirationTime", t.UTC(), "problem", p.problem.reason)
	r.Recorder.Eventf(el, nil, corev1.EventTypeNormal, pamv1.ReasonEndedInPAM, "Sync", "PAM request %s: %s", el.Spec.RequestID, msg)
	markClosedWith(el, pamv1.ReasonEndedInPAM, msg, p.now)
	p.problem = nil
	return true
}

// sync reads the request from PAM and mirrors its state. A request PAM has ended is marked
// Closed with reason EndedInPAM. It reports whether the read succeeded.
func (r *PamElevationReconciler) sync(ctx context.Context, el *pamv1.PamElevation, pc pam.Client, p *pass) bool {
	req, err := pc.Get(ctx, normalizedID(el))
	if err != nil {
		p.fail(err)
		return false
	}
	return r.applySync(ctx, el, req, p.now, true, p)
}

// syncBatched is sync through the server's shared batch: the periodic sync of many elevations
// costs one list per server and interval. A request the batch does not hold, or one never read
// before, is read alone. Credentials are read only for a call of its own: a sync the batch
// answers makes none.
func (r *PamElevationReconciler) syncBatched(ctx context.Context, el *pamv1.PamElevation, server pamv1.ServerObject, p *pass) bool {
	conn := &lazyClient{connector: r.Connector, server: server}
	syncAlone := func() bool {
		pc, err := conn.get(ctx)
		if err != nil {
			p.failConnect(err)
			return false
		}
		return r.sync(ctx, el, pc, p)
	}
	// A first read goes alone: a burst of new elevations would otherwise ask for a new list of
	// every request of the account for each of them, as each needs one newer than itself.
	if el.Status.LastSyncTime == nil {
		return syncAlone()
	}
	notBefore, since := r.syncedUpTo(el), pam.BatchSince(p.now)
	req, at, found, err := r.Connector.Batcher(server).Lookup(ctx, conn.get, normalizedID(el), notBefore, since, r.Clock.Now)
	if cf, ok := errors.AsType[*pam.ConnectError](err); ok {
		p.failConnect(cf.Err)
		return false
	}
	// A list too large even in its narrowest windows leaves each request to be read alone.
	if err != nil && !errors.Is(err, pam.ErrAnswerTooLarge) {
		p.fail(err)
		return false
	}
	if !found {
		return syncAlone()
	}
	return r.applySync(ctx, el, &req, at, false, p)
}

// syncedUpTo is the time a read must be newer than to tell el anything new: its last read, else
// just before its creation. The status keeps whole seconds, so a time read back from it counts
// from a second later, else the batch it came from would be taken again and again.
func (r *PamElevationReconciler) syncedUpTo(el *pamv1.PamElevation) time.Time {
	upTo := el.CreationTimestamp.Add(-time.Second)
	if t, ok := r.lastSynced.load(el.UID); ok && t.After(upTo) {
		upTo = t
	}
	if t := el.Status.LastSyncTime; t != nil && t.Add(time.Second).After(upTo) {
		upTo = t.Add(time.Second)
	}
	return upTo
}

// expirationOf is PAM's ExpirationTime of the request in the whole seconds the status keeps.
func expirationOf(req *pam.Request) *metav1.Time {
	if req.ExpirationTime.IsZero() {
		return nil
	}
	return &metav1.Time{Time: req.ExpirationTime.Truncate(time.Second)}
}

// readOpen reports whether a read that found the request in this state found it open.
func readOpen(status pam.RequestStatus) bool {
	return !status.Ended() && status != pamapi.StatusClosing
}

// changesStatus reports whether recording the request, read at at, changes el's status. A sync
// that learned nothing new is not written: at thousands of elevations, a status write per
// elevation and interval would use up the API budget. The time is kept in memory for
// scheduling, and written with any change, or once it is statusSyncRefresh old.
func changesStatus(el *pamv1.PamElevation, req *pam.Request, at time.Time) bool {
	return el.Status.RequestStatus != string(req.Status) || !expirationOf(req).Equal(el.Status.RequestExpirationTime) ||
		el.Status.LastSyncTime == nil || at.Sub(el.Status.LastSyncTime.Time) >= statusSyncRefresh ||
		(req.Status.Ended() && !isClosed(el))
}

// applySync records the request as PAM showed it at the time at.
func (r *PamElevationReconciler) applySync(ctx context.Context, el *pamv1.PamElevation, req *pam.Request, at time.Time, live bool, p *pass) bool {
	p.synced, p.syncedLive = req, live
	r.lastSynced.store(el.UID, at, readOpen(req.Status))
	if changesStatus(el, req, at) {
		el.Status.LastSyncTime = &metav1.Time{Time: at}
	}
	expiration := expirationOf(req)
	el.Status.RequestStatus = string(req.Status)
	el.Status.RequestExpirationTime = expiration
	if req.Status.Ended() && !isClosed(el) {
		// The cache may not show the close this operator just recorded: the live object decides
		// whether PAM ended the request by itself.
		if done, err := r.closedElsewhere(ctx, el); err != nil || done {
			p.apiErr = err
			return err == nil
		}
		ctrl.LoggerFrom(ctx).Info("PAM request ended in PAM", "requestID", el.Spec.RequestID, "requestStatus", req.Status)
		r.Recorder.Eventf(el, nil, corev1.EventTypeNormal, pamv1.ReasonEndedInPAM, "Sync",
			"PAM reports request %s %s", el.Spec.RequestID, req.Status)
		markClosed(el, pamv1.ReasonEndedInPAM, p.now)
	}
	return true
}

// trackedElsewhere returns the namespace/name of another PamElevation that owns the same
// request, "" when this one does. The owner is the one that read the request from PAM first;
// between two that both have or have not, the older, then the first by name. An owner that has
// synced is never displaced by a newcomer, whatever the timestamps' one-second resolution says.
func (r *PamElevationReconciler) trackedElsewhere(ctx context.Context, el *pamv1.PamElevation) (string, error) {
	id := normalizedID(el)
	self := client.ObjectKeyFromObject(el).String()
	var owner string
	err := r.index.byRequest(id, func(other *pamv1.PamElevation) {
		if owner != "" {
			return
		}
		key := client.ObjectKeyFromObject(other).String()
		if other.UID == el.UID || key == self {
			return
		}
		if ownsBefore(other, key, el, self) {
			owner = key
		}
	})
	return owner, err
}

func ownsBefore(a *pamv1.PamElevation, aKey string, b *pamv1.PamElevation, bKey string) bool {
	aSynced, bSynced := a.Status.LastSyncTime != nil, b.Status.LastSyncTime != nil
	if aSynced != bSynced {
		return aSynced
	}
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return aKey < bKey
}

// server returns the elevation's server, once its namespace is known to be allowed to use it.
func (r *PamElevationReconciler) server(ctx context.Context, el *pamv1.PamElevation) (pamv1.ServerObject, error) {
	server, err := r.Connector.Server(ctx, el)
	if err != nil {
		return nil, err
	}
	if err := r.Connector.CheckNamespaceAllowed(ctx, server, el.Namespace); err != nil {
		return nil, err
	}
	return server, nil
}

// lazyClient connects to a server on first use, once per pass: credentials are read only when
// a call to PAM is about to be made.
type lazyClient struct {
	connector Connector
	server    pamv1.ServerObject
	connected bool
	client    pam.Client
	err       error
}

func (l *lazyClient) get(ctx context.Context) (pam.Client, error) {
	if !l.connected {
		l.client, l.err = l.connector.Connect(ctx, l.server)
		l.connected = true
	}
	return l.client, l.err
}

// removeFinalizer releases the object. The optimistic lock makes the patch fail on a stale copy,
// so the finalizer only goes from the version this pass saw; a concurrent change (say, a user
// switching deletionPolicy) wins and comes back through another pass. Only the metadata is asked
// for back: the object is on its way out, and its whole body, encoded by the API server and
// decoded here, would cost both of them CPU for nothing in a mass revocation.
func (r *PamElevationReconciler) removeFinalizer(ctx context.Context, req reconcile.Request, el *pamv1.PamElevation) error {
	released := elevationMetadata()
	el.ObjectMeta.DeepCopyInto(&released.ObjectMeta)
	patch := client.MergeFromWithOptions(released.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(released, pamv1.ElevationFinalizer)
	if err := r.Patch(ctx, released, patch); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	r.released(req, el)
	return nil
}

// elevationMetadata is an elevation's metadata alone, to patch: the answer carries no body.
func elevationMetadata() *metav1.PartialObjectMetadata {
	obj := &metav1.PartialObjectMetadata{}
	obj.SetGroupVersionKind(pamv1.GroupVersion.WithKind("PamElevation"))
	return obj
}

// released forgets what was kept about el once it is released: its retries and its read record.
func (r *PamElevationReconciler) released(req reconcile.Request, el *pamv1.PamElevation) {
	r.retries.Forget(req)
	r.lastSynced.delete(el.UID)
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
