package controllers

import (
	"context"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/pam-operator/pam-operator/internal/pam"
)

// batchLookback is how far before the oldest open elevation of a server its batched list
// reaches back: a PAM request is created before the object that tracks it, usually minutes
// before, at most the days an approval may take. A request older than that is read on its own.
const batchLookback = 7 * 24 * time.Hour

// requestBatch is one list of a server's requests, shared by all of its elevations, so that a
// sync interval costs one call per server instead of one per elevation.
type requestBatch struct {
	// at is when the list was asked for; the answer is at least this fresh.
	at time.Time
	// since is the CreationTime bound of the list.
	since time.Time
	byID  map[requestKey]batchEntry
}

// batchEntry is what a sync takes from a listed request; the rest is not kept, as a batch may
// hold thousands. The status is interned: a handful of values shared by every entry.
type batchEntry struct {
	status pam.RequestStatus
	// expiration is PAM's ExpirationTime in Unix nanoseconds, 0 when it set none.
	expiration int64
}

// requestKey is a request id as its 16 bytes: a map key that needs no allocation of its own.
type requestKey [16]byte

// keyOf returns the key of a GUID request id in any case; ok is false for anything else.
func keyOf(id string) (key requestKey, ok bool) {
	norm, err := pam.NormalizeID(id)
	if err != nil {
		return key, false
	}
	if _, err := hex.Decode(key[:], []byte(strings.ReplaceAll(norm, "-", ""))); err != nil {
		return key, false
	}
	return key, true
}

// batchSyncer keeps the newest batch of each server. The documented $filter has no `or`, so
// the requests cannot be named one by one in a single call: the batch lists the account's
// requests created within a window instead, and fans the result out.
type batchSyncer struct {
	mu      sync.Mutex
	batches map[string]*requestBatch
	splits  map[string]listSplit
	flight  singleflight.Group
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

// lookup returns the request as a batch of the server shows it, taken after notBefore and
// covering requests created since since; it lists the server's requests again when the newest
// batch is too old or too narrow. found is false when the batch does not hold the request
// (created before the window, or not the account's): the caller then reads it alone.
func (b *batchSyncer) lookup(ctx context.Context, serverKey string, connect func(context.Context) (pam.Client, error), id string, notBefore, since time.Time, now func() time.Time) (req pam.Request, at time.Time, found bool, err error) {
	for attempt := 0; attempt < 2; attempt++ {
		batch := b.usable(serverKey, notBefore, since)
		if batch == nil {
			batch, err = b.fetch(ctx, serverKey, connect, since, now)
			if err != nil {
				return pam.Request{}, time.Time{}, false, err
			}
		}
		// A fetch shared with a caller that started it earlier may predate what this one needs.
		if batch.at.After(notBefore) && !batch.since.After(since) {
			req, found := batch.request(id)
			return req, batch.at, found, nil
		}
	}
	return pam.Request{}, time.Time{}, false, nil
}

// request returns the request with the id as the batch lists it.
func (batch *requestBatch) request(id string) (pam.Request, bool) {
	key, ok := keyOf(id)
	entry, found := batch.byID[key]
	if !ok || !found {
		return pam.Request{}, false
	}
	req := pam.Request{ID: id, Status: entry.status}
	if entry.expiration != 0 {
		req.ExpirationTime = time.Unix(0, entry.expiration).UTC()
	}
	return req, true
}

// batchSince is the CreationTime bound of a batch asked for at now. It moves by the hour, so
// that the batches of one hour can serve each other's callers.
func batchSince(now time.Time) time.Time {
	return now.Add(-batchLookback).Truncate(time.Hour)
}

// fresher reports whether the server's newest batch was taken after notBefore.
func (b *batchSyncer) fresher(serverKey string, notBefore, since time.Time) bool {
	return b.usable(serverKey, notBefore, since) != nil
}

func (b *batchSyncer) usable(serverKey string, notBefore, since time.Time) *requestBatch {
	b.mu.Lock()
	defer b.mu.Unlock()
	batch := b.batches[serverKey]
	if batch == nil || !batch.at.After(notBefore) || batch.since.After(since) {
		return nil
	}
	return batch
}

// connectFailure is a batch fetch that could not connect to the server: the credentials, not
// PAM, are the problem.
type connectFailure struct{ err error }

func (e *connectFailure) Error() string { return e.err.Error() }
func (e *connectFailure) Unwrap() error { return e.err }

func (b *batchSyncer) fetch(ctx context.Context, serverKey string, connect func(context.Context) (pam.Client, error), since time.Time, now func() time.Time) (*requestBatch, error) {
	v, err, _ := b.flight.Do(serverKey, func() (any, error) {
		pc, err := connect(ctx)
		if err != nil {
			return nil, &connectFailure{err: err}
		}
		batch := &requestBatch{at: now(), since: since, byID: map[requestKey]batchEntry{}}
		b.mu.Lock()
		split := b.splits[serverKey]
		b.mu.Unlock()
		split.windows = max(split.windows, 1)
		for {
			counts, err := listInWindows(ctx, pc, since, batch.at, split.windows, batch.add)
			if err == nil {
				split.fitted = max(split.fitted, slices.Max(counts))
				split.windows = split.narrowest(counts)
				break
			}
			if !errors.Is(err, pam.ErrAnswerTooLarge) || split.windows >= maxListWindows {
				// The narrowest split is kept, so that the next fetch does not search for it again.
				b.keepSplit(serverKey, split)
				return nil, err
			}
			// What fitted before did not this time (longer requests): learn it again.
			split.windows, split.fitted = split.windows*2, 0
			clear(batch.byID)
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.batches == nil {
			b.batches = map[string]*requestBatch{}
		}
		b.batches[serverKey] = batch
		b.keepSplitLocked(serverKey, split)
		return batch, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*requestBatch), nil
}

func (b *batchSyncer) keepSplit(serverKey string, split listSplit) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.keepSplitLocked(serverKey, split)
}

func (b *batchSyncer) keepSplitLocked(serverKey string, split listSplit) {
	if b.splits == nil {
		b.splits = map[string]listSplit{}
	}
	b.splits[serverKey] = split
}

// listInWindows lists the requests created since since, in windows of equal length up to until
// and one open-ended after it, hands each request to add and returns how many each window held.
func listInWindows(ctx context.Context, pc pam.Client, since, until time.Time, windows int, add func(pam.Request)) ([]int, error) {
	step := until.Sub(since) / time.Duration(windows)
	from := since
	counts := make([]int, windows)
	for i := range windows {
		filter := pam.FilterCreatedSince(from)
		var to time.Time
		if i < windows-1 {
			// The bounds are written in milliseconds: a window ends exactly where the next begins.
			to = since.Add(step * time.Duration(i+1)).Truncate(time.Millisecond)
			filter = pam.FilterCreatedBetween(from, to)
		}
		err := pc.List(ctx, filter, func(r pam.Request) {
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
func (batch *requestBatch) add(r pam.Request) {
	key, ok := keyOf(r.ID)
	if !ok {
		return // not a GUID: no elevation can name it
	}
	entry := batchEntry{status: intern(r.Status)}
	if !r.ExpirationTime.IsZero() {
		entry.expiration = r.ExpirationTime.UnixNano()
	}
	batch.byID[key] = entry
}

// forget drops a server's batch and its list split, when its client changes or it is deleted.
func (b *batchSyncer) forget(serverKey string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.batches, serverKey)
	delete(b.splits, serverKey)
}
