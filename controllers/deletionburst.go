package controllers

// Revocation before bookkeeping. In a mass deletion the API server marks the deletions one at a
// time, and that marking paces the closes: a deletion cannot be closed before it is marked.
// Everything else the machine does meanwhile slows it, and the bookkeeping after each close the
// most — the pass that confirms it, its Event, the release and the deletion that completes (in
// `make bench`, 82 deletions marked per second with them alongside, 170 without). So while a
// burst of deletions arrives, the reads that confirm closes wait, and with them the Events and
// the releases that follow: the closes go first, the objects go later. A kubectl delete of a
// few objects is no burst, and deletions made one at a time, each waiting for its object to go,
// wait for nothing: nothing else is in flight. Bursts are told apart by namespace: one tenant's
// mass deletion holds its own confirmations, never another tenant's.

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

const (
	// burstGap: deletions seen less than this apart belong to one burst.
	burstGap = 500 * time.Millisecond
	// burstSize: a burst holds the confirmations once it has more deletions than this.
	burstSize = 20
	// maxBurstHold bounds how long one burst holds them: deletions that never pause must not keep
	// every object from going.
	maxBurstHold = 30 * time.Second
)

// deletionBursts tells whether a burst of deletions is arriving in a namespace, and keeps the
// confirmations it holds until it ends. It runs on the wall clock: the watch's events arrive in
// real time.
type deletionBursts struct {
	// release queues a held confirmation again when its burst ends.
	release func(reconcile.Request)

	mu          sync.Mutex
	byNamespace map[string]*deletionBurst
}

// deletionBurst is the deletions of one namespace; once they are done and the burst over, the
// namespace has none: what the bursts cost ends with them.
type deletionBurst struct {
	last  time.Time // when the last deletion was seen
	count int       // deletions in the burst
	// holdingSince is when the burst began to hold, zero while it does not.
	holdingSince time.Time
	// spent: the burst held as long as it may, and holds no more until it ends.
	spent bool
	held  map[reconcile.Request]struct{}
	// inFlight are the elevations whose deletion the burst saw start and that are not gone yet;
	// deletions stuck from before it, on a server that does not answer, do not count.
	inFlight map[types.UID]struct{}
}

// seen records the deletion of uid, in namespace, starting.
func (bs *deletionBursts) seen(namespace string, uid types.UID) {
	now := time.Now()
	bs.mu.Lock()
	defer bs.mu.Unlock()
	b := bs.byNamespace[namespace]
	if b == nil {
		if bs.byNamespace == nil {
			bs.byNamespace = map[string]*deletionBurst{}
		}
		b = &deletionBurst{}
		bs.byNamespace[namespace] = b
	}
	if now.Sub(b.last) >= burstGap {
		b.count, b.spent = 0, false
		clear(b.inFlight)
	}
	if b.inFlight == nil {
		b.inFlight = map[types.UID]struct{}{}
	}
	b.inFlight[uid] = struct{}{}
	b.last = now
	b.count++
	if b.count > burstSize && !b.spent && b.holdingSince.IsZero() {
		b.holdingSince = now
		time.AfterFunc(burstGap, func() { bs.check(namespace) })
	}
}

// gone records that the elevation uid, in namespace, is gone.
func (bs *deletionBursts) gone(namespace string, uid types.UID) {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if b := bs.byNamespace[namespace]; b != nil {
		delete(b.inFlight, uid)
		bs.forgetIfIdle(namespace, b)
	}
}

// hold reports whether the confirmation of req waits for its namespace's burst to end; if so,
// req is queued again then. Alone in flight, it waits for nothing: no close is behind it.
func (bs *deletionBursts) hold(req reconcile.Request) bool {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	b := bs.byNamespace[req.Namespace]
	if b == nil || b.holdingSince.IsZero() || len(b.inFlight) < 2 {
		return false
	}
	if b.held == nil {
		b.held = map[reconcile.Request]struct{}{}
	}
	b.held[req] = struct{}{}
	return true
}

// check ends namespace's hold once no deletion has come for burstGap, or the burst has held for
// maxBurstHold; until then it looks again when the first of the two would be.
func (bs *deletionBursts) check(namespace string) {
	now := time.Now()
	bs.mu.Lock()
	b := bs.byNamespace[namespace]
	if b == nil || b.holdingSince.IsZero() {
		bs.mu.Unlock()
		return
	}
	quiet, limit := b.last.Add(burstGap), b.holdingSince.Add(maxBurstHold)
	if now.Before(quiet) && now.Before(limit) {
		time.AfterFunc(min(quiet.Sub(now), limit.Sub(now)), func() { bs.check(namespace) })
		bs.mu.Unlock()
		return
	}
	b.spent = now.Before(quiet)
	b.holdingSince = time.Time{}
	held := b.held
	b.held = nil
	bs.forgetIfIdle(namespace, b)
	bs.mu.Unlock()
	for req := range held {
		bs.release(req)
	}
}

// forgetIfIdle drops namespace's burst once it has ended and nothing of it is in flight or held;
// a later deletion there starts a new one. One that ended with nothing in flight within burstGap
// of its last deletion is kept without its map until then. Called with bs.mu held.
func (bs *deletionBursts) forgetIfIdle(namespace string, b *deletionBurst) {
	if len(b.inFlight) > 0 || !b.holdingSince.IsZero() {
		return
	}
	if time.Since(b.last) >= burstGap && !b.spent {
		delete(bs.byNamespace, namespace)
		return
	}
	b.inFlight = nil // thousands of entries leave buckets behind
}
