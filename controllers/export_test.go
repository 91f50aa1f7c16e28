package controllers

import (
	"context"
	"reflect"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/pam"
)

// NewCoalescingReader lets the tests drive the live reader directly.
func NewCoalescingReader(r client.Reader) *coalescingReader { return &coalescingReader{Reader: r} }

// SetCredentialsFreshFor sets how long after a read of its credentials the connector closes
// without reading them again.
func (c *Connector) SetCredentialsFreshFor(d time.Duration) { c.freshFor = d }

// KeepEscrow connects to the server and makes its escrow hold the credentials read, as the
// server's reconciler does while an elevation needs it.
func (c *Connector) KeepEscrow(ctx context.Context, server pamv1.ServerObject) error {
	_, creds, err := c.connect(ctx, server)
	if err != nil {
		return err
	}
	return c.keepEscrow(ctx, server, creds)
}

// RefreshEscrowAsDecidedBefore reads the server's credentials and writes them to its escrow as a
// refresh decided before anything since: what a refresh does once it holds the escrow lock.
func (c *Connector) RefreshEscrowAsDecidedBefore(ctx context.Context, server pamv1.ServerObject) error {
	creds, err := c.loadCredentials(ctx, server)
	if err != nil {
		return err
	}
	creds.readAt = time.Now()
	return c.writeEscrow(ctx, server, creds, true)
}

// DropEscrow deletes the server's escrow, as the server's reconciler does once nothing needs it.
func (c *Connector) DropEscrow(ctx context.Context, server pamv1.ServerObject) error {
	return c.dropEscrow(ctx, server)
}

// EscrowName is the name of the server's escrow Secret.
func EscrowName(server pamv1.ServerObject) string { return escrowName(server) }

// Queued is how many callers wait for the read queued behind the one in flight for obj's type
// and key.
func (r *coalescingReader) Queued(obj client.Object, key client.ObjectKey) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	pair := r.flights[reflect.TypeOf(obj).Elem().String()+"/"+key.String()]
	if pair == nil || pair.next == nil {
		return 0
	}
	return pair.next.callers
}

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

// FetchBatch lists the server's requests created since since, as the periodic sync does.
func (c *Connector) FetchBatch(ctx context.Context, server pamv1.ServerObject, since time.Time) error {
	connect := func(ctx context.Context) (pam.Client, error) { return c.Connect(ctx, server) }
	_, err := c.batches.fetch(ctx, serverCacheKey(server), connect, since, time.Now)
	return err
}

// ElevationIndexers are the indexes the manager adds to its PamElevation informer.
func ElevationIndexers() toolscache.Indexers { return elevationIndexers() }

// HandReleasesTo makes q the queue of the release controller, as its start does.
func (r *PamElevationReconciler) HandReleasesTo(q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	r.releases.Store(&q)
}

// Release runs one pass of the release controller.
func (r *PamElevationReconciler) Release(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	return r.release(ctx, req)
}

// PackForCache packs el as the manager's cache holds it, with words of a table the tests share.
func PackForCache(el *pamv1.PamElevation) any { return packElevation(el, testWords) }

var testWords = newWordTable(maxWords)

// WordTable is the table of the strings that packed elevations share.
type WordTable = wordTable

// NewWordTable returns a table that holds up to limit words.
func NewWordTable(limit int) *WordTable { return newWordTable(limit) }

// PackWithWords packs el with the words of table.
func PackWithWords(el *pamv1.PamElevation, table *WordTable) any { return packElevation(el, table) }

// Len is how many words the table holds.
func (t *wordTable) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.numbers)
}

// UnpackMemo decodes cached items as the cache's readers and event handlers get them.
type UnpackMemo = unpackMemo

// MemoSize is how many decoded elevations a memo keeps.
const MemoSize = memoSize

// Decode is the memo's decoding of a cached item.
func (m *unpackMemo) Decode(item any) any { return m.unpackAny(item) }

// CachedState is the state a packed elevation holds apart, and StateOf the state of el.
func CachedState(item any) string { return item.(*packedElevation).state() }

func StateOf(el *pamv1.PamElevation) string { return stateOf(el) }

// PackedSize is the length of a packed elevation's encoding.
func PackedSize(item any) int { return len(item.(*packedElevation).data) }

// UnpackCached decodes an item of the cache's store, as readers of the cache get it.
func UnpackCached(item any) any { return unpackAny(item) }

// CachedMeta is the metadata client-go reads from an item of the cache's store.
func CachedMeta(item any) metav1.Object { return item.(metav1.ObjectMetaAccessor).GetObjectMeta() }

// StoreIndexers are indexers run on the cache's store, where elevations are packed.
func StoreIndexers(indexers toolscache.Indexers) toolscache.Indexers {
	return unpackingIndexers(indexers, &unpackMemo{})
}

// HeldPacked reports whether the cache's store holds the elevation packed.
func HeldPacked(ctx context.Context, c cache.Cache, key client.ObjectKey) (bool, error) {
	inf, err := c.GetInformer(ctx, &pamv1.PamElevation{})
	if err != nil {
		return false, err
	}
	store, ok := inf.(toolscache.SharedIndexInformer).GetIndexer().(packedIndexer)
	if !ok {
		return false, nil
	}
	item, exists, err := store.raw().GetByKey(key.String())
	_, packed := item.(*packedElevation)
	return exists && packed, err
}
