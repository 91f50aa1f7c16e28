package credentials_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/pam-operator/pam-operator/internal/credentials"
)

// gatedReader holds every read, once the API server has answered it, until the test lets it
// return: the test changes the object while an answer is on its way.
type gatedReader struct {
	client.Reader
	reads   atomic.Int32
	entered chan struct{}
	release chan struct{}
}

func (g *gatedReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	g.reads.Add(1)
	err := g.Reader.Get(ctx, key, obj, opts...)
	g.entered <- struct{}{}
	<-g.release
	return err
}

// Callers that arrive while a Secret read is in flight share one later read, and see a change
// made before they called: sharing never serves an answer older than the call.
func TestLiveReadsAreSharedAndNeverOlderThanTheCall(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"},
		StringData: map[string]string{"username": "jen", "password": "old-password"}}
	create(t, secret)
	key := client.ObjectKeyFromObject(secret)

	gate := &gatedReader{Reader: k8sClient, entered: make(chan struct{}), release: make(chan struct{})}
	reader := &credentials.CoalescingReader{Reader: gate}

	type result struct {
		secret *corev1.Secret
		err    error
	}
	get := func(out chan<- result) {
		s := &corev1.Secret{}
		err := reader.Get(ctx, key, s)
		out <- result{s, err}
	}
	first := make(chan result, 1)
	go get(first)
	<-gate.entered // the first read has its answer, not yet returned

	secret.StringData = map[string]string{"password": "new-password"}
	g.Expect(k8sClient.Update(ctx, secret)).To(Succeed())
	changedVersion := secret.ResourceVersion

	const later = 10
	results := make(chan result, later)
	var wg sync.WaitGroup
	for range later {
		wg.Go(func() { get(results) })
	}
	g.Eventually(func() int { return reader.Queued(&corev1.Secret{}, key) }).Should(Equal(later))

	gate.release <- struct{}{} // the first read completes
	r := <-first
	g.Expect(r.err).NotTo(HaveOccurred())
	g.Expect(r.secret.Data["password"]).To(Equal([]byte("old-password")))
	<-gate.entered // the shared read, made after the change
	gate.release <- struct{}{}
	wg.Wait()
	close(results)

	var shared []*corev1.Secret
	for r := range results {
		g.Expect(r.err).NotTo(HaveOccurred())
		g.Expect(r.secret.ResourceVersion).To(Equal(changedVersion))
		g.Expect(r.secret.Data["password"]).To(Equal([]byte("new-password")))
		shared = append(shared, r.secret)
	}
	// Callers get copies of their own: one changing what it read changes nothing for another.
	shared[0].Data["password"][0] = 'X'
	shared[0].Data["extra"] = []byte("x")
	for _, other := range shared[1:] {
		g.Expect(other.Data["password"]).To(Equal([]byte("new-password")))
		g.Expect(other.Data).NotTo(HaveKey("extra"))
	}
	g.Expect(gate.reads.Load()).To(Equal(int32(2)), "eleven callers, two reads")
}
