package controllers

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// TestSyncTimesIgnoreAListOlderThanAClose: the sweep's list may have been asked for before a
// pass sent a close. Recording it must not make the request known open again, or a retried close
// would go out without the read that a failed close calls for.
func TestSyncTimesIgnoreAListOlderThanAClose(t *testing.T) {
	var s readRecords
	const uid = types.UID("el")
	t0 := time.Unix(1_800_000_000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	s.store(uid, at(0), true)
	if got, ok := s.openAt(uid); !ok || !got.Equal(at(0)) {
		t.Fatalf("after a read that found it open: openAt = %v, %v", got, ok)
	}
	s.closeSent(uid, at(2*time.Second))
	if _, ok := s.openAt(uid); ok {
		t.Fatal("a close was sent: the request is no longer known open")
	}
	s.storeIfNewer(uid, at(time.Second), true)
	if _, ok := s.openAt(uid); ok {
		t.Fatal("a list from before the close made the request known open again")
	}
	if got, _ := s.load(uid); !got.Equal(at(0)) {
		t.Fatalf("a list from before the close was recorded as the last read: %v", got)
	}
	s.storeIfNewer(uid, at(3*time.Second), true)
	if got, ok := s.openAt(uid); !ok || !got.Equal(at(3*time.Second)) {
		t.Fatalf("a list from after the close: openAt = %v, %v", got, ok)
	}
	s.store(uid, at(4*time.Second), false)
	s.storeIfNewer(uid, at(3500*time.Millisecond), true)
	if _, ok := s.openAt(uid); ok {
		t.Fatal("a list older than the last read replaced it")
	}
	s.delete(uid)
	s.closeSent(uid, at(5*time.Second))
	if _, ok := s.load(uid); ok {
		t.Fatal("a close sent is not a read")
	}
	s.storeIfNewer(uid, at(4500*time.Millisecond), true)
	if _, ok := s.openAt(uid); ok {
		t.Fatal("with no read recorded, a list from before the close made the request known open")
	}
	s.storeIfNewer(uid, at(6*time.Second), true)
	s.store(uid, at(4800*time.Millisecond), true)
	if _, ok := s.openAt(uid); ok {
		t.Fatal("a list recorded after the close made the close forgotten: an older read counts as open again")
	}
}
