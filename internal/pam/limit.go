package pam

import (
	"context"
	"errors"
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
// A call made under a Holder (a reconcile pass) does not wait for a call slot: when every slot
// is taken it fails at once with ErrServerBusy, and the caller is told when one frees, so a hung
// or busy server holds at most its MaxConcurrentCalls reconcile workers, never all of them.
// Other calls (the periodic sweep's lists) wait for a slot.
type Limiter struct {
	limiter *rate.Limiter

	mu    sync.Mutex
	slots chan struct{}
	// waiting are told, in turn, when a slot frees.
	waiting []func()
}

// ErrServerBusy is under the error of a call made under a Holder while every call slot of the
// server was taken. It is not a failure: the pass is queued again once a slot frees
// (BusyError.NotifyWhenFree).
var ErrServerBusy = errors.New("every call slot of the server is taken")

// BusyError is the error of a call refused for want of a slot.
type BusyError struct {
	limiter *Limiter
}

func (e *BusyError) Error() string { return ErrServerBusy.Error() }
func (e *BusyError) Unwrap() error { return ErrServerBusy }

// NotifyWhenFree calls wake once, when a slot of the server frees (perhaps at once, should one
// have freed since the call was refused).
func (e *BusyError) NotifyWhenFree(wake func()) {
	l := e.limiter
	l.mu.Lock()
	if len(l.slots) < cap(l.slots) {
		l.mu.Unlock()
		wake()
		return
	}
	l.waiting = append(l.waiting, wake)
	l.mu.Unlock()
}

// NewLimiter returns a Limiter at the pace of l.
func NewLimiter(l Limit) *Limiter {
	return &Limiter{
		limiter: rate.NewLimiter(rate.Limit(l.QPS), l.Burst),
		slots:   make(chan struct{}, max(l.MaxConcurrentCalls, 1)),
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
	if slots := max(limit.MaxConcurrentCalls, 1); cap(l.slots) != slots {
		// Calls in flight release into the channel they took a slot from; those waiting try
		// the new one.
		l.slots = make(chan struct{}, slots)
		waiting := l.waiting
		l.waiting = nil
		l.mu.Unlock()
		for _, wake := range waiting {
			wake()
		}
		return
	}
	l.mu.Unlock()
}

// Holder keeps the call slots a reconcile pass took, one per server, until the pass ends: the
// calls of one pass (a read, a close, its confirmation) take one slot, and a pass that has
// begun is not refused halfway.
type Holder struct {
	mu   sync.Mutex
	held map[*Limiter]func()
}

type holderKey struct{}

// WithHolder returns a context whose calls take slots without waiting, and the function that
// gives back what they took, to be called when the pass ends.
func WithHolder(ctx context.Context) (context.Context, func()) {
	h := &Holder{}
	return context.WithValue(ctx, holderKey{}, h), h.release
}

func (h *Holder) release() {
	h.mu.Lock()
	held := h.held
	h.held = nil
	h.mu.Unlock()
	for _, free := range held {
		free()
	}
}

// acquire takes a slot, and waits for a token. Under a Holder, a slot already held is used
// again and a slot is never waited for. A wait cut short by ctx is a retryable error.
func (l *Limiter) acquire(ctx context.Context, op string) (release func(), err error) {
	h, _ := ctx.Value(holderKey{}).(*Holder)
	if h != nil {
		h.mu.Lock()
		_, held := h.held[l]
		h.mu.Unlock()
		if !held {
			free, ok := l.tryTake()
			if !ok {
				return nil, &Error{Op: op, Class: ClassRetryable, Err: &BusyError{limiter: l}}
			}
			h.mu.Lock()
			if h.held == nil {
				h.held = map[*Limiter]func(){}
			}
			h.held[l] = free
			h.mu.Unlock()
		}
		if err := l.limiter.Wait(ctx); err != nil {
			return nil, &Error{Op: op, Class: ClassRetryable, Err: err}
		}
		return func() {}, nil
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

// tryTake takes a slot if one is free.
func (l *Limiter) tryTake() (free func(), ok bool) {
	l.mu.Lock()
	slots := l.slots
	l.mu.Unlock()
	select {
	case slots <- struct{}{}:
		return l.freeFunc(slots), true
	default:
		return nil, false
	}
}

// freeFunc gives back a slot of slots and tells the first waiting caller.
func (l *Limiter) freeFunc(slots chan struct{}) func() {
	return func() {
		<-slots
		l.mu.Lock()
		var wake func()
		if len(l.waiting) > 0 {
			wake = l.waiting[0]
			l.waiting = l.waiting[1:]
		}
		l.mu.Unlock()
		if wake != nil {
			wake()
		}
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
