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
	slots  *Limiter
	mu     sync.Mutex
	batch  *Batch
	split  listSplit
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

// listSplit is how a server's list is asked for: in how many CreationTime windows, because one
// answer would hold more than the client reads, and the most requests one answer has held.
type listSplit struct {
	windows int
	fitted  int
}

// narrowest returns the fewest windows the list needs, judged from what each of windows held:
// halved while the merged neighbours would hold no more requests than one answer already has.
// The account's requests age out of the lookback, so a split made for a busy week does not
// cost a call per window forever. Judged by count, not bytes, a halving may overflow after
// all: the next fetch then splits again and learns anew what fits.
func (split listSplit) narrowest(counts []int) int {
	for len(counts) > 1 && len(counts)%2 == 0 {
		merged := make([]int, len(counts)/2)
		for i := range merged {
			merged[i] = counts[2*i] + counts[2*i+1]
		}
		if slices.Max(merged) > split.fitted {
			break
		}
		counts = merged
	}
	return len(counts)
}

// maxListWindows bounds the split of a list: at 7 days of lookback, windows of 40 minutes.
const maxListWindows = 256

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
		split := b.split
		b.mu.Unlock()
		split.windows = max(split.windows, 1)
		for {
			counts, err := listInWindows(ctx, pc, since, batch.At, split.windows, batch.add)
			if err == nil {
				split.fitted = max(split.fitted, slices.Max(counts))
				split.windows = split.narrowest(counts)
				break
			}
			if !errors.Is(err, ErrAnswerTooLarge) || split.windows >= maxListWindows {
				// The narrowest split is kept, so that the next fetch does not search for it again.
				b.mu.Lock()
				b.split = split
				b.mu.Unlock()
				return nil, err
			}
			// What fitted before did not this time (longer requests): learn it again.
			split.windows, split.fitted = split.windows*2, 0
			clear(batch.byID)
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		b.batch, b.split = batch, split
		return batch, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*Batch), nil
}

// listInWindows lists the requests created since since, in windows of equal length up to until
// and one open-ended after it, hands each request to add and returns how many each window held.
func listInWindows(ctx context.Context, pc Client, since, until time.Time, windows int, add func(Request)) ([]int, error) {
	step := until.Sub(since) / time.Duration(windows)
	from := since
	counts := make([]int, windows)
	for i := range windows {
		filter := FilterCreatedSince(from)
		var to time.Time
		if i < windows-1 {
			// The bounds are written in milliseconds: a window ends exactly where the next begins.
			to = since.Add(step * time.Duration(i+1)).Truncate(time.Millisecond)
			filter = FilterCreatedBetween(from, to)
		}
		err := pc.List(ctx, filter, func(r Request) {
			add(r)
			counts[i]++
		})
		if err != nil {
			return nil, err
		}
		from = to
	}
	return counts, nil
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
