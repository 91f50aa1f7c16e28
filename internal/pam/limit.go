package pam

import (
	"context"
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
type Limiter struct {
	limiter *rate.Limiter

	mu    sync.Mutex
	slots chan struct{}
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
	defer l.mu.Unlock()
	if slots := max(limit.MaxConcurrentCalls, 1); cap(l.slots) != slots {
		// Calls in flight release into the channel they took a slot from.
		l.slots = make(chan struct{}, slots)
	}
}

// acquire waits for a slot and a token. A wait cut short by ctx is a retryable error.
func (l *Limiter) acquire(ctx context.Context, op string) (release func(), err error) {
	l.mu.Lock()
	slots := l.slots
	l.mu.Unlock()
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return nil, &Error{Op: op, Class: ClassRetryable, Err: ctx.Err()}
	}
	if err := l.limiter.Wait(ctx); err != nil {
		<-slots
		return nil, &Error{Op: op, Class: ClassRetryable, Err: err}
	}
	return func() { <-slots }, nil
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
