package controllers

import (
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

const burstNamespace = "team"

func burstRequest(i int) reconcile.Request {
	return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: burstNamespace, Name: fmt.Sprintf("el-%d", i)}}
}

func burstUID(i int) types.UID { return types.UID(fmt.Sprintf("uid-%d", i)) }

// TestDeletionBurstHoldsOnlyWhatOthersWaitBehind: a few deletions are no burst; in a burst, a
// confirmation alone in flight (deletions made one at a time, each waiting for its object to
// go) is not held, one with others in flight is, and is queued again once the burst ends.
func TestDeletionBurstHoldsOnlyWhatOthersWaitBehind(t *testing.T) {
	released := make(chan reconcile.Request, 10)
	b := &deletionBursts{release: func(req reconcile.Request) { released <- req }}

	for i := range burstSize {
		b.seen(burstNamespace, burstUID(i))
	}
	if b.hold(burstRequest(0)) {
		t.Fatalf("held within the first %d deletions", burstSize)
	}
	for i := range burstSize {
		b.gone(burstNamespace, burstUID(i))
	}
	b.seen(burstNamespace, burstUID(burstSize))
	if b.hold(burstRequest(burstSize)) {
		t.Fatal("held a confirmation alone in flight: a deletion one at a time would wait for nothing")
	}
	b.seen(burstNamespace, burstUID(burstSize+1))
	if !b.hold(burstRequest(burstSize + 1)) {
		t.Fatal("not held in a burst with another deletion in flight")
	}
	select {
	case req := <-released:
		if req != burstRequest(burstSize+1) {
			t.Fatalf("queued %v again, want the held one", req)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the held confirmation was never queued again")
	}
	if b.hold(burstRequest(burstSize + 2)) {
		t.Fatal("held after the burst ended")
	}
}

// TestDeletionsStuckBeforeABurstDoNotCount: deletions left from an earlier burst, whose server
// never answers, are not in flight in a later one: deletions made one at a time meanwhile, each
// waiting for its object to go, are not held.
func TestDeletionsStuckBeforeABurstDoNotCount(t *testing.T) {
	b := &deletionBursts{release: func(reconcile.Request) {}}
	for i := range burstSize + 1 {
		b.seen(burstNamespace, burstUID(i)) // never gone: their server does not answer
	}
	b.mu.Lock()
	b.byNamespace[burstNamespace].last = time.Now().Add(-burstGap) // as if the burst had ended
	b.mu.Unlock()
	b.check(burstNamespace)
	for i := burstSize + 1; i < 3*burstSize; i++ {
		b.seen(burstNamespace, burstUID(i))
		if b.hold(burstRequest(i)) {
			t.Fatalf("deletion %d, alone in flight in its burst, was held", i)
		}
		b.gone(burstNamespace, burstUID(i))
	}
}

// TestDeletionBurstHoldsOnlyItsNamespace: one tenant's mass deletion holds its own
// confirmations, not those of another namespace's few deletions in flight meanwhile; and once
// its objects are gone and the burst over, nothing of it is kept.
func TestDeletionBurstHoldsOnlyItsNamespace(t *testing.T) {
	b := &deletionBursts{release: func(reconcile.Request) {}}
	for i := range 2 * burstSize {
		b.seen(burstNamespace, burstUID(i))
	}
	if !b.hold(burstRequest(0)) {
		t.Fatal("the burst's own confirmation was not held")
	}
	other := func(i int) reconcile.Request {
		return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "other", Name: fmt.Sprintf("el-%d", i)}}
	}
	b.seen("other", "other-0")
	b.seen("other", "other-1")
	if b.hold(other(0)) {
		t.Fatal("another namespace's confirmation was held by this namespace's burst")
	}
	b.gone("other", "other-0")
	b.gone("other", "other-1")
	for i := range 2 * burstSize {
		b.gone(burstNamespace, burstUID(i))
	}
	b.mu.Lock()
	b.byNamespace[burstNamespace].last = time.Now().Add(-burstGap) // quiet since
	b.mu.Unlock()
	b.check(burstNamespace)
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, kept := b.byNamespace[burstNamespace]; kept {
		t.Fatal("kept the burst of a namespace whose deletions are done")
	}
}
