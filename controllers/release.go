package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
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

// The release of a deleted elevation whose request has ended in PAM — the removal of its
// finalizer — runs in a controller of its own, on workers of its own. A close waits for PAM's
// rate limit, a release for the client's: on one set of workers, those waiting for one limit
// hold back the work waiting for the other. In a mass revocation, a worker that released right
// after its close would wait for its patch's turn before taking the next deletion, so the closes
// would follow the pace of the finalizer patches; behind them, the releases would wait for the
// closes. Apart, the closes run as fast as the deletions arrive and PAM allows, and the releases
// as fast as the client's QPS allows, from the first close on.

// releaseNext hands the release of el, whose request this pass saw end in PAM, to the release
// controller. The status is not patched: the object goes away with the finalizer. Should this
// process stop first, the next one reads the request from PAM, finds it ended, and releases the
// object without a second close. Before the release controller has started, the next pass of
// this controller releases it.
func (r *PamElevationReconciler) releaseNext(req reconcile.Request, el *pamv1.PamElevation) (ctrl.Result, error) {
	r.lastSynced.ended(el.UID)
	if _, ok := r.index.current(el); !ok {
		// Released already, by a pass this one's stale copy did not show: the record this pass
		// wrote would outlive the object, as its deletion has been seen.
		r.lastSynced.delete(el.UID)
		return ctrl.Result{}, nil
	}
	if r.handOff(req) {
		return ctrl.Result{}, nil
	}
	priority := closePriority
	return ctrl.Result{RequeueAfter: time.Nanosecond, Priority: &priority}, nil
}

// releaseNow releases el, whose request has ended in PAM, through the release controller when
// it runs: there, releases never wait alongside closes.
func (r *PamElevationReconciler) releaseNow(ctx context.Context, req reconcile.Request, el *pamv1.PamElevation) (ctrl.Result, error) {
	if r.handOff(req) {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{}, r.releaseEnded(ctx, req, el)
}

// handOff queues the release of req with the release controller, and reports whether it runs.
func (r *PamElevationReconciler) handOff(req reconcile.Request) bool {
	q := r.releases.Load()
	if q != nil {
		(*q).Add(req)
	}
	return q != nil
}

// requestEnded reports whether el's request is known to have ended in PAM: its status records
// it closed, or this process saw it end.
func (r *PamElevationReconciler) requestEnded(el *pamv1.PamElevation) bool {
	return isClosed(el) || r.lastSynced.endedInPAM(el.UID)
}

// setupReleases registers the release controller, with as many workers as the elevations'.
func (r *PamElevationReconciler) setupReleases(mgr ctrl.Manager) error {
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
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.MaxConcurrentReconciles, 1)}).
		Complete(reconcile.Func(r.release))
}

// release removes the finalizer of a deleted elevation whose request this process saw end in
// PAM, or whose status records it closed; any other is left to the elevation controller.
func (r *PamElevationReconciler) release(ctx context.Context, req reconcile.Request) (ctrl.Result, error) {
	el := &pamv1.PamElevation{}
	if err := r.Get(ctx, req.NamespacedName, el); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if el.DeletionTimestamp.IsZero() || !controllerutil.ContainsFinalizer(el, pamv1.ElevationFinalizer) || !r.requestEnded(el) {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{}, r.releaseEnded(ctx, req, el)
}

// releaseEnded removes the finalizer of a deleted elevation whose request has ended in PAM.
// Unlike removeFinalizer, it does not hold the copy's resourceVersion: nothing that may still
// change on an object being deleted bears on this release — its deletion is final, its requestID
// immutable, and an ended request does not reopen — so an edit of its labels or annotations
// meanwhile must not send it back to wait. The patch removes this finalizer only, from where the
// copy has it, of this object only; should the finalizers have changed, it is refused and the
// release tried again.
func (r *PamElevationReconciler) releaseEnded(ctx context.Context, req reconcile.Request, el *pamv1.PamElevation) error {
	ops := []jsonPatchOp{{Op: "test", Path: "/metadata/uid", Value: string(el.UID)}}
	// Every copy of the finalizer, which the API server lets a list hold twice, from the last, so
	// that each removal leaves the places of those before it unchanged.
	for i := len(el.Finalizers) - 1; i >= 0; i-- {
		if el.Finalizers[i] == pamv1.ElevationFinalizer {
			at := fmt.Sprintf("/metadata/finalizers/%d", i)
			ops = append(ops, jsonPatchOp{Op: "test", Path: at, Value: pamv1.ElevationFinalizer}, jsonPatchOp{Op: "remove", Path: at})
		}
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	released := elevationMetadata()
	released.Namespace, released.Name = el.Namespace, el.Name
	err = r.Patch(ctx, released, client.RawPatch(types.JSONPatchType, patch))
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return err
	case controllerutil.ContainsFinalizer(released, pamv1.ElevationFinalizer):
		// Added once more since the copy was taken: the retry works from a newer copy.
		return fmt.Errorf("the finalizer %s is still listed after its release", pamv1.ElevationFinalizer)
	}
	r.released(req, el)
	return nil
}

// jsonPatchOp is one operation of a JSON patch (RFC 6902).
type jsonPatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value string `json:"value,omitempty"`
}
