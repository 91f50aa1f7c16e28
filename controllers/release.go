package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
)

// Releasing an elevation is removing its finalizer, which lets its deletion complete. It is
// done in one place, removeFinalizer, in one of two modes (releaseGuard).
//
// The release of a deleted elevation whose request has ended in PAM runs in a controller of its
// own (the releaser), on workers of its own. A close waits for PAM's rate limit, a release for
// the client's: on one set of workers, those waiting for one limit hold back the work waiting
// for the other. In a mass revocation, a worker that released right after its close would wait
// for its patch's turn before taking the next deletion, so the closes would follow the pace of
// the finalizer patches. Apart, the closes run as fast as the deletions arrive and PAM allows,
// and the releases as fast as the client's QPS allows, from the first close on.

// releaseGuard is what a release must still find true of the object for the patch to apply.
type releaseGuard int

const (
	// unchangedSince releases only the version this pass read (an optimistic lock): for a release
	// decided from the object's spec (Orphan, a duplicate, a server never allowed), a concurrent
	// change — say, a user switching deletionPolicy back — wins and comes back through a pass.
	unchangedSince releaseGuard = iota
	// sameObject releases the same object (its uid) from where its copy lists the finalizer: for a
	// request that has ended in PAM, nothing still changeable on an object being deleted bears on
	// the release — its deletion is final, its request immutable, and an ended request does not
	// reopen — so an edit of its labels or annotations meanwhile must not send it back to wait.
	sameObject
)

// removeFinalizer releases el. Only the metadata is asked for back: the object is on its way
// out, and its whole body, encoded by the API server and decoded here, would cost both of them
// CPU for nothing in a mass revocation. An object already gone counts as released.
func (r *PamElevationReconciler) removeFinalizer(ctx context.Context, req reconcile.Request, el *pamv1.PamElevation, guard releaseGuard) error {
	released := &metav1.PartialObjectMetadata{}
	released.SetGroupVersionKind(pamv1.GroupVersion.WithKind("PamElevation"))
	var patch client.Patch
	switch guard {
	case unchangedSince:
		el.ObjectMeta.DeepCopyInto(&released.ObjectMeta)
		patch = client.MergeFromWithOptions(released.DeepCopy(), client.MergeFromWithOptimisticLock{})
		controllerutil.RemoveFinalizer(released, pamv1.ElevationFinalizer)
	case sameObject:
		released.Namespace, released.Name = el.Namespace, el.Name
		ops, err := removeFinalizerOps(el)
		if err != nil {
			return err
		}
		patch = client.RawPatch(types.JSONPatchType, ops)
	}
	err := r.Patch(ctx, released, patch)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return err
	case guard == sameObject && controllerutil.ContainsFinalizer(released, pamv1.ElevationFinalizer):
		// Added once more since the copy was taken: the retry works from a newer copy.
		return fmt.Errorf("the finalizer %s is still listed after its release", pamv1.ElevationFinalizer)
	}
	r.retries.Forget(req)
	r.reads.delete(el.UID)
	return nil
}

// removeFinalizerOps is the JSON patch (RFC 6902) that removes every copy of the finalizer —
// which the API server lets a list hold twice — from where el lists it, from the last, so that
// each removal leaves the places of those before it unchanged; it tests the uid and each place
// first, so that it is refused should either have changed.
func removeFinalizerOps(el *pamv1.PamElevation) ([]byte, error) {
	type op struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value string `json:"value,omitempty"`
	}
	ops := []op{{Op: "test", Path: "/metadata/uid", Value: string(el.UID)}}
	for i := len(el.Finalizers) - 1; i >= 0; i-- {
		if el.Finalizers[i] == pamv1.ElevationFinalizer {
			at := fmt.Sprintf("/metadata/finalizers/%d", i)
			ops = append(ops, op{Op: "test", Path: at, Value: pamv1.ElevationFinalizer}, op{Op: "remove", Path: at})
		}
	}
	return json.Marshal(ops)
}

// requestEnded reports whether el's request is known to have ended in PAM: its status records
// it closed, or this process saw it end.
func (r *PamElevationReconciler) requestEnded(el *pamv1.PamElevation) bool {
	return isClosed(el) || r.reads.endedInPAM(el.UID)
}

// queueRelease hands the release of el, whose request this pass saw end in PAM, to the
// releaser. The status is not patched: the object goes away with the finalizer. Should this
// process stop first, the next one reads the request from PAM, finds it ended, and releases the
// object without a second close. Before the releaser has started, the next pass of this
// controller releases it.
func (r *PamElevationReconciler) queueRelease(req reconcile.Request, el *pamv1.PamElevation) (ctrl.Result, error) {
	r.reads.ended(el.UID)
	if _, ok := r.index.current(el); !ok {
		// Released already, by a pass this one's stale copy did not show: the record this pass
		// wrote would outlive the object, as its deletion has been seen.
		r.reads.delete(el.UID)
		return ctrl.Result{}, nil
	}
	if r.handToReleaser(req) {
		return ctrl.Result{}, nil
	}
	priority := closePriority
	return ctrl.Result{RequeueAfter: time.Nanosecond, Priority: &priority}, nil
}

// releaseEnded releases el, whose request has ended in PAM, through the releaser when it runs:
// there, releases never wait alongside closes.
func (r *PamElevationReconciler) releaseEnded(ctx context.Context, req reconcile.Request, el *pamv1.PamElevation) (ctrl.Result, error) {
	if r.handToReleaser(req) {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{}, r.removeFinalizer(ctx, req, el, sameObject)
}

// handToReleaser queues the release of req with the releaser, and reports whether it runs.
func (r *PamElevationReconciler) handToReleaser(req reconcile.Request) bool {
	q := r.releases.Load()
	if q != nil {
		(*q).Add(req)
	}
	return q != nil
}

// setupReleaser registers the releaser, with as many workers as the elevations'.
func (r *PamElevationReconciler) setupReleaser(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("pamelevation-release").
		WatchesRawSource(source.Func(func(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
			queue := &q
			r.releases.Store(queue)
			go func() {
				// A stopping queue drops what is added: passes still running release directly.
				<-ctx.Done()
				r.releases.CompareAndSwap(queue, nil)
			}()
			return nil
		})).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.MaxConcurrentReconciles, 1), RateLimiter: errorBackoff(r.MaxRetryDelay)}).
		Complete(reconcile.Func(r.reconcileRelease))
}

// reconcileRelease is the releaser's pass: it removes the finalizer of a deleted elevation whose
// request this process saw end in PAM, or whose status records it closed; any other is left to
// the elevation controller.
func (r *PamElevationReconciler) reconcileRelease(ctx context.Context, req reconcile.Request) (ctrl.Result, error) {
	el := &pamv1.PamElevation{}
	if err := r.Get(ctx, req.NamespacedName, el); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if el.DeletionTimestamp.IsZero() || !controllerutil.ContainsFinalizer(el, pamv1.ElevationFinalizer) || !r.requestEnded(el) {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{}, r.removeFinalizer(ctx, req, el, sameObject)
}
