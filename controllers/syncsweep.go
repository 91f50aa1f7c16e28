package controllers

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/pam"
)

// The periodic sync of idle elevations is a sweep: once per sync interval it lists each server's
// requests (one call, the shared batch) and holds the list against the server's cached
// elevations itself. Only an elevation whose status the list would change, or that the list
// does not hold, is queued for a pass; for the others the read is only recorded. An idle
// elevation thus waits for its next sync outside the work queue, where each waiting item costs
// an entry and a metric timestamp: at ten thousand elevations, a third of their memory.

// startSweep starts the sweep with the controller, so it runs only while this replica leads.
// Each server is swept on its own: one that answers slowly, or not at all, holds up no other; a
// server whose sweep of the last interval is still under way is left to it.
func (r *PamElevationReconciler) startSweep(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	r.slotWaits.queue.Store(&q)
	var mu sync.Mutex
	sweeping := map[string]bool{}
	go func() {
		ticker := time.NewTicker(r.SyncInterval)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
			for _, serverKey := range r.index.servers() {
				mu.Lock()
				busy := sweeping[serverKey]
				sweeping[serverKey] = true
				mu.Unlock()
				if busy {
					continue
				}
				go func() {
					defer func() {
						mu.Lock()
						delete(sweeping, serverKey)
						mu.Unlock()
					}()
					r.sweep(ctx, serverKey, q)
				}()
			}
		}
	}()
	return nil
}

// sweep syncs the idle elevations of one server from one list of its requests.
func (r *PamElevationReconciler) sweep(ctx context.Context, serverKey string, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	var idle []*pamv1.PamElevation
	var panicked error
	defer func() {
		if panicked != nil {
			ctrl.LoggerFrom(ctx).Error(panicked, "The periodic sync of a server failed; its due elevations are synced in passes of their own", "server", serverKey)
			r.queueDue(q, idle, r.Clock.Now())
		}
	}()
	defer recoverAsError(&panicked)
	var first *pamv1.PamElevation
	idle = r.index.byServer(serverKey, func(el *pamv1.PamElevation) bool {
		keep := sweepable(el)
		if keep && first == nil {
			first = el
		}
		return keep
	})
	if first == nil {
		return
	}
	now := r.Clock.Now()
	server, err := r.Connector.Server(ctx, first)
	if err != nil {
		r.queueDue(q, idle, now) // their passes report why
		return
	}
	conn := &lazyClient{connector: r.Connector, server: server}
	batch, err := r.Connector.Batcher(server).Fetch(ctx, conn.get, pam.BatchSince(now), r.Clock.Now)
	if err != nil {
		ctrl.LoggerFrom(ctx).V(1).Info("Listing the server's requests for the periodic sync failed", "server", serverKey, "error", err.Error())
		r.queueDue(q, idle, now)
		return
	}
	allowed := map[string]bool{}
	for _, el := range idle {
		if !batch.At.After(r.syncedUpTo(el)) {
			continue // read since the list was asked for
		}
		ok, known := allowed[el.Namespace]
		if !known {
			ok = r.Connector.CheckNamespaceAllowed(ctx, server, el.Namespace) == nil
			allowed[el.Namespace] = ok
		}
		req, found := batch.Request(requestIDOf(el))
		if !ok || !found || changesStatus(el, &req, batch.At) || !r.stillIdle(el) {
			addAt(q, el, syncPriority)
			continue
		}
		r.reads.storeIfNewer(el.UID, batch.At, readOpen(req.Status))
	}
}

// sweepable reports whether the sweep syncs the elevation: one whose last pass settled with
// nothing left to do but the periodic sync. One with a problem is already queued for its retry,
// and one never read yet has its first read in its own pass.
func sweepable(el *pamv1.PamElevation) bool {
	return el.DeletionTimestamp == nil && controllerutil.ContainsFinalizer(el, pamv1.ElevationFinalizer) &&
		!isClosed(el) && el.Status.LastSyncTime != nil &&
		(meta.IsStatusConditionTrue(el.Status.Conditions, pamv1.ConditionReady) || waitsForGrant(el))
}

// stillIdle reports whether the cache still holds the elevation as the sweep found it, not
// deleted in the meantime: a read recorded for an object already released would never be dropped.
func (r *PamElevationReconciler) stillIdle(el *pamv1.PamElevation) bool {
	current, ok := r.index.current(el)
	return ok && current.DeletionTimestamp == nil
}

// queueDue queues the elevations whose sync is due, when no list could be had: each pass then
// tries on its own, and reports and retries what fails.
func (r *PamElevationReconciler) queueDue(q workqueue.TypedRateLimitingInterface[reconcile.Request], idle []*pamv1.PamElevation, now time.Time) {
	for _, el := range idle {
		if !now.Before(r.nextSync(el)) {
			addAt(q, el, syncPriority)
		}
	}
}
