package controllers

import (
	"context"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
)

// SetupIndexes registers the field indexes: elevations by server, by request, and by the server
// they still need.
func SetupIndexes(ctx context.Context, mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &pamv1.PamElevation{}, serverRefIndex, func(o client.Object) []string {
		return []string{o.(*pamv1.PamElevation).ServerKey()}
	}); err != nil {
		return err
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &pamv1.PamElevation{}, requestIDIndex, func(o client.Object) []string {
		return []string{requestBucket(normalizedID(o.(*pamv1.PamElevation)))}
	}); err != nil {
		return err
	}
	return mgr.GetFieldIndexer().IndexField(ctx, &pamv1.PamElevation{}, inUseIndex, func(o client.Object) []string {
		if el := o.(*pamv1.PamElevation); needsServer(el) {
			return []string{el.ServerKey()}
		}
		return nil
	})
}

// requestBucket is the requestIDIndex value of a request id: its first two hex digits. A value
// per request would cost the index a set per elevation; 256 buckets hold a few dozen each at ten
// thousand elevations, which the lookup filters by the exact id.
func requestBucket(id string) string {
	if len(id) < 2 {
		return id
	}
	return id[:2]
}

// elevationMapper turns changes of servers into requests for the elevations that
// depend on them, through field indexes rather than list scans.
type elevationMapper struct {
	client.Client
}

// forServer maps a PamServer or ClusterPamServer to its elevations.
func (m *elevationMapper) forServer(ctx context.Context, o client.Object) []reconcile.Request {
	return m.elevationsOf(ctx, serverCacheKey(o.(pamv1.ServerObject)))
}

func (m *elevationMapper) elevationsOf(ctx context.Context, serverKey string) []reconcile.Request {
	var list pamv1.PamElevationList
	// Only the names are read: the cached objects are not copied.
	if err := m.List(ctx, &list, client.MatchingFields{serverRefIndex: serverKey}, client.UnsafeDisableDeepCopy); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing elevations of a server", "server", serverKey)
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return reqs
}
