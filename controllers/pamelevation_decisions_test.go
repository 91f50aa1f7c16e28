package controllers

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/credentials"
	"github.com/pam-operator/pam-operator/internal/pam"
	"github.com/pam-operator/pam-operator/internal/pam/pamtest"
	"github.com/pam-operator/pam-operator/pamapi"
)

// The reconciler's decisions, driven through Reconcile with PAM's answers scripted by a fake
// pam.Client and the objects held by controller-runtime's fake client: no API server, no
// emulator. What needs the API server's own behaviour (admission, watches, the cache, the
// releaser) is tested in the envtest suites.

const (
	unitRequestID  = "5ec10e61-cdd1-404e-a18e-740467d87dbf"
	unitRetryCap   = 10 * time.Second
	unitSkewMargin = time.Minute
)

var unitNow = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

// answers scripts PAM: each Get returns the next state (the last one repeats), or err.
type answers struct {
	gets   []pamapi.RequestStatus
	getErr error
	close  error
}

func (a *answers) client() *pamtest.Client {
	n := 0
	return &pamtest.Client{
		GetFunc: func(_ context.Context, id string) (*pam.Request, error) {
			if a.getErr != nil {
				return nil, a.getErr
			}
			st := a.gets[min(n, len(a.gets)-1)]
			n++
			return &pam.Request{ID: id, Status: st}, nil
		},
		CloseFunc: func(context.Context, string) error { return a.close },
	}
}

// fakeConnector connects every elevation to one server through one fake client.
type fakeConnector struct {
	server *pamv1.PamServer
	client pam.Client
	// serverErr and namespaceErr, when set, refuse the server, or the elevation's namespace.
	serverErr, namespaceErr error
}

func (f *fakeConnector) Server(context.Context, *pamv1.PamElevation) (pamv1.ServerObject, error) {
	if f.serverErr != nil {
		return nil, f.serverErr
	}
	return f.server, nil
}
func (f *fakeConnector) CheckNamespaceAllowed(context.Context, pamv1.ServerObject, string) error {
	return f.namespaceErr
}
func (f *fakeConnector) Connect(context.Context, pamv1.ServerObject) (pam.Client, error) {
	return f.client, nil
}
func (f *fakeConnector) ConnectAhead(ctx context.Context, s pamv1.ServerObject) (pam.Client, func() (pam.Client, error)) {
	return nil, func() (pam.Client, error) { return f.Connect(ctx, s) }
}
func (f *fakeConnector) Batcher(pamv1.ServerObject) *pam.Batcher { return &pam.Batcher{} }

// unitElevation is an elevation that has read its request open, unless changed by mutate.
func unitElevation(mutate ...func(*pamv1.PamElevation)) *pamv1.PamElevation {
	synced := metav1.NewTime(unitNow.Add(-10 * time.Second))
	el := &pamv1.PamElevation{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "el", UID: "uid-1",
			CreationTimestamp: metav1.NewTime(unitNow.Add(-time.Hour)), Finalizers: []string{pamv1.ElevationFinalizer}},
		Spec:   pamv1.PamElevationSpec{RequestID: unitRequestID, ServerRef: pamv1.ServerReference{Name: "pam"}},
		Status: pamv1.PamElevationStatus{RequestStatus: string(pamapi.StatusActive), LastSyncTime: &synced},
	}
	for _, m := range mutate {
		m(el)
	}
	return el
}

func deleting(el *pamv1.PamElevation) {
	el.DeletionTimestamp = &metav1.Time{Time: unitNow.Add(-time.Second)}
}

// unitReconciler is a reconciler over a fake client holding el, whose PAM is pc.
func unitReconciler(t *testing.T, el *pamv1.PamElevation, pc pam.Client) (*PamElevationReconciler, client.Client) {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := pamv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(el.DeepCopy()).
		WithStatusSubresource(&pamv1.PamElevation{}).Build()
	server := &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "pam", UID: "server-uid"}}
	r := &PamElevationReconciler{Client: c, APIReader: c, Connector: &fakeConnector{server: server, client: pc},
		Recorder: events.NewFakeRecorder(100), Clock: clocktesting.NewFakePassiveClock(unitNow),
		SyncInterval: time.Minute, MaxRetryDelay: unitRetryCap, ClockSkewMargin: unitSkewMargin}
	r.setDefaults()
	r.index = &elevationIndex{indexer: toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, elevationIndexers()),
		synced: func() bool { return true }}
	if err := r.index.indexer.Add(el.DeepCopy()); err != nil {
		t.Fatal(err)
	}
	return r, c
}

// reconcileOnce runs one pass, and the passes it queues at once: the read that confirms a close
// PAM accepted, and the release handed on to the releaser (which does not run here).
func reconcileOnce(t *testing.T, r *PamElevationReconciler) (ctrl.Result, error) {
	t.Helper()
	req := reconcile.Request{NamespacedName: client.ObjectKey{Namespace: "team", Name: "el"}}
	res, err := r.Reconcile(context.Background(), req)
	for range 2 {
		if err != nil || res.RequeueAfter != time.Nanosecond {
			break
		}
		res, err = r.Reconcile(context.Background(), req)
	}
	return res, err
}

// outcome is what a test checks after a pass.
type outcome struct {
	// calls are the PAM operations made, in order.
	calls []string
	// released: the finalizer is gone (the fake client then deletes a deleted object).
	released bool
	// ready, stalled and closed are the reasons of Ready, Stalled and Closed ("" when absent,
	// or, for Stalled, not True).
	ready, stalled, closed string
	// closedTrue reports whether Closed is True.
	closedTrue bool
	// requeueAfter is the pass's requeue.
	requeueAfter time.Duration
}

func observe(t *testing.T, c client.Client, pc *pamtest.Client, res ctrl.Result) outcome {
	t.Helper()
	out := outcome{calls: pc.Calls(), requeueAfter: res.RequeueAfter}
	el := &pamv1.PamElevation{}
	err := c.Get(context.Background(), client.ObjectKey{Namespace: "team", Name: "el"}, el)
	switch {
	case apierrors.IsNotFound(err):
		out.released = true
		return out
	case err != nil:
		t.Fatal(err)
	}
	out.released = len(el.Finalizers) == 0
	reason := func(condType string) string {
		if c := meta.FindStatusCondition(el.Status.Conditions, condType); c != nil {
			return c.Reason
		}
		return ""
	}
	out.ready, out.closed = reason(pamv1.ConditionReady), reason(pamv1.ConditionClosed)
	if meta.IsStatusConditionTrue(el.Status.Conditions, pamv1.ConditionStalled) {
		out.stalled = reason(pamv1.ConditionStalled)
	}
	out.closedTrue = meta.IsStatusConditionTrue(el.Status.Conditions, pamv1.ConditionClosed)
	return out
}

// expectOutcome runs one pass over el with PAM answering as script says, and compares what it
// did with want.
func expectOutcome(t *testing.T, el *pamv1.PamElevation, script answers, want outcome) {
	t.Helper()
	pc := script.client()
	r, c := unitReconciler(t, el, pc)
	res, err := reconcileOnce(t, r)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, observe(t, c, pc, res), cmp.AllowUnexported(outcome{})); diff != "" {
		t.Errorf("outcome (-want +got):\n%s", diff)
	}
}

func pamErr(class pam.Class, code int, retryAfter time.Duration) error {
	return &pam.Error{Op: "close", Class: class, StatusCode: code, RetryAfter: retryAfter}
}

// TestDeletionDecisions: what a pass over a deleted elevation does for each answer of PAM.
func TestDeletionDecisions(t *testing.T) {
	for _, tc := range []struct {
		reason string
		el     *pamv1.PamElevation
		pam    answers
		want   outcome
	}{
		{
			reason: "a request read open is closed, and released once a read confirms it Closed",
			el:     unitElevation(deleting),
			pam:    answers{gets: []pamapi.RequestStatus{pamapi.StatusActive, pamapi.StatusClosed}},
			want:   outcome{calls: []string{"get", "close", "get"}, released: true},
		},
		{
			reason: "a request PAM already lists as ended is released without a close",
			el:     unitElevation(deleting),
			pam:    answers{gets: []pamapi.RequestStatus{pamapi.StatusExpired}},
			want:   outcome{calls: []string{"get"}, released: true},
		},
		{
			reason: "while PAM shows the request Closing, no second close is sent and the object waits",
			el:     unitElevation(deleting),
			pam:    answers{gets: []pamapi.RequestStatus{pamapi.StatusClosing}},
			want: outcome{calls: []string{"get"}, ready: pamv1.ReasonClosing, closed: pamv1.ReasonClosing,
				requeueAfter: initialRetryDelay},
		},
		{
			reason: "a 200 that a read shows did not close the request is a failed close, retried",
			el:     unitElevation(deleting),
			pam:    answers{gets: []pamapi.RequestStatus{pamapi.StatusActive}},
			want: outcome{calls: []string{"get", "close", "get"}, ready: pamv1.ReasonCloseFailed, closed: pamv1.ReasonActive,
				requeueAfter: initialRetryDelay},
		},
		{
			reason: "a 503 is retried after the server's Retry-After",
			el:     unitElevation(deleting),
			pam:    answers{gets: []pamapi.RequestStatus{pamapi.StatusActive}, close: pamErr(pam.ClassRetryable, http.StatusServiceUnavailable, 5*time.Second)},
			want: outcome{calls: []string{"get", "close"}, ready: pamv1.ReasonPAMUnavailable, closed: pamv1.ReasonActive,
				requeueAfter: 5 * time.Second},
		},
		{
			reason: "a Retry-After beyond --max-retry-delay is capped by it",
			el:     unitElevation(deleting),
			pam:    answers{gets: []pamapi.RequestStatus{pamapi.StatusActive}, close: pamErr(pam.ClassRetryable, http.StatusTooManyRequests, time.Hour)},
			want: outcome{calls: []string{"get", "close"}, ready: pamv1.ReasonPAMUnavailable, closed: pamv1.ReasonActive,
				requeueAfter: unitRetryCap},
		},
		{
			reason: "a refused login stalls the object, which keeps its finalizer",
			el:     unitElevation(deleting),
			pam:    answers{getErr: pamErr(pam.ClassAuth, http.StatusUnauthorized, 0)},
			want: outcome{calls: []string{"get"}, ready: pamv1.ReasonUnauthorized, stalled: pamv1.ReasonUnauthorized,
				closed: pamv1.ReasonActive, requeueAfter: initialRetryDelay},
		},
		{
			reason: "a request PAM does not list fails closed: stalled, finalizer kept",
			el:     unitElevation(deleting),
			pam:    answers{getErr: pamErr(pam.ClassNotFound, http.StatusNotFound, 0)},
			want: outcome{calls: []string{"get"}, ready: pamv1.ReasonRequestNotFound, stalled: pamv1.ReasonRequestNotFound,
				closed: pamv1.ReasonActive, requeueAfter: initialRetryDelay},
		},
		{
			reason: "a 404 to the close is confirmed by a read before anything is concluded",
			el:     unitElevation(deleting),
			pam: answers{gets: []pamapi.RequestStatus{pamapi.StatusActive, pamapi.StatusClosed},
				close: pamErr(pam.ClassNotFound, http.StatusNotFound, 0)},
			want: outcome{calls: []string{"get", "close", "get"}, released: true},
		},
		{
			reason: "PAM unreachable past its own ExpirationTime and the skew margin: MIM ended it, released",
			el: unitElevation(deleting, func(el *pamv1.PamElevation) {
				el.Status.RequestExpirationTime = &metav1.Time{Time: unitNow.Add(-2 * unitSkewMargin)}
			}),
			pam:  answers{getErr: pamErr(pam.ClassRetryable, 0, 0)},
			want: outcome{calls: []string{"get"}, released: true},
		},
		{
			reason: "PAM unreachable before its ExpirationTime: the object waits",
			el: unitElevation(deleting, func(el *pamv1.PamElevation) {
				el.Status.RequestExpirationTime = &metav1.Time{Time: unitNow.Add(time.Hour)}
			}),
			pam: answers{getErr: pamErr(pam.ClassRetryable, 0, 0)},
			want: outcome{calls: []string{"get"}, ready: pamv1.ReasonPAMUnavailable, closed: pamv1.ReasonActive,
				requeueAfter: initialRetryDelay},
		},
		{
			reason: "deletionPolicy Orphan releases without calling PAM",
			el: unitElevation(deleting, func(el *pamv1.PamElevation) {
				el.Spec.DeletionPolicy = pamv1.DeletionPolicyOrphan
			}),
			want: outcome{released: true},
		},
	} {
		t.Run(tc.reason, func(t *testing.T) { expectOutcome(t, tc.el, tc.pam, tc.want) })
	}
}

// TestSyncAndExpiryDecisions: what a pass over a live elevation does.
func TestSyncAndExpiryDecisions(t *testing.T) {
	neverRead := func(el *pamv1.PamElevation) {
		el.Finalizers, el.Status = nil, pamv1.PamElevationStatus{}
	}
	for _, tc := range []struct {
		reason string
		el     *pamv1.PamElevation
		pam    answers
		want   outcome
	}{
		{
			reason: "a first pass adds the finalizer, reads the request and reports it open",
			el:     unitElevation(neverRead),
			pam:    answers{gets: []pamapi.RequestStatus{pamapi.StatusActive}},
			want:   outcome{calls: []string{"get"}, ready: pamv1.ReasonActive, closed: pamv1.ReasonActive},
		},
		{
			reason: "a request pending approval is not Ready, reason PendingApproval",
			el:     unitElevation(neverRead),
			pam:    answers{gets: []pamapi.RequestStatus{pamapi.StatusPendingApproval}},
			want: outcome{calls: []string{"get"}, ready: pamv1.ReasonPendingApproval, closed: pamv1.ReasonPendingApproval,
				requeueAfter: 10 * time.Second}, // read sooner than the periodic sync: someone may be waiting
		},
		{
			reason: "a request waiting for MFA is not Ready, reason PendingMFA",
			el:     unitElevation(neverRead),
			pam:    answers{gets: []pamapi.RequestStatus{pamapi.StatusPendingMFA}},
			want: outcome{calls: []string{"get"}, ready: pamv1.ReasonPendingMFA, closed: pamv1.ReasonPendingMFA,
				requeueAfter: 10 * time.Second}, // read sooner than the periodic sync: someone may be waiting
		},
		{
			reason: "a request PAM is processing is not Ready, reason Processing",
			el:     unitElevation(neverRead),
			pam:    answers{gets: []pamapi.RequestStatus{pamapi.StatusProcessing}},
			want: outcome{calls: []string{"get"}, ready: pamv1.ReasonProcessing, closed: pamv1.ReasonProcessing,
				requeueAfter: 10 * time.Second}, // read sooner than the periodic sync: someone may be waiting
		},
		{
			reason: "a rejected request is Closed and Stalled, reason Rejected, with no close sent",
			el:     unitElevation(neverRead),
			pam:    answers{gets: []pamapi.RequestStatus{pamapi.StatusRejected}},
			want: outcome{calls: []string{"get"}, ready: pamv1.ReasonRejected, stalled: pamv1.ReasonRejected,
				closed: pamv1.ReasonRejected, closedTrue: true},
		},
		{
			reason: "spec.closed closes the request at once and keeps the object, reason CloseRequested",
			el:     unitElevation(func(el *pamv1.PamElevation) { el.Spec.Closed = true }),
			pam:    answers{gets: []pamapi.RequestStatus{pamapi.StatusActive, pamapi.StatusClosed}},
			want: outcome{calls: []string{"get", "close", "get"}, ready: pamv1.ReasonCloseRequested,
				closed: pamv1.ReasonCloseRequested, closedTrue: true},
		},
		{
			reason: "spec.closed on a request pending approval withdraws it",
			el: unitElevation(func(el *pamv1.PamElevation) {
				el.Spec.Closed = true
				el.Status.RequestStatus = string(pamapi.StatusPendingApproval)
			}),
			pam: answers{gets: []pamapi.RequestStatus{pamapi.StatusPendingApproval, pamapi.StatusClosed}},
			want: outcome{calls: []string{"get", "close", "get"}, ready: pamv1.ReasonCloseRequested,
				closed: pamv1.ReasonCloseRequested, closedTrue: true},
		},
		{
			reason: "a request PAM ended by itself is Closed, reason EndedInPAM, with no close sent",
			el:     unitElevation(neverRead),
			pam:    answers{gets: []pamapi.RequestStatus{pamapi.StatusExpired}},
			want:   outcome{calls: []string{"get"}, ready: pamv1.ReasonEndedInPAM, closed: pamv1.ReasonEndedInPAM, closedTrue: true},
		},
		{
			reason: "at its expiry the request is closed, reason Expired",
			el: unitElevation(func(el *pamv1.PamElevation) {
				el.Spec.ExpiresAt = &metav1.Time{Time: unitNow.Add(-time.Second)}
			}),
			pam:  answers{gets: []pamapi.RequestStatus{pamapi.StatusActive, pamapi.StatusClosed}},
			want: outcome{calls: []string{"get", "close", "get"}, ready: pamv1.ReasonExpired, closed: pamv1.ReasonExpired, closedTrue: true},
		},
		{
			reason: "before its expiry nothing is called, and the pass is due at the expiry",
			el: unitElevation(func(el *pamv1.PamElevation) {
				el.Spec.ExpiresAt = &metav1.Time{Time: unitNow.Add(30 * time.Second)}
				el.Status.Conditions = []metav1.Condition{
					{Type: pamv1.ConditionReady, Status: metav1.ConditionTrue, Reason: pamv1.ReasonActive, Message: "The request is open in PAM"},
					{Type: pamv1.ConditionClosed, Status: metav1.ConditionFalse, Reason: pamv1.ReasonActive, Message: "The request is open in PAM"},
				}
			}),
			want: outcome{ready: pamv1.ReasonActive, closed: pamv1.ReasonActive, requeueAfter: 30 * time.Second},
		},
	} {
		t.Run(tc.reason, func(t *testing.T) { expectOutcome(t, tc.el, tc.pam, tc.want) })
	}
}

// TestRetryScheduleBacksOffToTheCap: consecutive failures wait twice as long each time, from
// 500 ms, never longer than --max-retry-delay; a success resets the schedule.
func TestRetryScheduleBacksOffToTheCap(t *testing.T) {
	a := &answers{getErr: pamErr(pam.ClassRetryable, http.StatusBadGateway, 0)}
	pc := a.client()
	r, _ := unitReconciler(t, unitElevation(func(el *pamv1.PamElevation) { el.Status = pamv1.PamElevationStatus{} }), pc)
	var got []time.Duration
	for range 7 {
		res, err := reconcileOnce(t, r)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, res.RequeueAfter)
	}
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, unitRetryCap, unitRetryCap}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("backoff (-want +got):\n%s", diff)
	}

	a.getErr, a.gets = nil, []pamapi.RequestStatus{pamapi.StatusActive}
	if _, err := reconcileOnce(t, r); err != nil {
		t.Fatal(err)
	}
	// The next sync is due a sync interval later, and fails again.
	r.Clock.(*clocktesting.FakePassiveClock).SetTime(unitNow.Add(2 * r.SyncInterval))
	a.getErr = pamErr(pam.ClassRetryable, http.StatusBadGateway, 0)
	res, err := reconcileOnce(t, r)
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter != initialRetryDelay {
		t.Errorf("after a success, the next failure waits %s, want %s", res.RequeueAfter, initialRetryDelay)
	}
}

// TestRefusalDecisions: what a server or namespace refused by policy does to a pass. Closing is
// never refused for a request an elevation tracks, except by the administrator's switches;
// one that never read its request tracks nothing and is released without a close.
func TestRefusalDecisions(t *testing.T) {
	namespaceRefused := &credentials.Error{Reason: pamv1.ReasonNamespaceNotAllowed, Message: "not this namespace"}
	serverRefused := &credentials.Error{Reason: pamv1.ReasonServerNotAllowed, Message: "no PamServers"}
	neverRead := func(el *pamv1.PamElevation) { el.Status = pamv1.PamElevationStatus{} }
	expired := func(el *pamv1.PamElevation) { el.Spec.ExpiresAt = &metav1.Time{Time: unitNow.Add(-time.Second)} }
	closes := []pamapi.RequestStatus{pamapi.StatusActive, pamapi.StatusClosed}
	for _, tc := range []struct {
		reason  string
		el      *pamv1.PamElevation
		refusal *fakeConnector
		// failures are the failed passes before this one.
		failures int
		want     outcome
	}{
		{
			reason:  "a namespace that lost access still closes what it tracks on deletion",
			el:      unitElevation(deleting),
			refusal: &fakeConnector{namespaceErr: namespaceRefused},
			want:    outcome{calls: []string{"get", "close", "get"}, released: true},
		},
		{
			reason:  "a namespace that lost access still closes what it tracks at expiry",
			el:      unitElevation(expired),
			refusal: &fakeConnector{namespaceErr: namespaceRefused},
			want:    outcome{calls: []string{"get", "close", "get"}, ready: pamv1.ReasonExpired, closed: pamv1.ReasonExpired, closedTrue: true},
		},
		{
			reason:   "a namespace that lost access reads nothing before the expiry, and its retries wait no longer than it",
			el:       unitElevation(func(el *pamv1.PamElevation) { el.Spec.ExpiresAt = &metav1.Time{Time: unitNow.Add(time.Second)} }),
			refusal:  &fakeConnector{namespaceErr: namespaceRefused},
			failures: 3, // the backoff is at 4 s
			want: outcome{ready: pamv1.ReasonNamespaceNotAllowed, stalled: pamv1.ReasonNamespaceNotAllowed, closed: pamv1.ReasonActive,
				requeueAfter: time.Second},
		},
		{
			reason:  "an elevation never allowed is released on deletion without a call",
			el:      unitElevation(deleting, neverRead),
			refusal: &fakeConnector{namespaceErr: namespaceRefused},
			want:    outcome{released: true},
		},
		{
			reason:  "--namespaced-servers=false stops the close of a tracked request: the finalizer holds",
			el:      unitElevation(deleting),
			refusal: &fakeConnector{serverErr: serverRefused},
			want: outcome{ready: pamv1.ReasonServerNotAllowed, stalled: pamv1.ReasonServerNotAllowed, closed: pamv1.ReasonActive,
				requeueAfter: initialRetryDelay},
		},
		{
			reason:  "--namespaced-servers=false releases an elevation that never read its request",
			el:      unitElevation(deleting, neverRead),
			refusal: &fakeConnector{serverErr: serverRefused},
			want:    outcome{released: true},
		},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			pc := (&answers{gets: closes}).client()
			r, c := unitReconciler(t, tc.el, pc)
			connector := r.Connector.(*fakeConnector)
			connector.serverErr, connector.namespaceErr = tc.refusal.serverErr, tc.refusal.namespaceErr
			for range tc.failures {
				r.retries.When(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(tc.el)})
			}
			res, err := reconcileOnce(t, r)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, observe(t, c, pc, res), cmp.AllowUnexported(outcome{})); diff != "" {
				t.Errorf("outcome (-want +got):\n%s", diff)
			}
		})
	}
}

// TestClosingAfterTheCloseIsNotTheEnd: PAM answers 200 to the close and then lists the request
// Closing — in MIM a removal workflow can stall there with the membership in place. The object
// keeps its finalizer, no second close is sent while PAM shows Closing, and it is released (or,
// at expiry, marked Closed for its expiry) only once PAM lists Closed.
func TestClosingAfterTheCloseIsNotTheEnd(t *testing.T) {
	for _, tc := range []struct {
		reason string
		el     *pamv1.PamElevation
		want   []outcome
	}{
		{
			reason: "deleted",
			el:     unitElevation(deleting),
			want: []outcome{
				{calls: []string{"get", "close", "get"}, ready: pamv1.ReasonClosing, closed: pamv1.ReasonClosing, requeueAfter: initialRetryDelay},
				{calls: []string{"get"}, ready: pamv1.ReasonClosing, closed: pamv1.ReasonClosing, requeueAfter: 2 * initialRetryDelay},
				{calls: []string{"get"}, released: true},
			},
		},
		{
			reason: "expired",
			el:     unitElevation(func(el *pamv1.PamElevation) { el.Spec.ExpiresAt = &metav1.Time{Time: unitNow.Add(-time.Second)} }),
			want: []outcome{
				{calls: []string{"get", "close", "get"}, ready: pamv1.ReasonClosing, closed: pamv1.ReasonClosing, requeueAfter: initialRetryDelay},
				{calls: []string{"get"}, ready: pamv1.ReasonClosing, closed: pamv1.ReasonClosing, requeueAfter: 2 * initialRetryDelay},
				{calls: []string{"get"}, ready: pamv1.ReasonExpired, closed: pamv1.ReasonExpired, closedTrue: true},
			},
		},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			script := &answers{gets: []pamapi.RequestStatus{pamapi.StatusActive, pamapi.StatusClosing, pamapi.StatusClosing, pamapi.StatusClosed}}
			pc := script.client()
			r, c := unitReconciler(t, tc.el, pc)
			for i, want := range tc.want {
				before := len(pc.Calls())
				res, err := reconcileOnce(t, r)
				if err != nil {
					t.Fatal(err)
				}
				got := observe(t, c, pc, res)
				got.calls = got.calls[before:]
				if diff := cmp.Diff(want, got, cmp.AllowUnexported(outcome{})); diff != "" {
					t.Errorf("pass %d (-want +got):\n%s", i+1, diff)
				}
			}
		})
	}
}

// TestUnknownRequestStatusDecisions: a state PAM does not document is shown as it came and never
// taken as ended: it is closed like an open request, and no close is confirmed by it.
func TestUnknownRequestStatusDecisions(t *testing.T) {
	const exploded pamapi.RequestStatus = "Exploded"
	expired := func(el *pamv1.PamElevation) { el.Spec.ExpiresAt = &metav1.Time{Time: unitNow.Add(-time.Second)} }
	for _, tc := range []struct {
		reason string
		el     *pamv1.PamElevation
		pam    answers
		want   outcome
	}{
		{
			reason: "on deletion it is closed, and a read that still shows it does not release the object",
			el:     unitElevation(deleting),
			pam:    answers{gets: []pamapi.RequestStatus{exploded}},
			want: outcome{calls: []string{"get", "close", "get"}, ready: pamv1.ReasonCloseFailed, closed: pamv1.ReasonPending,
				requeueAfter: initialRetryDelay},
		},
		{
			reason: "a close PAM refused, then a read that shows it, is a failed close, not an end",
			el:     unitElevation(deleting),
			pam:    answers{gets: []pamapi.RequestStatus{exploded}, close: pamErr(pam.ClassOther, http.StatusBadRequest, 0)},
			want: outcome{calls: []string{"get", "close", "get"}, ready: pamv1.ReasonCloseFailed, stalled: pamv1.ReasonCloseFailed,
				closed: pamv1.ReasonPending, requeueAfter: initialRetryDelay},
		},
		{
			reason: "at expiry it is closed, and stays open until PAM shows an end",
			el:     unitElevation(expired),
			pam:    answers{gets: []pamapi.RequestStatus{exploded}},
			want: outcome{calls: []string{"get", "close", "get"}, ready: pamv1.ReasonCloseFailed, closed: pamv1.ReasonPending,
				requeueAfter: initialRetryDelay},
		},
	} {
		t.Run(tc.reason, func(t *testing.T) { expectOutcome(t, tc.el, tc.pam, tc.want) })
	}

	t.Run("a sync shows it as it came, and says it is unknown", func(t *testing.T) {
		pc := (&answers{gets: []pamapi.RequestStatus{exploded}}).client()
		r, c := unitReconciler(t, unitElevation(func(el *pamv1.PamElevation) { el.Status = pamv1.PamElevationStatus{} }), pc)
		if _, err := reconcileOnce(t, r); err != nil {
			t.Fatal(err)
		}
		el := &pamv1.PamElevation{}
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: "team", Name: "el"}, el); err != nil {
			t.Fatal(err)
		}
		if el.Status.RequestStatus != string(exploded) {
			t.Errorf("status.requestStatus = %q, want %q", el.Status.RequestStatus, exploded)
		}
		closed := meta.FindStatusCondition(el.Status.Conditions, pamv1.ConditionClosed)
		if closed == nil || closed.Status != metav1.ConditionFalse || !strings.Contains(closed.Message, "not documented") {
			t.Errorf("Closed = %+v, want False, saying the state is not documented", closed)
		}
	})
}
