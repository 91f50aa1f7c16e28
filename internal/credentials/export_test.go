package credentials

import (
	"context"
	"reflect"

	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
)

// RefreshEscrowAsDecidedBefore reads the server's credentials and writes them to its escrow as a
// refresh decided before anything since: what a refresh does once it holds the escrow lock.
func RefreshEscrowAsDecidedBefore(ctx context.Context, c *Connector, server pamv1.ServerObject) error {
	creds, err := c.loadCredentials(ctx, server)
	if err != nil {
		return err
	}
	creds.readAt = c.clock().Now()
	return c.writeEscrow(ctx, server, creds, true)
}

// Queued is how many callers wait for the read queued behind the one in flight for obj's type
// and key.
func (r *CoalescingReader) Queued(obj client.Object, key client.ObjectKey) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	pair := r.flights[reflect.TypeOf(obj).Elem().String()+"/"+key.String()]
	if pair == nil || pair.next == nil {
		return 0
	}
	return pair.next.callers
}
