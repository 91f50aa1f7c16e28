package controllers_test

import (
	"context"
	"testing"

	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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

// passesFromStaleCopy returns a function that runs one pass of a reconciler of its own whose
// cache shows stale for the object, whatever the object is now.
func passesFromStaleCopy(t *testing.T, stale *pamv1.PamElevation) func() error {
	t.Helper()
	r := handReconciler(t, staleClient{Client: managerClient, stale: stale}, k8sClient, nil)
	return func() error {
		_, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(stale)})
		return err
	}
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
	g.Expect(passesFromStaleCopy(t, stale)()).To(Succeed())
	g.Expect(closeCalls(id)).To(HaveLen(1), "a second Close reached PAM")
}

// A pass working from a stale copy cannot release the object: the finalizer goes only from the
// version the pass saw. Here the copy, behind a label change, shows the elevation deleted with
// deletionPolicy Orphan, which would release it without a close; the object itself is live.
func TestStaleCopyCannotReleaseTheObject(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	el, id := trackActive(t, "stale-release")
	stale := el.DeepCopy()
	now := metav1.Now()
	stale.DeletionTimestamp = &now
	stale.Spec.DeletionPolicy = pamv1.DeletionPolicyOrphan

	patch := client.MergeFrom(el.DeepCopy())
	el.Labels = map[string]string{"moved": "on"}
	g.Expect(k8sClient.Patch(ctx, el, patch)).To(Succeed())

	err := passesFromStaleCopy(t, stale)()
	g.Expect(apierrors.IsConflict(err)).To(BeTrue(), "the release from a stale copy was not refused: %v", err)
	current := &pamv1.PamElevation{}
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(el), current)).To(Succeed())
	g.Expect(current.Finalizers).To(ContainElement(pamv1.ElevationFinalizer))

	deleteObj(t, el)
	waitGone(t, el)
	g.Expect(closeCalls(id)).To(HaveLen(1), "the deletion of the live object closes the request")
}

// A pass whose cached copy predates the status this process wrote after its first read — the
// copy still shows no read — reads the request again rather than report it never read: that
// report, patched over the status, would leave the elevation waiting with nothing to wake it.
func TestStaleCopyWithoutAReadDoesNotUndoTheFirstRead(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	el, _ := trackActive(t, "stale-first-read")
	unread := el.DeepCopy()
	unread.Status = pamv1.PamElevationStatus{} // as the cache showed it before the first read

	pass := passesFromStaleCopy(t, unread)
	g.Expect(pass()).To(Succeed())
	g.Expect(pass()).To(Succeed(), "the second pass, with this process's read in memory, still sees the old copy")
	current := &pamv1.PamElevation{}
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(el), current)).To(Succeed())
	g.Expect(current.Status.RequestStatus).To(Equal("Active"))
	expectCondition(g, current.Status.Conditions, pamv1.ConditionReady, metav1.ConditionTrue, pamv1.ReasonActive)
}
