package pam

import (
	"context"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/pam-operator/pam-operator/pamapi"
)

// batchLookback is how far before the oldest open elevation of a server its batched list
// reaches back: a PAM request is created before the object that tracks it, usually minutes
// before, at most the days an approval may take. A request older than that is read on its own.
const batchLookback = 7 * 24 * time.Hour

// batchEntry is what a sync takes from a listed request; the rest is not kept, as a batch may
// hold thousands. The status is interned: a handful of values shared by every entry.
type batchEntry struct {
	status RequestStatus
	// expiration is PAM's ExpirationTime in Unix nanoseconds, 0 when it set none.
	expiration int64
}

// requestKey is a request id as its 16 bytes: a map key that needs no allocation of its own.
type requestKey [16]byte

// keyOf returns the key of a GUID request id in any case; ok is false for anything else.
func keyOf(id string) (key requestKey, ok bool) {
	norm, err := NormalizeID(id)
	if err != nil {
		return key, false
	}
	if _, err := hex.Decode(key[:], []byte(strings.ReplaceAll(norm, "-", ""))); err != nil {
		return key, false
	}
	return key, true
}

// Batcher keeps the newest list of one server's requests, shared by all of its callers, so that
// a sync interval costs one call per server instead of one per request. The documented $filter
// has no `or`, so the requests cannot be named one by one in a single call: the batch lists the
// account's requests created within a window instead, and fans the result out.
type Batcher struct {
	// slots is the server's limiter: a pass that waits for a list another asked for holds a
	// call slot as if it made the call.
	slots *Limiter
	mu    sync.Mutex
	batch *Batch
	// cuts are the CreationTime instants, ascending, the server's list is cut into windows at,
	// because one answer would hold more than the client reads.
	cuts   []time.Time
	flight singleflight.Group
}

// NewBatcher returns the Batcher of the server whose calls l paces.
func NewBatcher(l *Limiter) *Batcher {
	return &Batcher{slots: l}
}

// Batch is one list of a server's requests.
type Batch struct {
	// At is when the list was asked for; the answer is at least this fresh.
	At time.Time
	// since is the CreationTime bound of the list.
	since time.Time
	byID  map[requestKey]batchEntry
}

// window is one CreationTime window of a list: from its start until the next one's, the last
// open-ended; count is how many requests it held.
type window struct {
	from  time.Time
	count int
}

// learn returns the cuts the next list starts from: the windows this one was answered in, an
// empty one merged into its neighbour. A window that did not fit once never fits again while
// its requests stay in the lookback — PAM keeps them, and new ones land in the last window — so
// cuts are dropped only as the lookback moves past them. Neighbours that did fit are not merged
// on their counts either: requests differ in length, and a merge judged by count may overflow at
// every fetch.
func learn(windows []window) []time.Time {
	var cuts []time.Time
	held := 0
	for i, w := range windows {
		if i > 0 && held > 0 && w.count > 0 {
			cuts = append(cuts, w.from)
			held = 0
		}
		held += w.count
	}
	return cuts
}

// minListWindow is the shortest window a list is halved to: one that still overflows holds
// requests no list can name, and they are read alone.
const minListWindow = time.Second

// Lookup returns the request as a batch shows it, taken after notBefore and covering requests
// created since since; it lists the server's requests again when the newest batch is too old or
// too narrow. found is false when the batch does not hold the request (created before the
// window, or not the account's): the caller then reads it alone.
func (b *Batcher) Lookup(ctx context.Context, connect func(context.Context) (Client, error), id string, notBefore, since time.Time, now func() time.Time) (req Request, at time.Time, found bool, err error) {
	for attempt := 0; attempt < 2; attempt++ {
		batch := b.usable(notBefore, since)
		if batch == nil {
			batch, err = b.Fetch(ctx, connect, since, now)
			if err != nil {
				return Request{}, time.Time{}, false, err
			}
		}
		// A fetch shared with a caller that started it earlier may predate what this one needs.
		if batch.At.After(notBefore) && !batch.since.After(since) {
			req, found := batch.Request(id)
			return req, batch.At, found, nil
		}
	}
	return Request{}, time.Time{}, false, nil
}

// Request returns the request with the id as the batch lists it.
func (batch *Batch) Request(id string) (Request, bool) {
	key, ok := keyOf(id)
	entry, found := batch.byID[key]
	if !ok || !found {
		return Request{}, false
	}
	req := Request{ID: id, Status: entry.status}
	if entry.expiration != 0 {
		req.ExpirationTime = time.Unix(0, entry.expiration).UTC()
	}
	return req, true
}

// BatchSince is the CreationTime bound of a batch asked for at now. It moves by the hour, so
// that the batches of one hour can serve each other's callers.
func BatchSince(now time.Time) time.Time {
	return now.Add(-batchLookback).Truncate(time.Hour)
}

// Contended reports whether passes wait for the server's call slots: a read that many need
// had better come from one list than from a call each.
func (b *Batcher) Contended() bool {
	return b.slots != nil && b.slots.Waiting()
}

// Fresher reports whether the newest batch was taken after notBefore and covers since.
func (b *Batcher) Fresher(notBefore, since time.Time) bool {
	return b.usable(notBefore, since) != nil
}

func (b *Batcher) usable(notBefore, since time.Time) *Batch {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.batch == nil || !b.batch.At.After(notBefore) || b.batch.since.After(since) {
		return nil
	}
	return b.batch
}

// ConnectError is a batch fetch that could not connect to the server: the credentials, not
// PAM, are the problem.
type ConnectError struct{ Err error }

func (e *ConnectError) Error() string { return e.Err.Error() }
func (e *ConnectError) Unwrap() error { return e.Err }

// Fetch lists the server's requests created since since, through the client connect returns,
// and keeps the list as the newest batch. Concurrent fetches share one list.
func (b *Batcher) Fetch(ctx context.Context, connect func(context.Context) (Client, error), since time.Time, now func() time.Time) (*Batch, error) {
	if b.slots != nil {
		if err := b.slots.Hold(ctx, "list"); err != nil {
			return nil, err
		}
	}
	v, err, _ := b.flight.Do("", func() (any, error) {
		pc, err := connect(ctx)
		if err != nil {
			return nil, &ConnectError{Err: err}
		}
		batch := &Batch{At: now(), since: since, byID: map[requestKey]batchEntry{}}
		b.mu.Lock()
		cuts := b.cuts
		b.mu.Unlock()
		got, err := listInWindows(ctx, pc, since, batch.At, cuts, batch.add)
		b.mu.Lock()
		defer b.mu.Unlock()
		if err != nil {
			// The halves found so far are kept: the next list does not overflow where this one did.
			b.cuts = slices.CompactFunc(slices.SortedFunc(slices.Values(slices.Concat(cuts, got.halves)), time.Time.Compare), time.Time.Equal)
			return nil, err
		}
		b.batch, b.cuts = batch, learn(got.windows)
		return batch, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*Batch), nil
}

// listing is what a list in windows found: the windows it was answered in, and the instants
// it halved windows at.
type listing struct {
	windows []window
	halves  []time.Time
}

// listInWindows lists the requests created since since, in windows cut at the cuts after since
// and before until, the last open-ended, and hands each request to add. A window whose answer is
// too large is listed again in halves, and only it: the windows that fitted are not asked for
// again. On an error, what it found so far is returned with it.
func listInWindows(ctx context.Context, pc Client, since, until time.Time, cuts []time.Time, add func(Request)) (listing, error) {
	var found listing
	from := since
	for _, cut := range cuts {
		if !cut.After(from) || !cut.Before(until) {
			continue // outside the lookback: it ages out of the split
		}
		if err := listWindow(ctx, pc, from, cut, false, add, &found); err != nil {
			return found, err
		}
		from = cut
	}
	err := listWindow(ctx, pc, from, until, true, add, &found)
	return found, err
}

// listWindow lists the requests created from from until to, or since from when openEnded; an
// answer too large is asked for again in two halves.
func listWindow(ctx context.Context, pc Client, from, to time.Time, openEnded bool, add func(Request), found *listing) error {
	filter := FilterCreatedBetween(from, to)
	if openEnded {
		filter = FilterCreatedSince(from)
	}
	n := 0
	err := pc.List(ctx, filter, func(r Request) {
		add(r) // what an answer cut short held is listed again below: the same entries
		n++
	})
	if err == nil {
		found.windows = append(found.windows, window{from: from, count: n})
		return nil
	}
	if !errors.Is(err, ErrAnswerTooLarge) || to.Sub(from) < 2*minListWindow {
		return err // or a window of a second that overflows: its requests are read alone
	}
	// The bounds are written in milliseconds: a window ends exactly where the next begins.
	mid := from.Add(to.Sub(from) / 2).Truncate(time.Millisecond)
	found.halves = append(found.halves, mid)
	if err := listWindow(ctx, pc, from, mid, false, add, found); err != nil {
		return err
	}
	return listWindow(ctx, pc, mid, to, openEnded, add, found)
}

// add keeps what a sync needs of a request.
func (batch *Batch) add(r Request) {
	key, ok := keyOf(r.ID)
	if !ok {
		return // not a GUID: no elevation can name it
	}
	entry := batchEntry{status: internStatus(r.Status)}
	if !r.ExpirationTime.IsZero() {
		entry.expiration = r.ExpirationTime.UnixNano()
	}
	batch.byID[key] = entry
}

// internStatus returns the constant of a known state, so that thousands of entries share it.
func internStatus(s RequestStatus) RequestStatus {
	if i := slices.Index(pamapi.Statuses, s); i >= 0 {
		return pamapi.Statuses[i]
	}
	return s
}
