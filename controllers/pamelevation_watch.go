package controllers

// What the elevation controller watches, how events are queued, and its registration.

import (
	"context"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
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
	addRequestAt(q, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(obj)}, priority)
}

// addRequestAt queues req at the priority, on a queue that has priorities.
func addRequestAt(q workqueue.TypedRateLimitingInterface[reconcile.Request], req reconcile.Request, priority int) {
	if pq, ok := q.(priorityqueue.PriorityQueue[reconcile.Request]); ok {
		pq.AddWithOpts(priorityqueue.AddOpts{Priority: &priority}, req)
		return
	}
	q.Add(req)
}

// elevationControllerName is the name For(&PamElevation{}) would give the controller.
const elevationControllerName = "pamelevation"

// elevationEvents is what the controller does with elevation events, in one handler:
//   - a deletion starting is queued ahead of everything else (deletionsFirst);
//   - a change of spec, labels or annotations is queued as For(&PamElevation{}) would queue it,
//     but not the operator's own status patches, which would cut every backoff short (deletion
//     bumps the generation, so it still comes through), nor a deletion starting, which queued
//     twice could run twice in a row and cut a Retry-After short;
//   - an object released by someone else leaves no read record behind;
//   - deletions starting and objects going tell whether a burst of deletions is under way.
func (r *PamElevationReconciler) elevationEvents() handler.EventHandler {
	changes := predicate.And(predicate.Or(predicate.GenerationChangedPredicate{},
		predicate.AnnotationChangedPredicate{}, predicate.LabelChangedPredicate{}), predicate.Not(deletionStarting))
	enqueue := &handler.EnqueueRequestForObject{}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if deletionStarting.Create(e) {
				r.burst.seen(e.Object.GetNamespace(), e.Object.GetUID())
			}
			deletionsFirst.Create(ctx, e, q)
			if changes.Create(e) {
				enqueue.Create(ctx, e, q)
			}
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if deletionStarting.Update(e) {
				r.burst.seen(e.ObjectNew.GetNamespace(), e.ObjectNew.GetUID())
			}
			deletionsFirst.Update(ctx, e, q)
			if changes.Update(e) {
				enqueue.Update(ctx, e, q)
			}
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.reads.delete(e.Object.GetUID())
			r.burst.gone(e.Object.GetNamespace(), e.Object.GetUID())
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
	r.burst.release = func(req reconcile.Request) {
		if q := r.slotWaits.queue.Load(); q != nil {
			addRequestAt(*q, req, confirmPriority)
		}
	}
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
		WatchesMetadata(namespaceMetadata(), handler.EnqueueRequestsFromMapFunc(mapper.forNamespace),
			builder.WithPredicates(predicate.LabelChangedPredicate{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.MaxConcurrentReconciles, 1), RateLimiter: errorBackoff(r.MaxRetryDelay),
			LogConstructor: elevationLogger(mgr.GetLogger())}).
		Complete(r); err != nil {
		return err
	}
	return r.setupReleaser(mgr)
}

// namespaceMetadata is what is cached of namespaces: their labels, for allowedNamespaces.
func namespaceMetadata() *metav1.PartialObjectMetadata {
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	return ns
}
