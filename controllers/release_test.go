package controllers_test

import (
	"context"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/controllers"
	"github.com/pam-operator/pam-operator/emulator"
)

// releaseCounter counts the patches that release an elevation (of its metadata alone) and
// passes every call on to the client it wraps.
type releaseCounter struct {
	client.Client
	releases atomic.Int32
}

func (c *releaseCounter) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	if _, ok := obj.(*metav1.PartialObjectMetadata); ok {
		c.releases.Add(1)
	}
	return c.Client.Patch(ctx, obj, patch, opts...)
}

// deletingCopy tracks an Active elevation on a server with an emulator of its own, and returns a
// copy of it that shows its deletion begun, for reconcilers of the test's own: the object itself
// stays, so the manager never closes it.
func deletingCopy(t *testing.T, name string) (*pamv1.PamElevation, *emulator.Server) {
	t.Helper()
	ns, own := withOwnEmulator(t, nil)
	el := elevation(ns, name, own.AddRequest(emulator.Request{Owner: pamUser, RoleID: randomGUID(), RequestedTTL: time.Hour}).ID)
	create(t, el)
	waitActive(t, el)
	current := &pamv1.PamElevation{}
	if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(el), current); err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	current.DeletionTimestamp = &now
	return current, own
}

func closeAttempts(s *emulator.Server, id string) int {
	attempts, _ := s.CloseCalls(id)
	return attempts
}

// callsNaming counts the calls about the request: its closes and its reads alone, not the lists
// of every request of the account that the manager's periodic sync sends meanwhile.
func callsNaming(s *emulator.Server, id string) int {
	id = strings.ToLower(id)
	n := 0
	for _, c := range s.Calls() {
		query, _ := url.QueryUnescape(c.Query)
		if c.RequestID == id || strings.Contains(strings.ToLower(query), id) {
			n++
		}
	}
	return n
}

// withReleaseQueue returns a reconciler of the test's own on c, whose releases go to the queue
// returned, as they go to the release controller's once it has started.
func withReleaseQueue(t *testing.T, c client.Client) (*controllers.PamElevationReconciler, workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	t.Helper()
	r := handReconciler(t, c, k8sClient, nil)
	releases := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	t.Cleanup(releases.ShutDown)
	r.HandReleasesTo(releases)
	return r, releases
}

// The pass that closes a deleted elevation's request queues the read that confirms it, and that
// pass hands the release to the release controller instead of patching the finalizer away
// itself: in a mass revocation, a worker waiting for its patch's turn under the client's rate
// limit would hold back the next close. The release calls PAM no more, and goes through although
// the object changed since the copy it works from.
func TestCloseGoesAheadOfTheRelease(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	deleting, own := deletingCopy(t, "close-first")
	counter := &releaseCounter{Client: managerClient}
	r, releases := withReleaseQueue(t, staleClient{Client: counter, stale: deleting})
	req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(deleting)}

	result, err := r.Reconcile(ctx, req)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(result.RequeueAfter).To(Equal(time.Nanosecond), "the confirming read was not queued")
	g.Expect(closeAttempts(own, deleting.Spec.RequestID)).To(Equal(1))
	g.Expect(releases.Len()).To(BeZero(), "released before the close was confirmed")

	result, err = r.Reconcile(ctx, req)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(result).To(BeZero())
	g.Expect(closeAttempts(own, deleting.Spec.RequestID)).To(Equal(1), "the confirmation closed again")
	g.Expect(counter.releases.Load()).To(BeZero(), "the pass that confirmed also released")
	g.Expect(releases.Len()).To(Equal(1), "the release was not handed on")
	callsBefore := callsNaming(own, deleting.Spec.RequestID)

	// A user's edit meanwhile leaves the copy behind, and does not hold the release back.
	edited := deleting.DeepCopy()
	edited.DeletionTimestamp = nil
	patch := client.MergeFrom(edited.DeepCopy())
	edited.Annotations = map[string]string{"edited": "meanwhile"}
	g.Expect(k8sClient.Patch(ctx, edited, patch)).To(Succeed())

	queued, _ := releases.Get()
	g.Expect(queued).To(Equal(req))
	_, err = r.Release(ctx, queued)
	releases.Done(queued)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(counter.releases.Load()).To(Equal(int32(1)))
	g.Expect(callsNaming(own, deleting.Spec.RequestID)).To(Equal(callsBefore), "the release called PAM")
	live := &pamv1.PamElevation{}
	g.Expect(k8sClient.Get(ctx, req.NamespacedName, live)).To(Succeed())
	g.Expect(live.Finalizers).NotTo(ContainElement(pamv1.ElevationFinalizer))
}

// A process that stops between the close and the release leaves the release to the next one,
// which reads the request from PAM, finds it closed, and releases the object without a second
// close.
func TestReleaseAfterARestartSendsNoSecondClose(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	deleting, own := deletingCopy(t, "close-then-stop")
	req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(deleting)}
	_, err := handReconciler(t, staleClient{Client: managerClient, stale: deleting}, k8sClient, nil).Reconcile(ctx, req)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(closeAttempts(own, deleting.Spec.RequestID)).To(Equal(1))

	counter := &releaseCounter{Client: managerClient}
	next := handReconciler(t, staleClient{Client: counter, stale: deleting}, k8sClient, nil)
	for range 2 { // the read that finds it closed, then the release
		_, err = next.Reconcile(ctx, req)
		g.Expect(err).NotTo(HaveOccurred())
	}
	g.Expect(closeAttempts(own, deleting.Spec.RequestID)).To(Equal(1), "a second Close reached PAM")
	g.Expect(counter.releases.Load()).To(Equal(int32(1)))
}

// The API server lets a list hold a finalizer twice. A release removes every copy its copy of
// the object shows, and one added since is removed by the retry, from a newer copy: the object
// is not left waiting with nothing to wake it.
func TestReleaseRemovesTheFinalizerListedTwice(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	deleting, _ := deletingCopy(t, "listed-twice")
	r, _ := withReleaseQueue(t, staleClient{Client: managerClient, stale: deleting})
	req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(deleting)}
	for range 2 { // the close, then the read that confirms it and hands the release on
		_, err := r.Reconcile(ctx, req)
		g.Expect(err).NotTo(HaveOccurred())
	}

	twice := func() {
		live := &pamv1.PamElevation{}
		g.Expect(k8sClient.Get(ctx, req.NamespacedName, live)).To(Succeed())
		patch := client.MergeFrom(live.DeepCopy())
		live.Finalizers = append(live.Finalizers, pamv1.ElevationFinalizer)
		g.Expect(k8sClient.Patch(ctx, live, patch)).To(Succeed())
	}
	twice()
	_, err := r.Release(ctx, req)
	g.Expect(err).To(MatchError(ContainSubstring("still listed")), "the copy taken before the second listing released only the first")

	twice() // listed twice in the copy the retry works from
	live := &pamv1.PamElevation{}
	g.Expect(k8sClient.Get(ctx, req.NamespacedName, live)).To(Succeed())
	g.Expect(live.Finalizers).To(Equal([]string{pamv1.ElevationFinalizer, pamv1.ElevationFinalizer}))
	live.DeletionTimestamp = deleting.DeletionTimestamp
	live.DeepCopyInto(deleting)
	_, err = r.Release(ctx, req)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(k8sClient.Get(ctx, req.NamespacedName, live)).To(Succeed())
	g.Expect(live.Finalizers).NotTo(ContainElement(pamv1.ElevationFinalizer))
}
