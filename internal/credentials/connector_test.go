package credentials_test

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/pam-operator/pam-operator/internal/credentials"
	"github.com/pam-operator/pam-operator/internal/pam"
)

// TestCloseBurstReadsCredentialsOnce: in a burst, a close goes out with credentials read a
// moment before and reads them no more, so a mass revocation does not cost the API server a
// Secret read per close; a close that is refused reads them at once and gets the client for the
// changed Secret. The window is an hour here, so that the test does not depend on timing.
func TestCloseBurstReadsCredentialsOnce(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	reads := &secretReads{Reader: k8sClient}
	c, server, secret := connectorOfOwnServer(t, reads)
	c.FreshFor = time.Hour
	first, err := c.Connect(ctx, server)
	g.Expect(err).NotTo(HaveOccurred())
	readsAfterConnect := reads.n()
	g.Expect(readsAfterConnect).To(BeNumerically(">", 0))

	for range 50 {
		ahead, _ := c.ConnectAhead(ctx, server)
		g.Expect(ahead).To(BeIdenticalTo(first))
	}
	g.Expect(reads.n()).To(Equal(readsAfterConnect), "closes within the window read no credentials")

	rotatePassword(t, secret, "second-password")
	ahead, current := c.ConnectAhead(ctx, server)
	g.Expect(ahead).To(BeIdenticalTo(first), "the close goes out with the client it has")
	g.Expect(reads.n()).To(Equal(readsAfterConnect))
	latest, err := current()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(reads.n()).To(BeNumerically(">", readsAfterConnect), "a refused close reads the credentials")
	g.Expect(latest).NotTo(BeIdenticalTo(first), "and gets the client for the changed Secret")

	// Once the window has passed, each close reads them alongside again.
	c.FreshFor = time.Nanosecond
	readsBefore := reads.n()
	ahead, current = c.ConnectAhead(ctx, server)
	g.Expect(ahead).To(BeIdenticalTo(latest))
	again, err := current()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(again).To(BeIdenticalTo(latest))
	g.Expect(reads.n()).To(BeNumerically(">", readsBefore), "read alongside the close")
}

// TestOlderCredentialsReadDoesNotReplaceNewerClient: of two reads of a server's credentials, the
// one that began first may finish last, holding the Secret as it was before a rotation. The
// client built from the later read stays; the earlier read gets it too.
func TestOlderCredentialsReadDoesNotReplaceNewerClient(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	held := &heldSecretRead{Reader: k8sClient, read: make(chan struct{}), release: make(chan struct{})}
	c, server, secret := connectorOfOwnServer(t, held)
	type result struct {
		client pam.Client
		err    error
	}
	earlier := make(chan result, 1)
	go func() {
		pc, err := c.Connect(ctx, server)
		earlier <- result{pc, err}
	}()
	<-held.read // the earlier read holds the first password

	rotatePassword(t, secret, "second-password")
	later, err := c.Connect(ctx, server)
	g.Expect(err).NotTo(HaveOccurred())
	close(held.release)
	got := <-earlier
	g.Expect(got.err).NotTo(HaveOccurred())
	g.Expect(got.client).To(BeIdenticalTo(later), "the earlier read hands out the newer client")
	ahead, _ := c.ConnectAhead(ctx, server)
	g.Expect(ahead).To(BeIdenticalTo(later), "and leaves it cached")
}

// TestOlderCredentialsReadDoesNotOverwriteEscrow: the escrow keeps what the later of two reads
// found, even when the earlier one, holding the Secret as it was before a rotation, finishes last:
// should the Secret then be deleted, closes fall back to the current credentials, not the old.
func TestOlderCredentialsReadDoesNotOverwriteEscrow(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	c, server, secret, escrow := connectorKeepingEscrow(t)

	held := &heldSecretRead{Reader: k8sClient, read: make(chan struct{}), release: make(chan struct{})}
	c.LiveReader = held
	earlier := make(chan error, 1)
	go func() {
		_, err := c.Connect(ctx, server)
		earlier <- err
	}()
	<-held.read // the earlier read holds the first password

	rotatePassword(t, secret, "second-password")
	_, err := c.Connect(ctx, server)
	g.Expect(err).NotTo(HaveOccurred())
	close(held.release)
	g.Expect(<-earlier).To(Succeed())

	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(escrow), escrow)).To(Succeed())
	g.Expect(string(escrow.Data["secret.password"])).To(Equal("second-password"), "the escrow holds the rotated password")
}

// A refresh of the escrow that was decided while the escrow was kept, and reaches the write after
// the server stopped being in use and the escrow was dropped, must not bring the copy back: it
// would hold credentials that nothing needs, and that nothing would drop again.
func TestEscrowRefreshAfterADropWritesNothing(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	c, server, secret, escrow := connectorKeepingEscrow(t)
	g.Expect(c.DropEscrow(ctx, server)).To(Succeed())

	rotatePassword(t, secret, "second-password")
	g.Expect(credentials.RefreshEscrowAsDecidedBefore(ctx, c, server)).To(Succeed())
	err := k8sClient.Get(ctx, client.ObjectKeyFromObject(escrow), escrow)
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the dropped escrow stays dropped, got %v", err)
}
