package controllers

// Reading a request from PAM, alone or from the server's shared list, and mirroring it.

import (
	"context"
	"errors"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/pam"
	"github.com/pam-operator/pam-operator/pamapi"
)

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

// sync reads the request from PAM and mirrors its state. A request PAM has ended is marked
// Closed with reason EndedInPAM. It reports whether the read succeeded.
func (r *PamElevationReconciler) sync(ctx context.Context, el *pamv1.PamElevation, pc pam.Client, p *pass) bool {
	req, err := pc.Get(ctx, requestIDOf(el))
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
	conn := &lazyClient{connector: r.Connector, server: server,
		onConnect: func(pc pam.Client) { r.noteEscrow(el, pc, "Sync") }}
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
	req, at, found, err := r.Connector.Batcher(server).Lookup(ctx, conn.get, requestIDOf(el), notBefore, since, r.Clock.Now)
	if cf, ok := errors.AsType[*pam.ConnectError](err); ok {
		p.failConnect(cf.Err)
		return false
	}
	// A list too large even in windows of a second leaves each request to be read alone.
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
	if t, ok := r.reads.load(el.UID); ok && t.After(upTo) {
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
	r.reads.store(el.UID, at, readOpen(req.Status))
	if changesStatus(el, req, at) {
		el.Status.LastSyncTime = &metav1.Time{Time: at}
	}
	expiration := expirationOf(req)
	if req.Status == pamapi.StatusActive && el.Status.RequestStatus != string(pamapi.StatusActive) {
		observeActivation(el, at)
	}
	el.Status.RequestStatus = string(req.Status)
	el.Status.RequestExpirationTime = expiration
	if req.Status.Ended() && !p.requestClosed(el) {
		// The cache may not show the close this operator just recorded: the live object decides
		// whether PAM ended the request by itself.
		if done, err := r.closedElsewhere(ctx, el); err != nil || done {
			p.apiErr = err
			return err == nil
		}
		if p.closing && r.reads.sentClose(el.UID) {
			// The close this process sent, which PAM accepted as Closing, has completed.
			reason := closeReason(el)
			p.markClosed(reason, closedMessage(reason, req.Status))
			return true
		}
		reason := pamv1.ReasonEndedInPAM
		if req.Status == pamapi.StatusRejected {
			reason = pamv1.ReasonRejected
		}
		ctrl.LoggerFrom(ctx).Info("PAM request ended in PAM", "requestID", requestIDOf(el), "requestStatus", req.Status)
		r.Recorder.Eventf(el, nil, corev1.EventTypeNormal, reason, "Sync",
			"PAM reports request %s %s", requestIDOf(el), req.Status)
		p.markClosed(reason, closedMessage(reason, req.Status))
	}
	return true
}

// lazyClient connects to a server on first use, once per pass: credentials are read only when
// a call to PAM is about to be made.
type lazyClient struct {
	connector Connector
	server    pamv1.ServerObject
	connected bool
	client    pam.Client
	err       error
	// onConnect, if set, is told of the client before its first use.
	onConnect func(pam.Client)
}

func (l *lazyClient) get(ctx context.Context) (pam.Client, error) {
	if !l.connected {
		l.client, l.err = l.connector.Connect(ctx, l.server)
		l.connected = true
		if l.err == nil && l.onConnect != nil {
			l.onConnect(l.client)
		}
	}
	return l.client, l.err
}
