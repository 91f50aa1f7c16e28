package controllers

import (
	"context"
	"sync"

	"golang.org/x/time/rate"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/pam"
)

// serverLimits paces the calls to one server, shared by every client built for it: a client is
// rebuilt when credentials rotate, the server's budget is not.
type serverLimits struct {
	limiter *rate.Limiter

	mu    sync.Mutex
	slots chan struct{}
}

// update applies the server's current spec.
func (l *serverLimits) update(limits pamv1.RateLimit) {
	if l.limiter.Limit() != rate.Limit(limits.QPS) {
		l.limiter.SetLimit(rate.Limit(limits.QPS))
	}
	if l.limiter.Burst() != int(limits.Burst) {
		l.limiter.SetBurst(int(limits.Burst))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if cap(l.slots) != int(limits.MaxConcurrentCalls) {
		// Calls in flight release into the channel they took a slot from.
		l.slots = make(chan struct{}, limits.MaxConcurrentCalls)
	}
}

func newServerLimits(limits pamv1.RateLimit) *serverLimits {
	return &serverLimits{
		limiter: rate.NewLimiter(rate.Limit(limits.QPS), int(limits.Burst)),
		slots:   make(chan struct{}, limits.MaxConcurrentCalls),
	}
}

// acquire waits for a slot and a token. Waiting holds a reconcile worker, which is the point:
// a server that is being paced must not be sent more work.
func (l *serverLimits) acquire(ctx context.Context, op string) (release func(), err error) {
	l.mu.Lock()
	slots := l.slots
	l.mu.Unlock()
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return nil, &pam.Error{Op: op, Class: pam.ClassRetryable, Err: ctx.Err()}
	}
	if err := l.limiter.Wait(ctx); err != nil {
		<-slots
		return nil, &pam.Error{Op: op, Class: pam.ClassRetryable, Err: err}
	}
	return func() { <-slots }, nil
}

// limitedClient is a pam.Client whose calls go through the server's limits.
type limitedClient struct {
	inner  pam.Client
	limits *serverLimits
}

var _ pam.Client = (*limitedClient)(nil)

func (c *limitedClient) Close(ctx context.Context, requestID string) error {
	release, err := c.limits.acquire(ctx, "close")
	if err != nil {
		return err
	}
	defer release()
	return c.inner.Close(ctx, requestID)
}

func (c *limitedClient) Get(ctx context.Context, requestID string) (*pam.Request, error) {
	release, err := c.limits.acquire(ctx, "list")
	if err != nil {
		return nil, err
	}
	defer release()
	return c.inner.Get(ctx, requestID)
}

func (c *limitedClient) List(ctx context.Context, filter string, each func(pam.Request)) error {
	release, err := c.limits.acquire(ctx, "list")
	if err != nil {
		return err
	}
	defer release()
	return c.inner.List(ctx, filter, each)
}

func (c *limitedClient) Create(ctx context.Context, opts pam.CreateOptions) (*pam.Request, error) {
	release, err := c.limits.acquire(ctx, "create")
	if err != nil {
		return nil, err
	}
	defer release()
	return c.inner.Create(ctx, opts)
}
