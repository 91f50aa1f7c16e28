package controllers

import (
	"context"

	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
)

// SetDefaults prepares a reconciler the tests drive by hand, without a manager, finding
// elevations by request in the cache c.
func (r *PamElevationReconciler) SetDefaults(ctx context.Context, c cache.Cache) error {
	r.setDefaults()
	index, err := newElevationIndex(ctx, c)
	r.index = index
	return err
}

// ElevationEvents is the handler through which the controller takes elevation events.
func (r *PamElevationReconciler) ElevationEvents() handler.EventHandler { return r.elevationEvents() }

// Sweep runs the periodic sync of one server once, queueing onto q.
func (r *PamElevationReconciler) Sweep(ctx context.Context, serverKey string, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	r.sweep(ctx, serverKey, q)
}

// ElevationIndexers are the indexes the manager adds to its PamElevation informer.
func ElevationIndexers() toolscache.Indexers { return elevationIndexers() }

// HandReleasesTo makes q the queue of the release controller, as its start does.
func (r *PamElevationReconciler) HandReleasesTo(q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	r.releases.Store(&q)
}

// Release runs one pass of the release controller.
func (r *PamElevationReconciler) Release(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	return r.reconcileRelease(ctx, req)
}

// StateOf is the state the elevations gauge counts el in.
func StateOf(el *pamv1.PamElevation) string { return stateOf(el) }

// EscrowNeeded is the escrow collector's judgement of an escrow written for the server serverKey,
// object uid: servers read through reader, elevations from the cache c.
func EscrowNeeded(ctx context.Context, reader client.Reader, c cache.Cache, serverKey string, uid types.UID) (bool, error) {
	index, err := newElevationIndex(ctx, c)
	if err != nil {
		return false, err
	}
	return (&escrowCollector{reader: reader, index: index}).needed(ctx, serverKey, uid)
}
