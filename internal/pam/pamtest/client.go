// Package pamtest holds a fake pam.Client for unit tests: each call is a function field, and
// every call is recorded, so a test states what PAM answers and asserts what was asked.
package pamtest

import (
	"context"
	"fmt"
	"sync"

	"github.com/pam-operator/pam-operator/internal/pam"
)

// Client is a pam.Client whose calls run the function set for them. A call whose function is
// not set fails the test's expectation loudly: it returns an error of class Other.
type Client struct {
	CloseFunc  func(ctx context.Context, requestID string) error
	GetFunc    func(ctx context.Context, requestID string) (*pam.Request, error)
	ListFunc   func(ctx context.Context, filter string, each func(pam.Request)) error
	CreateFunc func(ctx context.Context, opts pam.CreateOptions) (*pam.Request, error)
	RolesFunc  func(ctx context.Context) ([]pam.Role, error)

	mu    sync.Mutex
	calls []string
}

var _ pam.Client = (*Client)(nil)

// Calls returns the operations called so far, in order: "close", "get", "list", "create",
// "roles".
func (c *Client) Calls() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.calls...)
}

// Count returns how many times op was called.
func (c *Client) Count(op string) int {
	n := 0
	for _, call := range c.Calls() {
		if call == op {
			n++
		}
	}
	return n
}

func (c *Client) record(op string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, op)
}

func unexpected(op string) error {
	return &pam.Error{Op: op, Class: pam.ClassOther, Message: fmt.Sprintf("unexpected call to %s in a test", op)}
}

// Close implements pam.Client.
func (c *Client) Close(ctx context.Context, requestID string) error {
	c.record("close")
	if c.CloseFunc == nil {
		return unexpected("close")
	}
	return c.CloseFunc(ctx, requestID)
}

// Get implements pam.Client.
func (c *Client) Get(ctx context.Context, requestID string) (*pam.Request, error) {
	c.record("get")
	if c.GetFunc == nil {
		return nil, unexpected("list")
	}
	return c.GetFunc(ctx, requestID)
}

// List implements pam.Client.
func (c *Client) List(ctx context.Context, filter string, each func(pam.Request)) error {
	c.record("list")
	if c.ListFunc == nil {
		return unexpected("list")
	}
	return c.ListFunc(ctx, filter, each)
}

// Create implements pam.Client.
func (c *Client) Create(ctx context.Context, opts pam.CreateOptions) (*pam.Request, error) {
	c.record("create")
	if c.CreateFunc == nil {
		return nil, unexpected("create")
	}
	return c.CreateFunc(ctx, opts)
}

// Roles implements pam.Client.
func (c *Client) Roles(ctx context.Context) ([]pam.Role, error) {
	c.record("roles")
	if c.RolesFunc == nil {
		return nil, unexpected("roles")
	}
	return c.RolesFunc(ctx)
}
