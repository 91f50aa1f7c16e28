package controllers

import (
	"context"
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
)

// The informer indexes of elevations. They are the informer's own, not controller-runtime field
// indexes: a lookup reads the cached objects in place instead of copying each match into a list,
// and each elevation is indexed once per index, not once more for all namespaces.
const (
	// requestIndexName maps elevations to a bucket of their request id (see requestBucket), to
	// find duplicates.
	requestIndexName = "pam.mim.dev/request-bucket"
	// serverIndexName maps elevations to the server they use (see PamElevation.ServerKey).
	serverIndexName = "pam.mim.dev/server"
	// inUseIndexName maps the elevations that may still call PAM to their server (see needsServer).
	inUseIndexName = "pam.mim.dev/in-use"
)

// elevationIndex finds cached elevations by request, by server, and by the server they still
// need. It hands out the cache's own objects, which callers only read.
type elevationIndex struct {
	indexer toolscache.Indexer
	synced  toolscache.InformerSynced
}

// newElevationIndex registers the indexes with the cache's PamElevation informer, unless they
// already are, and returns them: every reconciler that asks shares the same ones.
func newElevationIndex(ctx context.Context, c cache.Cache) (*elevationIndex, error) {
	inf, err := c.GetInformer(ctx, &pamv1.PamElevation{})
	if err != nil {
		return nil, err
	}
	shared, ok := inf.(toolscache.SharedIndexInformer)
	if !ok {
		return nil, fmt.Errorf("the PamElevation informer (%T) has no index", inf)
	}
	indexers := elevationIndexers()
	for name := range shared.GetIndexer().GetIndexers() {
		delete(indexers, name)
	}
	if len(indexers) > 0 {
		if err := shared.AddIndexers(indexers); err != nil {
			return nil, err
		}
	}
	return &elevationIndex{indexer: shared.GetIndexer(), synced: shared.HasSynced}, nil
}

// elevationIndexers are the indexes newElevationIndex adds to the informer.
func elevationIndexers() toolscache.Indexers {
	return toolscache.Indexers{
		requestIndexName: elevationIndexFunc(func(el *pamv1.PamElevation) string { return requestBucket(requestIDOf(el)) }),
		serverIndexName:  elevationIndexFunc((*pamv1.PamElevation).ServerKey),
		inUseIndexName: elevationIndexFunc(func(el *pamv1.PamElevation) string {
			if needsServer(el) {
				return el.ServerKey()
			}
			return ""
		}),
	}
}

// elevationIndexFunc indexes an elevation under the value of fn, and not at all under "".
func elevationIndexFunc(fn func(*pamv1.PamElevation) string) toolscache.IndexFunc {
	return func(obj any) ([]string, error) {
		if el, ok := obj.(*pamv1.PamElevation); ok {
			if value := fn(el); value != "" {
				return []string{value}, nil
			}
		}
		return nil, nil
	}
}

// each calls fn with every cached elevation indexed under value.
func (x *elevationIndex) each(index, value string, fn func(*pamv1.PamElevation)) error {
	items, err := x.indexer.ByIndex(index, value)
	if err != nil {
		return err
	}
	for _, item := range items {
		if el, ok := item.(*pamv1.PamElevation); ok {
			fn(el)
		}
	}
	return nil
}

// current returns the cache's copy of el, unless the cache no longer holds that object.
func (x *elevationIndex) current(el *pamv1.PamElevation) (*pamv1.PamElevation, bool) {
	item, exists, err := x.indexer.GetByKey(client.ObjectKeyFromObject(el).String())
	if err != nil || !exists {
		return nil, false
	}
	current, ok := item.(*pamv1.PamElevation)
	return current, ok && current.UID == el.UID
}

// stateCounts returns how many cached elevations are in each state.
func (x *elevationIndex) stateCounts() map[string]int {
	counts := make(map[string]int, len(elevationStateNames))
	for _, item := range x.indexer.List() {
		if el, ok := item.(*pamv1.PamElevation); ok {
			counts[stateOf(el)]++
		}
	}
	return counts
}

// byRequest calls fn with each cached elevation of the request (equal ignoring case: admission
// takes only GUIDs).
func (x *elevationIndex) byRequest(id string, fn func(*pamv1.PamElevation)) error {
	return x.each(requestIndexName, requestBucket(id), func(el *pamv1.PamElevation) {
		if requestIDOf(el) == id {
			fn(el)
		}
	})
}

// byServer returns the server's cached elevations that keep keeps.
func (x *elevationIndex) byServer(serverKey string, keep func(*pamv1.PamElevation) bool) []*pamv1.PamElevation {
	var held []*pamv1.PamElevation
	_ = x.each(serverIndexName, serverKey, func(el *pamv1.PamElevation) {
		if keep(el) {
			held = append(held, el)
		}
	})
	return held
}

// servers returns the servers that cached elevations use.
func (x *elevationIndex) servers() []string {
	return x.indexer.ListIndexFuncValues(serverIndexName)
}

// inUse reports whether any cached elevation still needs the server. It costs the number of
// servers in use, not of elevations: the index keeps a value only while something is under it.
func (x *elevationIndex) inUse(serverKey string) bool {
	return slices.Contains(x.indexer.ListIndexFuncValues(inUseIndexName), serverKey)
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

// elevationMapper turns changes of servers into requests for the elevations that depend on
// them, through the server index rather than list scans.
type elevationMapper struct {
	index *elevationIndex
}

// forServer maps a PamServer or ClusterPamServer to its elevations.
func (m *elevationMapper) forServer(ctx context.Context, o client.Object) []reconcile.Request {
	serverKey := pamv1.KeyOf(o.(pamv1.ServerObject))
	keys, err := m.index.indexer.IndexKeys(serverIndexName, serverKey)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Finding the elevations of a server", "server", serverKey)
	}
	reqs := make([]reconcile.Request, 0, len(keys))
	for _, key := range keys {
		namespace, name, err := toolscache.SplitMetaNamespaceKey(key)
		if err != nil {
			continue
		}
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: namespace, Name: name}})
	}
	return reqs
}

// forNamespace maps a namespace whose labels changed to its elevations that use a
// ClusterPamServer: its allowedNamespaces may select the namespace now, or no longer.
func (m *elevationMapper) forNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	objs, err := m.index.indexer.ByIndex(toolscache.NamespaceIndex, o.GetName())
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Finding the elevations of a namespace", "namespace", o.GetName())
	}
	var reqs []reconcile.Request
	for _, obj := range objs {
		if el, ok := obj.(*pamv1.PamElevation); ok && el.Spec.ServerRef.Kind == pamv1.ServerKindClusterPamServer {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(el)})
		}
	}
	return reqs
}
