package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/pam-operator/pam-operator/emulator"
)

// errNothingHappened is under the error of a wait that timed out.
var errNothingHappened = errors.New("nothing happened")

// timeLog records when something first happened to each key, and wakes those waiting for it:
// the benchmarks wait on events rather than poll, which would take CPU from what they measure.
type timeLog struct {
	mu      sync.Mutex
	at      map[string]time.Time
	waiters map[string][]chan struct{}
}

func newTimeLog() *timeLog {
	return &timeLog{at: map[string]time.Time{}, waiters: map[string][]chan struct{}{}}
}

// record notes t for key unless an earlier time is already there.
func (l *timeLog) record(key string, t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, seen := l.at[key]; seen {
		return
	}
	l.at[key] = t
	for _, ch := range l.waiters[key] {
		close(ch)
	}
	delete(l.waiters, key)
}

// get is the time recorded for key.
func (l *timeLog) get(key string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.at[key]
	return t, ok
}

// wait returns the time recorded for key, waiting up to timeout for it.
func (l *timeLog) wait(ctx context.Context, key string, timeout time.Duration) (time.Time, error) {
	l.mu.Lock()
	if t, ok := l.at[key]; ok {
		l.mu.Unlock()
		return t, nil
	}
	ch := make(chan struct{})
	l.waiters[key] = append(l.waiters[key], ch)
	l.mu.Unlock()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-ch:
		t, _ := l.get(key)
		return t, nil
	case <-timer.C:
		return time.Time{}, fmt.Errorf("%s: %w within %s", key, errNothingHappened, timeout)
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	}
}

// count is how many of keys have a time.
func (l *timeLog) count(keys []string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, key := range keys {
		if _, ok := l.at[key]; ok {
			n++
		}
	}
	return n
}

// observeCloses is an emulator Observe hook that records into l when each request's first
// successful Close reached the emulator, keyed by the request id in lower case.
func observeCloses(l *timeLog) func(emulator.Call) {
	return func(call emulator.Call) {
		if call.Endpoint == emulator.EndpointCloseRequest && call.Status == http.StatusOK {
			l.record(strings.ToLower(call.RequestID), call.Time)
		}
	}
}
