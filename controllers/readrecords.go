package controllers

// What this process remembers of its reads of each request.

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
)

// nextSync is when the request should next be read from PAM: now while the object shows no
// read. A copy older than the status this process wrote after reading (a cache that has not
// caught up) would otherwise report the request never read, patch that over the status, and
// leave the elevation waiting for a sync nothing schedules: the sweep takes only Ready ones.
func (r *PamElevationReconciler) nextSync(el *pamv1.PamElevation) time.Time {
	if el.Status.LastSyncTime == nil {
		return time.Time{}
	}
	return r.lastSync(el).Add(r.syncIntervalOf(el))
}

// pendingSyncInterval is how often a request not granted yet is read: a person may be waiting
// on kubectl wait for its approval. Reads go through the server's shared list, so a thousand
// pending elevations still cost one call per server and interval.
const pendingSyncInterval = 10 * time.Second

// syncIntervalOf is how often el's request is read.
func (r *PamElevationReconciler) syncIntervalOf(el *pamv1.PamElevation) time.Duration {
	if pendingReason(el) != "" {
		return min(r.SyncInterval, pendingSyncInterval)
	}
	return r.SyncInterval
}

// statusSyncRefresh is how old status.lastSyncTime may grow while syncs learn nothing new.
const statusSyncRefresh = time.Hour

// lastSync is when the request was last read from PAM: in memory since this process started,
// else from the status.
func (r *PamElevationReconciler) lastSync(el *pamv1.PamElevation) time.Time {
	var last time.Time
	if el.Status.LastSyncTime != nil {
		last = el.Status.LastSyncTime.Time
	}
	if t, ok := r.reads.load(el.UID); ok && t.After(last) {
		last = t
	}
	return last
}

// readRecords records, by object UID, what this process learned of each request from PAM: when
// it was last read and whether it was open, when a close was last sent, and whether it ended.
// A plain map of small values: a third of a sync.Map's size per entry, which counts at
// thousands of elevations.
type readRecords struct {
	mu sync.Mutex
	m  map[types.UID]readRecord
}

type readRecord struct {
	at int64 // Unix nanoseconds; 0 when the request has not been read
	// open: the read found the request open.
	open bool
	// ended: the request has ended in PAM, as a confirmed close or a read showed, and the object
	// only waits for its release.
	ended bool
	// escrowUsed: an Event told that a call for the object went out with the escrow.
	escrowUsed bool
	// closeSent is when a close was last sent, in Unix nanoseconds: a read from before it no
	// longer says whether the request is open.
	closeSent int64
	// closeAccepted is when PAM answered 200 to that close, in Unix nanoseconds, until a read
	// newer than it has confirmed or refuted it; 0 when none waits.
	closeAccepted int64
}

func (s *readRecords) load(uid types.UID) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.m[uid]
	if !ok || rec.at == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, rec.at), true
}

// openAt is when the request was last read open, if it was and no close has been sent since.
func (s *readRecords) openAt(uid types.UID) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.m[uid]
	if !ok || !rec.open || rec.closeSent >= rec.at {
		return time.Time{}, false
	}
	return time.Unix(0, rec.at), true
}

// store records a read of the request made at t.
func (s *readRecords) store(uid types.UID, t time.Time, open bool) {
	s.update(uid, func(rec *readRecord) { rec.at, rec.open = t.UnixNano(), open })
}

// storeIfNewer records a read made at t unless a newer read or a close since makes it stale:
// for the sweep, whose list may have been taken while a pass was reading or closing.
func (s *readRecords) storeIfNewer(uid types.UID, t time.Time, open bool) {
	s.update(uid, func(rec *readRecord) {
		if rec.at < t.UnixNano() && rec.closeSent < t.UnixNano() {
			rec.at, rec.open = t.UnixNano(), open
		}
	})
}

// sentClose reports whether this process has sent a close of the request.
func (s *readRecords) sentClose(uid types.UID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[uid].closeSent != 0
}

// closeSentAt is when a close was last sent, in Unix nanoseconds, 0 for never.
func (s *readRecords) closeSentAt(uid types.UID) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[uid].closeSent
}

// restoreCloseSent undoes closeSent for a close that was not sent after all.
func (s *readRecords) restoreCloseSent(uid types.UID, at int64) {
	s.update(uid, func(rec *readRecord) { rec.closeSent = at })
}

// closeSent records that a close is going out at t: whatever its outcome, the request may be
// closed now, and only a newer read can tell.
func (s *readRecords) closeSent(uid types.UID, t time.Time) {
	s.update(uid, func(rec *readRecord) { rec.closeSent = t.UnixNano() })
}

// acceptClose records that PAM answered 200 at t to the close just sent: a read newer than t
// is to confirm it.
func (s *readRecords) acceptClose(uid types.UID, t time.Time) {
	s.update(uid, func(rec *readRecord) { rec.closeAccepted = t.UnixNano() })
}

// closeAcceptedAt is when PAM accepted the close that waits for its confirming read.
func (s *readRecords) closeAcceptedAt(uid types.UID) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at := s.m[uid].closeAccepted
	return time.Unix(0, at), at != 0
}

// closeConfirmed records that a read after the accepted close has been judged.
func (s *readRecords) closeConfirmed(uid types.UID) {
	s.update(uid, func(rec *readRecord) { rec.closeAccepted = 0 })
}

// ended records that the request of uid has ended in PAM.
func (s *readRecords) ended(uid types.UID) {
	s.update(uid, func(rec *readRecord) { rec.ended = true })
}

// endedInPAM reports whether this process saw the request of uid end in PAM.
func (s *readRecords) endedInPAM(uid types.UID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[uid].ended
}

// firstEscrowUse records that a call for uid went out with the escrow, and reports whether it
// is the first this process saw.
func (s *readRecords) firstEscrowUse(uid types.UID) (first bool) {
	s.update(uid, func(rec *readRecord) { first, rec.escrowUsed = !rec.escrowUsed, true })
	return first
}

// update changes the record of uid, which starts empty, under the lock.
func (s *readRecords) update(uid types.UID, change func(*readRecord)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[types.UID]readRecord{}
	}
	rec := s.m[uid]
	change(&rec)
	s.m[uid] = rec
}

func (s *readRecords) delete(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, uid)
}
