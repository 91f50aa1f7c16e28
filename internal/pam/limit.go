package pam

import (
	"context"
	"errors"
	"slices"
	"sync"

	"golang.org/x/time/rate"
)

// Limit is the pace of the calls to one server, by all of its callers together.
type Limit struct {
	// QPS is the sustained number of calls per second.
	QPS float64
	// Burst is how many calls may go at once above QPS.
	Burst int
	// MaxConcurrentCalls is how many calls may be in flight at once.
	MaxConcurrentCalls int
}

// Limiter paces the calls to one server. One Limiter is shared by every client built for that
// server: a client is rebuilt when credentials rotate, the server's budget is not.
//
// It is also the server's bulkhead. The calls of a reconcile pass (a context from WithPass)
// share one call slot, taken without waiting and held until the pass ends: when every slot is
// taken the call fails at once with a *BusyError, and the pass is queued again when one frees
// instead of holding its worker. A hung or busy server so holds at most MaxConcurrentCalls
// workers. Other calls (the sweep's lists, the server checks) wait for a slot.
type Limiter struct {
	limiter *rate.Limiter

	mu    sync.Mutex
	slots chan struct{}
	// waiting are the passes refused a slot, one per key: the highest priority first, and
	// within one priority the oldest first.
	waiting []waiter
	// woken are the keys told of a free slot whose pass has not ended since: a slot one of
	// them will take is not offered to another.
	woken map[any]struct{}
}

type waiter struct {
	key      any
	priority int
	wake     func()
}

// ErrServerBusy is under the error of a call of a pass refused because every call slot of the
// server was taken. It is not a failure of the server.
var ErrServerBusy = errors.New("every call slot of the server is taken")

// BusyError is the error of a pass's call refused for want of a slot.
type BusyError struct {
	limiter *Limiter
	key     any
	// told is set when the pass had been told of a free slot that another took first: it
	// keeps its turn.
	told bool
}

func (e *BusyError) Error() string { return ErrServerBusy.Error() }
func (e *BusyError) Unwrap() error { return ErrServerBusy }

// NotifyWhenFree calls wake once, when a slot is free for the pass's key: at once if one is now,
// else when one frees and the keys of a higher priority, and those of its own refused before
// it, have been told. On a busy server the closes so go before the reads that may wait. A
// second call for the same key replaces the first.
func (e *BusyError) NotifyWhenFree(priority int, wake func()) {
	l := e.limiter
	l.mu.Lock()
	l.dropWaiterLocked(e.key)
	at := slices.IndexFunc(l.waiting, func(w waiter) bool {
		if e.told {
			return w.priority <= priority // told of a slot another took, it keeps its turn
		}
		return w.priority < priority
	})
	if at < 0 {
		at = len(l.waiting)
	}
	l.waiting = slices.Insert(l.waiting, at, waiter{key: e.key, priority: priority, wake: wake})
	l.mu.Unlock()
	l.wakeWaiters()
}

// Waiting reports whether passes wait for a slot of the server.
func (l *Limiter) Waiting() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.waiting) > 0
}

// PassEnded tells the limiter that a later pass of the key ended without being refused: it no
// longer waits, and a slot it was told of but did not take goes to the next waiting pass.
func (e *BusyError) PassEnded() {
	l := e.limiter
	l.mu.Lock()
	l.dropWaiterLocked(e.key)
	delete(l.woken, e.key)
	l.mu.Unlock()
	l.wakeWaiters()
}

func (l *Limiter) dropWaiterLocked(key any) {
	l.waiting = slices.DeleteFunc(l.waiting, func(w waiter) bool { return w.key == key })
	l.releaseEmptyLocked()
}

// releaseEmptyLocked lets the waiting list's array go once nobody waits: after thousands waited
// in a mass revocation, it would otherwise be kept for the life of the process.
func (l *Limiter) releaseEmptyLocked() {
	if len(l.waiting) == 0 {
		l.waiting = nil
	}
}

// wakeWaiters tells as many waiting passes as there are free slots not yet promised to a woken
// one.
func (l *Limiter) wakeWaiters() {
	l.mu.Lock()
	var wake []func()
	for len(l.waiting) > 0 && cap(l.slots)-len(l.slots) > len(l.woken) {
		w := l.waiting[0]
		l.waiting = l.waiting[1:]
		l.woken[w.key] = struct{}{}
		wake = append(wake, w.wake)
	}
	l.releaseEmptyLocked()
	l.mu.Unlock()
	for _, f := range wake {
		f()
	}
}

// NewLimiter returns a Limiter at the pace of l.
func NewLimiter(l Limit) *Limiter {
	return &Limiter{
		limiter: rate.NewLimiter(rate.Limit(l.QPS), l.Burst),
		slots:   make(chan struct{}, max(l.MaxConcurrentCalls, 1)),
		woken:   map[any]struct{}{},
	}
}

// Update applies a changed pace; calls in flight finish under the old one.
func (l *Limiter) Update(limit Limit) {
	if l.limiter.Limit() != rate.Limit(limit.QPS) {
		l.limiter.SetLimit(rate.Limit(limit.QPS))
	}
	if l.limiter.Burst() != limit.Burst {
		l.limiter.SetBurst(limit.Burst)
	}
	l.mu.Lock()
	slots := max(limit.MaxConcurrentCalls, 1)
	changed := cap(l.slots) != slots
	if changed {
		// Calls in flight release into the channel they took a slot from.
		l.slots = make(chan struct{}, slots)
	}
	l.mu.Unlock()
	if changed {
		l.wakeWaiters()
	}
}

// Pass is one reconcile pass's hold on call slots, one per server, until it ends: the calls of
// one pass (a read, a close, its confirmation) take one slot, and a pass that has begun is not
// refused halfway.
type Pass struct {
	key  any
	mu   sync.Mutex
	held map[*Limiter]func()
	busy *BusyError
}

type passKey struct{}

// WithPass returns a context whose calls take their server's slot without waiting, and the pass
// that holds the slots taken; key names the pass's object, for NotifyWhenFree. End gives them
// back.
func WithPass(ctx context.Context, key any) (context.Context, *Pass) {
	p := &Pass{key: key}
	return context.WithValue(ctx, passKey{}, p), p
}

// End gives back the slots the pass holds; it may be called more than once.
func (p *Pass) End() {
	p.mu.Lock()
	held := p.held
	p.held = nil
	p.mu.Unlock()
	for _, free := range held {
		free()
	}
}

// Busy is the refusal that stopped the pass, nil if none did.
func (p *Pass) Busy() *BusyError {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.busy
}

// hold takes the slot of l for the pass, unless it holds it already.
func (p *Pass) hold(l *Limiter, op string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.held[l]; ok {
		return nil
	}
	l.mu.Lock()
	slots := l.slots
	_, told := l.woken[p.key]
	delete(l.woken, p.key) // told of a slot or not, it takes one now or is refused
	l.dropWaiterLocked(p.key)
	// The free slots promised to the passes told of them are not for one that was not: the
	// order of the waiting passes holds.
	promised := !told && cap(slots)-len(slots) <= len(l.woken)
	l.mu.Unlock()
	refused := promised
	if !promised {
		select {
		case slots <- struct{}{}:
		default:
			refused = true
		}
	}
	if refused {
		p.busy = &BusyError{limiter: l, key: p.key, told: told}
		return &Error{Op: op, Class: ClassRetryable, Err: p.busy}
	}
	if p.held == nil {
		p.held = map[*Limiter]func(){}
	}
	p.held[l] = l.freeFunc(slots)
	return nil
}

// Hold takes, for a pass, the server's slot without making a call: a pass about to wait for
// another's call to the server (a shared list) counts against the server as if it made one.
// Outside a pass it does nothing.
func (l *Limiter) Hold(ctx context.Context, op string) error {
	if p, ok := ctx.Value(passKey{}).(*Pass); ok {
		return p.hold(l, op)
	}
	return nil
}

// acquire takes a slot, within a pass without waiting, and waits for a token. A wait cut short
// by ctx is a retryable error.
func (l *Limiter) acquire(ctx context.Context, op string) (release func(), err error) {
	if p, ok := ctx.Value(passKey{}).(*Pass); ok {
		if err := p.hold(l, op); err != nil {
			return nil, err
		}
		if err := l.limiter.Wait(ctx); err != nil {
			return nil, &Error{Op: op, Class: ClassRetryable, Err: err}
		}
		return func() {}, nil // the pass gives its slot back when it ends
	}
	l.mu.Lock()
	slots := l.slots
	l.mu.Unlock()
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return nil, &Error{Op: op, Class: ClassRetryable, Err: ctx.Err()}
	}
	free := l.freeFunc(slots)
	if err := l.limiter.Wait(ctx); err != nil {
		free()
		return nil, &Error{Op: op, Class: ClassRetryable, Err: err}
	}
	return free, nil
}

// freeFunc gives back a slot of slots and tells the next waiting pass.
func (l *Limiter) freeFunc(slots chan struct{}) func() {
	return func() {
		<-slots
		l.wakeWaiters()
	}
}

// WithLimiter returns a Client whose calls wait for l first.
func WithLimiter(c Client, l *Limiter) Client {
	return &limitedClient{inner: c, limiter: l}
}

type limitedClient struct {
	inner   Client
	limiter *Limiter
}

var _ Client = (*limitedClient)(nil)

func (c *limitedClient) Close(ctx context.Context, requestID string) error {
	release, err := c.limiter.acquire(ctx, "close")
	if err != nil {
		return err
	}
	defer release()
	return c.inner.Close(ctx, requestID)
}

func (c *limitedClient) Get(ctx context.Context, requestID string) (*Request, error) {
	release, err := c.limiter.acquire(ctx, "list")
	if err != nil {
		return nil, err
	}
	defer release()
	return c.inner.Get(ctx, requestID)
}

func (c *limitedClient) List(ctx context.Context, filter string, each func(Request)) error {
	release, err := c.limiter.acquire(ctx, "list")
	if err != nil {
		return err
	}
	defer release()
	return c.inner.List(ctx, filter, each)
}

func (c *limitedClient) Create(ctx context.Context, opts CreateOptions) (*Request, error) {
	release, err := c.limiter.acquire(ctx, "create")
	if err != nil {
		return nil, err
	}
	defer release()
	return c.inner.Create(ctx, opts)
}

func (c *limitedClient) Roles(ctx context.Context) ([]Role, error) {
	release, err := c.limiter.acquire(ctx, "list")
	if err != nil {
		return nil, err
	}
	defer release()
	return c.inner.Roles(ctx)
}
