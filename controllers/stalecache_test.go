package controllers_test

import (
	"context"
	"testing"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
)

// staleClient answers Gets of one object with an old copy of it, as an informer cache that has
// not caught up yet does; everything else goes to the client it wraps.
type staleClient struct {
	client.Client
	stale *pamv1.PamElevation
}

func (c staleClient) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if el, ok := obj.(*pamv1.PamElevation); ok && key == client.ObjectKeyFromObject(c.stale) {
		c.stale.DeepCopyInto(el)
		return nil
	}
	return c.Client.Get(ctx, key, obj, opts...)
}

// A pass that still sees a deleted elevation with its finalizer, after another pass closed the
// request and released the object, sends no second Close: PAM's answer decides.
func TestStaleCopyOfAClosedDeletionSendsNoSecondClose(t *testing.T) {
	g := NewWithT(t)
	el, id := trackActive(t, "stale")
	stale := el.DeepCopy()

	deleteObj(t, el)
	waitGone(t, el)
	g.Expect(closeCalls(id)).To(HaveLen(1))

	now := metav1.Now()
	stale.DeletionTimestamp = &now // what a lagging cache showed while the deletion was pending
	r := handReconciler(t, staleClient{Client: managerClient, stale: stale}, k8sClient, nil)
	_, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(stale)})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(closeCalls(id)).To(HaveLen(1), "a second Close reached PAM")
}
