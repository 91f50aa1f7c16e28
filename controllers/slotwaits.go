package controllers

// The bulkhead's side in the controller: a pass refused a call slot of its server stops, writes
// nothing, and is queued again when one frees (pam.Limiter), so a hung or busy server holds at
// most its maxConcurrentCalls workers.

import (
	"sync"
	"sync/atomic"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/pam-operator/pam-operator/internal/pam"
)

// slotWaits keeps, for each elevation whose last pass was refused a slot, what it waits for,
// until a later pass ends without being refused: the limiter then hands a slot it offered that
// pass, and did not take, to the next waiting one.
type slotWaits struct {
	// queue is the controller's own, once it has started.
	queue atomic.Pointer[workqueue.TypedRateLimitingInterface[reconcile.Request]]

	mu    sync.Mutex
	waits map[reconcile.Request]*pam.BusyError
}

// passEnded gives back the slots the pass holds and, for a pass refused one, asks to be queued
// again at the priority when one frees.
func (s *slotWaits) passEnded(req reconcile.Request, slots *pam.Pass, priority int) {
	slots.End()
	busy := slots.Busy()
	s.mu.Lock()
	previous := s.waits[req]
	if busy != nil {
		if s.waits == nil {
			s.waits = map[reconcile.Request]*pam.BusyError{}
		}
		s.waits[req] = busy
	} else {
		delete(s.waits, req)
		if len(s.waits) == 0 {
			// A map keeps its peak size: after thousands of passes waited, let it go.
			s.waits = nil
		}
	}
	s.mu.Unlock()
	if previous != nil {
		previous.PassEnded()
	}
	if busy == nil {
		return
	}
	busy.NotifyWhenFree(priority, func() {
		if q := s.queue.Load(); q != nil {
			addRequestAt(*q, req, priority)
		}
	})
}
