package controllers

import (
	"context"
	"fmt"

	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
)

// SetupIndexes registers the field indexes: elevations by server, and by the server they still
// need. The index by request is requestIndex's.
func SetupIndexes(ctx context.Context, mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &pamv1.PamElevation{}, serverRefIndex, func(o client.Object) []string {
		return []string{o.(*pamv1.PamElevation).ServerKey()}
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

// requestIndexName is the informer index of elevations by requestBucket. It is the informer's
// own, not a controller-runtime field index: a lookup reads the cached objects in place instead of
// copying every one in the bucket into a list on each pass, and each elevation is indexed once,
// not once more for all namespaces.
const requestIndexName = "pam.mim.dev/request-bucket"

// requestIndex finds the cached elevations that name a request.
type requestIndex struct {
	indexer toolscache.Indexer
}

// newRequestIndex registers requestIndexName with the cache's PamElevation informer, unless it
// already is, and returns the index.
func newRequestIndex(ctx context.Context, c cache.Cache) (*requestIndex, error) {
	inf, err := c.GetInformer(ctx, &pamv1.PamElevation{})
	if err != nil {
		return nil, err
	}
	shared, ok := inf.(toolscache.SharedIndexInformer)
	if !ok {
		return nil, fmt.Errorf("the PamElevation informer (%T) has no index", inf)
	}
	if _, exists := shared.GetIndexer().GetIndexers()[requestIndexName]; !exists {
		err := shared.AddIndexers(toolscache.Indexers{requestIndexName: func(obj any) ([]string, error) {
			if el, ok := obj.(*pamv1.PamElevation); ok {
				return []string{requestBucket(normalizedID(el))}, nil
			}
			return nil, nil
		}})
		if err != nil {
			return nil, err
		}
	}
	return &requestIndex{indexer: shared.GetIndexer()}, nil
}

// elevations calls fn with each cached elevation of the request's bucket, for it to filter by the
// exact id. The objects are the cache's own: fn must not change them.
func (x *requestIndex) elevations(id string, fn func(*pamv1.PamElevation)) error {
	objs, err := x.indexer.ByIndex(requestIndexName, requestBucket(id))
	if err != nil {
		return err
	}
	for _, obj := range objs {
		if el, ok := obj.(*pamv1.PamElevation); ok {
			fn(el)
		}
	}
	return nil
}

// requestBucket is the requestIndexName value of a request id: its first two hex digits. A value
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
