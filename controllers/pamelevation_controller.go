// Package controllers holds the reconcilers of pam-operator: PamElevation, which closes PAM
// requests on deletion and at expiry, and PamServer/ClusterPamServer, which report whether a
// server configuration can be used.
package controllers

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

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
	// lastSynced holds when each request was last read from PAM, which the status records only
	// when something changed.
	lastSynced syncTimes
	// MaxConcurrentReconciles bounds parallel reconciles.
	MaxConcurrentReconciles int
	// ClockSkewMargin is how far past PAM's own ExpirationTime a request counts as ended.
	ClockSkewMargin time.Duration

	retries workqueue.TypedRateLimiter[reconcile.Request]
	// releases is the queue of the release controller (release.go), once it has started.
	releases atomic.Pointer[workqueue.TypedRateLimitingInterface[reconcile.Request]]
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
	el := &pamv1.PamElevation{}
	if err := r.Get(ctx, req.NamespacedName, el); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}

	if !el.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, req, el)
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
	p := &pass{now: r.Clock.Now()}
	next := r.reconcileNormal(ctx, el, p)
	if p.apiErr != nil {
		return ctrl.Result{}, p.apiErr
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

	server, err := r.server(ctx, el)
	if err != nil {
		p.failConnect(err)
		r.endedByPAMExpiry(ctx, el, p)
		return 0
	}
	// A pass that closes reads the request live, before the close or after it, so a sync that
	// is due as well is left to it. A pass that finds a list of the server's requests newer
	// than its last read takes it, as it costs no call: the sweep queues the elevations a new
	// list changes.
	expired := hasExpiry && !p.now.Before(expiry.Time)
	if !expired && (!p.now.Before(r.nextSync(el)) || r.Connector.Batcher(server).Fresher(r.syncedUpTo(el), pam.BatchSince(p.now))) {
		if !r.syncBatched(ctx, el, server, p) || isClosed(el) {
			r.endedByPAMExpiry(ctx, el, p)
			return 0
		}
	}

	if expired {
		p.closing = true
		if !r.closeVia(ctx, el, server, p, pamv1.ReasonExpired) {
			r.endedByPAMExpiry(ctx, el, p)
		}
		return 0
	}

	// The periodic sync is the sweep's (syncsweep.go): an idle elevation waits for it outside
	// the queue, which holds it only until its expiry.
	if !hasExpiry {
		return 0
	}
	p.closing = true
	return max(expiry.Sub(p.now), time.Millisecond)
}

// Queue priorities: a pass that closes goes before everything else waiting; the periodic syncs
// go last.
const (
	closePriority = 100
	syncPriority  = handler.LowPriority
)

// deletionStarting passes the events that show an elevation's deletion begun: the update that
// sets its deletionTimestamp, or its creation in the cache already deleting, after a restart.
var deletionStarting = predicate.Funcs{
	CreateFunc: func(e event.CreateEvent) bool { return e.Object.GetDeletionTimestamp() != nil },
	UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectOld.GetDeletionTimestamp() == nil && e.ObjectNew.GetDeletionTimestamp() != nil
	},
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
}

// deletionsFirst queues an elevation whose deletion has begun ahead of everything else.
var deletionsFirst = handler.Funcs{
	CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		if deletionStarting.Create(e) {
			addFirst(q, e.Object)
		}
	},
	UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		if deletionStarting.Update(e) {
			addFirst(q, e.ObjectNew)
		}
	},
}

func addFirst(q workqueue.TypedRateLimitingInterface[reconcile.Request], obj client.Object) {
	addAt(q, obj, closePriority)
}

// addAt queues a pass of obj at the priority, on a queue that has priorities.
func addAt(q workqueue.TypedRateLimitingInterface[reconcile.Request], obj client.Object, priority int) {
	req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(obj)}
	if pq, ok := q.(priorityqueue.PriorityQueue[reconcile.Request]); ok {
		pq.AddWithOpts(priorityqueue.AddOpts{Priority: &priority}, req)
		return
	}
	q.Add(req)
}

// schedule turns the outcome of a pass into a requeue: the backoff after a problem, honouring
// the server's Retry-After and the cap, else the next timer; a close comes before syncs.
func (r *PamElevationReconciler) schedule(req reconcile.Request, p *pass, next time.Duration) (ctrl.Result, error) {
	priority := syncPriority
	if p.closing {
		priority = closePriority
	}
	if p.problem == nil {
		r.retries.Forget(req)
		if next > 0 {
			// next counts from the start of the pass; the queue counts from now. An expiry is
			// due at its instant, not a pass's duration later.
			next = max(next-r.Clock.Since(p.now), time.Millisecond)
		}
		return ctrl.Result{RequeueAfter: next, Priority: &priority}, nil
	}
	delay := max(r.retries.When(req), p.problem.retryAfter)
	return ctrl.Result{RequeueAfter: min(delay, r.MaxRetryDelay), Priority: &priority}, nil
}

// nextSync is when the request should next be read from PAM: now while the object shows no
// read. A copy older than the status this process wrote after reading (a cache that has not
// caught up) would otherwise report the request never read, patch that over the status, and
// leave the elevation waiting for a sync nothing schedules: the sweep takes only Ready ones.
func (r *PamElevationReconciler) nextSync(el *pamv1.PamElevation) time.Time {
	if el.Status.LastSyncTime == nil {
		return time.Time{}
	}
	return r.lastSync(el).Add(r.SyncInterval)
}

// statusSyncRefresh is how old status.lastSyncTime may grow while syncs learn nothing new.
const statusSyncRefresh = time.Hour

// lastSync is when the request was last read from PAM: in memory since this process started,
// else from the status.
func (r *PamElevationReconciler) lastSync(el *pamv1.PamElevation) time.Time {
	var last time.Time
	if el.Status.LastSyncTime != nil {
		last = el.Status.LastSyncTime.Time
	}
	if t, ok := r.lastSynced.load(el.UID); ok && t.After(last) {
		last = t
	}
	return last
}

// syncTimes records, by object UID, the last read of each request from PAM: when, and whether
// it found the request open. A plain map of small values: a third of a sync.Map's size per
// entry, which counts at thousands of elevations.
type syncTimes struct {
	mu sync.Mutex
	m  map[types.UID]syncRecord
}

type syncRecord struct {
	at int64 // Unix nanoseconds; 0 when the request has not been read
	// open: the read found the request open.
	open bool
	// ended: the request has ended in PAM, as a confirmed close or a read showed, and the object
	// only waits for its release.
	ended bool
	// closeSent is when a close was last sent, in Unix nanoseconds: a read from before it no
	// longer says whether the request is open.
	closeSent int64
}

func (s *syncTimes) load(uid types.UID) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.m[uid]
	if !ok || rec.at == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, rec.at), true
}

// openAt is when the request was last read open, if it was and no close has been sent since.
func (s *syncTimes) openAt(uid types.UID) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.m[uid]
	if !ok || !rec.open || rec.closeSent >= rec.at {
		return time.Time{}, false
	}
	return time.Unix(0, rec.at), true
}

// store records a read of the request made at t.
func (s *syncTimes) store(uid types.UID, t time.Time, open bool) {
	s.update(uid, func(rec *syncRecord) { rec.at, rec.open = t.UnixNano(), open })
}

// storeIfNewer records a read made at t unless a newer read or a close since makes it stale:
// for the sweep, whose list may have been taken while a pass was reading or closing.
func (s *syncTimes) storeIfNewer(uid types.UID, t time.Time, open bool) {
	s.update(uid, func(rec *syncRecord) {
		if rec.at < t.UnixNano() && rec.closeSent < t.UnixNano() {
			rec.at, rec.open = t.UnixNano(), open
		}
	})
}

// closeSent records that a close is going out at t: whatever its outcome, the request may be
// closed now, and only a newer read can tell.
func (s *syncTimes) closeSent(uid types.UID, t time.Time) {
	s.update(uid, func(rec *syncRecord) { rec.closeSent = t.UnixNano() })
}

// ended records that the request of uid has ended in PAM.
func (s *syncTimes) ended(uid types.UID) {
	s.update(uid, func(rec *syncRecord) { rec.ended = true })
}

// endedInPAM reports whether this process saw the request of uid end in PAM.
func (s *syncTimes) endedInPAM(uid types.UID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[uid].ended
}

// update changes the record of uid, which starts empty, under the lock.
func (s *syncTimes) update(uid types.UID, change func(*syncRecord)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[types.UID]syncRecord{}
	}
	rec := s.m[uid]
	change(&rec)
	s.m[uid] = rec
}

func (s *syncTimes) delete(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, uid)
}

// patchStatus derives the conditions from what the pass learned and writes the status once,
// only when it changed.
func (r *PamElevationReconciler) patchStatus(ctx context.Context, original, el *pamv1.PamElevation, p *pass) error {
	setConditions(el, p)
	if equality.Semantic.DeepEqual(original.Status, el.Status) {
		return nil
	}
	// An object whose finalizer another pass just removed is gone: nothing is left to report.
	return client.IgnoreNotFound(r.Status().Patch(ctx, el, client.MergeFrom(original)))
}

// SetupWithManager registers the reconciler and its watches: a change to a server, or to a
// Secret a server uses, re-queues every elevation of that server, found through the elevation
// index.
func (r *PamElevationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.setDefaults()
	index, err := newElevationIndex(context.Background(), mgr.GetCache())
	if err != nil {
		return err
	}
	r.index = index
	if err := registerStateMetrics(index); err != nil {
		return err
	}
	mapper := &elevationMapper{index: r.index}
	if err := ctrl.NewControllerManagedBy(mgr).
		Named(elevationControllerName).
		// One handler for everything this controller takes from elevation events: each handler
		// registered on an informer is one more goroutine its events are handed to in turn, in
		// no set order, before the one that queues a close gets them.
		Watches(&pamv1.PamElevation{}, r.elevationEvents()).
		WatchesRawSource(source.Func(r.startSweep)).
		Watches(&pamv1.PamServer{}, handler.EnqueueRequestsFromMapFunc(mapper.forServer),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&pamv1.ClusterPamServer{}, handler.EnqueueRequestsFromMapFunc(mapper.forServer),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.MaxConcurrentReconciles, 1),
			LogConstructor: elevationLogger(mgr.GetLogger())}).
		Complete(r); err != nil {
		return err
	}
	return r.setupReleases(mgr)
}

// elevationControllerName is the name For(&PamElevation{}) would give the controller.
const elevationControllerName = "pamelevation"

// elevationEvents is what the controller does with elevation events, in one handler:
//   - a deletion starting is queued ahead of everything else (deletionsFirst);
//   - a change of spec, labels or annotations is queued as For(&PamElevation{}) would queue it,
//     but not the operator's own status patches, which would cut every backoff short (deletion
//     bumps the generation, so it still comes through), nor a deletion starting, which queued
//     twice could run twice in a row and cut a Retry-After short;
//   - an object released by someone else leaves no read record behind.
func (r *PamElevationReconciler) elevationEvents() handler.EventHandler {
	changes := predicate.And(predicate.Or(predicate.GenerationChangedPredicate{},
		predicate.AnnotationChangedPredicate{}, predicate.LabelChangedPredicate{}), predicate.Not(deletionStarting))
	enqueue := &handler.EnqueueRequestForObject{}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			deletionsFirst.Create(ctx, e, q)
			if changes.Create(e) {
				enqueue.Create(ctx, e, q)
			}
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			deletionsFirst.Update(ctx, e, q)
			if changes.Update(e) {
				enqueue.Update(ctx, e, q)
			}
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.lastSynced.delete(e.Object.GetUID())
			if changes.Delete(e) {
				enqueue.Delete(ctx, e, q)
			}
		},
		GenericFunc: func(ctx context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if changes.Generic(e) {
				enqueue.Generic(ctx, e, q)
			}
		},
	}
}

// elevationLogger gives each pass the logger For(&PamElevation{}) would: the controller, its
// kind, and the object.
func elevationLogger(base logr.Logger) func(*reconcile.Request) logr.Logger {
	log := base.WithValues("controller", elevationControllerName, "controllerGroup", pamv1.GroupVersion.Group, "controllerKind", "PamElevation")
	return func(req *reconcile.Request) logr.Logger {
		if req == nil {
			return log
		}
		return log.WithValues("PamElevation", klog.KRef(req.Namespace, req.Name), "namespace", req.Namespace, "name", req.Name)
	}
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
	r.retries = workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](initialRetryDelay, r.MaxRetryDelay)
}
