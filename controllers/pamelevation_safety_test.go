package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/controllers"
	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/pamapi"
)

func TestDuplicateRequestIsRefusedAndNeverClosed(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	withServer(t, ns)
	id := seedRequest(pamUser, time.Hour)
	original := elevation(ns, "original", id)
	create(t, original)
	waitActive(t, original)

	// The same request, spelled in upper case, tracked a second time.
	duplicate := elevation(ns, "duplicate", strings.ToUpper(id))
	create(t, duplicate)
	waitFor(t, duplicate, func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, pamv1.ReasonDuplicateRequest)
		g.Expect(conditionMessage(el, pamv1.ConditionStalled)).To(ContainSubstring("PamElevation original already tracks"))
	})

	deleteObj(t, duplicate)
	waitGone(t, duplicate)
	attempts, _ := pamServer.CloseCalls(id)
	g.Expect(attempts).To(BeZero(), "deleting a duplicate must not revoke the original's access")
	req, _ := pamServer.Request(id)
	g.Expect(req.Status).To(Equal(pamapi.StatusActive))
	waitEvent(t, duplicate, pamv1.ReasonDuplicateRequest, "tracks it")

	deleteObj(t, original)
	waitGone(t, original)
	attempts, successes := pamServer.CloseCalls(id)
	g.Expect([]int{attempts, successes}).To(Equal([]int{1, 1}))
}

func TestDeletionIsBoundedByPAMsOwnExpiry(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	withServer(t, ns)
	id := seedRequest(pamUser, 3*time.Second)
	el := elevation(ns, "bounded", id)
	create(t, el)
	waitActive(t, el)
	g.Expect(el.Status.RequestExpirationTime).NotTo(BeNil())

	// PAM goes down for good before the request's own expiry.
	pamServer.InjectFault(emulator.Fault{Status: 503})
	t.Cleanup(pamServer.ClearFaults)
	deleteObj(t, el)
	waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionReconciling, metav1.ConditionTrue, pamv1.ReasonPAMUnavailable)
	})

	// Once ExpirationTime + the clock-skew margin has passed, MIM has ended the access itself.
	waitGone(t, el)
	g.Expect(time.Now()).To(BeTemporally(">", el.Status.RequestExpirationTime.Add(clockSkewMargin)))
	_, successes := pamServer.CloseCalls(id)
	g.Expect(successes).To(BeZero(), "PAM was down: no close got through")
	waitEvent(t, el, pamv1.ReasonEndedInPAM, "ExpirationTime")
}

func TestCloseAnswered200ButStillOpenIsNotTrusted(t *testing.T) {
	g := NewWithT(t)
	el, id := trackActive(t, "lying-200")

	// A 200 that closes nothing: the request stays Active in PAM.
	pamServer.InjectFault(emulator.Fault{Endpoint: emulator.EndpointCloseRequest, Status: 200})
	t.Cleanup(pamServer.ClearFaults)
	deleteObj(t, el)
	waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionReady, metav1.ConditionFalse, pamv1.ReasonCloseFailed)
		g.Expect(conditionMessage(el, pamv1.ConditionReady)).To(ContainSubstring("still lists the request Active"))
		g.Expect(el.Finalizers).To(ContainElement(pamv1.ElevationFinalizer))
	})

	pamServer.ClearFaults()
	waitGone(t, el)
	_, successes := pamServer.CloseCalls(id)
	g.Expect(successes).To(Equal(1))
	req, _ := pamServer.Request(id)
	g.Expect(req.Status).To(Equal(pamapi.StatusClosed))
}

// TestNamespaceDeletionStillClosesEverything does what the namespace controller does when a
// namespace is deleted (envtest runs no controller-manager): it deletes everything in it at
// once, the Secret first, which is the order that loses closes without in-use protection.
func TestNamespaceDeletionStillClosesEverything(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	withServer(t, ns)
	const count = 24
	ids := make([]string, count)
	for i := range ids {
		ids[i] = seedRequest(pamUser, time.Hour)
		create(t, elevation(ns, fmt.Sprintf("el-%02d", i), ids[i]))
	}
	server := &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"}}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam-credentials"}}
	waitFor(t, server, func(g Gomega, s *pamv1.PamServer) {
		g.Expect(s.Finalizers).To(ContainElement(controllers.InUseFinalizer))
	})
	// The server is protected only once its credentials are in escrow.
	escrow := escrowOf(t, "PamServer/"+ns+"/pam")
	g.Expect(escrow.Data).To(HaveKeyWithValue("secret.password", []byte(pamPassword)))
	for i := range ids {
		waitActive(t, elevation(ns, fmt.Sprintf("el-%02d", i), ids[i]))
	}

	g.Expect(k8sClient.Delete(ctx, secret)).To(Succeed())
	g.Expect(k8sClient.Delete(ctx, server)).To(Succeed())
	g.Expect(k8sClient.DeleteAllOf(ctx, &pamv1.PamElevation{}, client.InNamespace(ns))).To(Succeed())

	g.Eventually(func() ([]pamv1.PamElevation, error) {
		var list pamv1.PamElevationList
		err := k8sClient.List(ctx, &list, client.InNamespace(ns))
		return list.Items, err
	}).WithTimeout(waitTimeout).WithPolling(pollEvery).Should(BeEmpty())
	for _, id := range ids {
		attempts, successes := pamServer.CloseCalls(id)
		g.Expect([]int{attempts, successes}).To(Equal([]int{1, 1}), "request %s", id)
	}
	// Nothing needs them any more: the server and the escrowed copy go too.
	waitGone(t, server)
	waitGone(t, escrow)
}

// escrowOf waits for the operator's escrow Secret of a server, named by its annotation.
func escrowOf(t *testing.T, serverKey string) *corev1.Secret {
	t.Helper()
	var found *corev1.Secret
	NewWithT(t).Eventually(func(g Gomega) {
		var list corev1.SecretList
		g.Expect(k8sClient.List(context.Background(), &list, client.InNamespace(clusterResourceNamespace))).To(Succeed())
		found = nil
		for i := range list.Items {
			if list.Items[i].Annotations["pam.mim.dev/server"] == serverKey {
				found = &list.Items[i]
			}
		}
		g.Expect(found).NotTo(BeNil(), "no escrow for %s", serverKey)
	}).WithTimeout(waitTimeout).WithPolling(pollEvery).Should(Succeed())
	return found
}

// A deletion of a request this operator last read open sends the Close first: nothing names the
// request at PAM between the delete and the Close, and a read confirms it after.
func TestCloseOfARequestKnownOpenGoesOutWithoutAReadBefore(t *testing.T) {
	g := NewWithT(t)
	el, id := trackActive(t, "known-open")

	deleted := time.Now()
	deleteObj(t, el)
	waitGone(t, el)
	var after []emulator.Endpoint
	for _, c := range pamServer.Calls() {
		if !c.Time.Before(deleted) && (c.RequestID == id || strings.Contains(strings.ToLower(c.Query), id)) {
			after = append(after, c.Endpoint)
		}
	}
	g.Expect(after).To(HaveLen(2), "calls naming the request after the delete: %v", after)
	g.Expect(after[0]).To(Equal(emulator.EndpointCloseRequest))
	g.Expect(after[1]).To(Equal(emulator.EndpointListRequests))
}

// A request a person closed in MIM after the operator last read it open: the close the deletion
// sends is refused, a read shows the request ended, and the object goes without a second try.
// Lists fail until the close has been refused, so no periodic sync can see the request closed
// first and spare the close this test is about.
func TestRequestClosedInMIMSinceItsLastReadIsReleased(t *testing.T) {
	g := NewWithT(t)
	el, id := trackActive(t, "closed-in-mim")
	pamServer.InjectFault(emulator.Fault{Endpoint: emulator.EndpointListRequests, Status: 503})
	t.Cleanup(pamServer.ClearFaults)
	g.Expect(pamServer.SetRequestStatus(id, pamapi.StatusClosed)).To(BeTrue())

	deleteObj(t, el)
	g.Eventually(func() int {
		attempts, _ := pamServer.CloseCalls(id)
		return attempts
	}).WithTimeout(waitTimeout).WithPolling(pollEvery).Should(Equal(1), "the close went out without a read first")
	pamServer.ClearFaults()
	waitGone(t, el)
	attempts, successes := pamServer.CloseCalls(id)
	g.Expect(attempts).To(BeNumerically("<=", 1))
	g.Expect(successes).To(BeZero())
	req, _ := pamServer.Request(id)
	g.Expect(req.Status).To(Equal(pamapi.StatusClosed))
}

// An elevation pointed at another server moves the in-use protection with it: the new server is
// protected, and the old one, which nothing needs any more, is released.
func TestInUseProtectionFollowsAnElevationToAnotherServer(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	el, _ := trackActive(t, "moving")
	ns := el.Namespace
	create(t, &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam-b"}, Spec: basicServerSpec("pam-credentials")})
	first := &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"}}
	second := &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam-b"}}
	waitFor(t, first, func(g Gomega, s *pamv1.PamServer) {
		g.Expect(s.Finalizers).To(ContainElement(controllers.InUseFinalizer))
	})

	patch := client.MergeFrom(el.DeepCopy())
	el.Spec.ServerRef.Name = "pam-b"
	g.Expect(k8sClient.Patch(ctx, el, patch)).To(Succeed())
	waitFor(t, second, func(g Gomega, s *pamv1.PamServer) {
		g.Expect(s.Finalizers).To(ContainElement(controllers.InUseFinalizer))
	})
	waitFor(t, first, func(g Gomega, s *pamv1.PamServer) {
		g.Expect(s.Finalizers).NotTo(ContainElement(controllers.InUseFinalizer))
	})
}

// TestSweepThatPanicsQueuesItsDueElevations: a panic in the periodic sync of one server ends
// neither the process nor the sync of its elevations: those whose sync is due are queued for
// passes of their own. The reconciler here, an hour ahead, has no connector, so the sweep panics
// as it looks its server up.
func TestSweepThatPanicsQueuesItsDueElevations(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	el, _ := trackActive(t, "swept")
	g.Eventually(func(g Gomega) {
		cached := &pamv1.PamElevation{}
		g.Expect(managerClient.Get(ctx, client.ObjectKeyFromObject(el), cached)).To(Succeed())
		g.Expect(cached.Status.LastSyncTime).NotTo(BeNil())
		expectCondition(g, cached.Status.Conditions, pamv1.ConditionReady, metav1.ConditionTrue, pamv1.ReasonActive)
	}).WithTimeout(waitTimeout).WithPolling(pollEvery).Should(Succeed(), "the cache holds the elevation idle")

	r := handReconciler(t, managerClient, k8sClient, clocktesting.NewFakePassiveClock(time.Now().Add(time.Hour)))
	r.Connector = nil
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	r.Sweep(ctx, el.ServerKey(), q)

	g.Expect(q.Len()).To(Equal(1), "the due elevation is queued")
	queued, _ := q.Get()
	g.Expect(queued.NamespacedName).To(Equal(client.ObjectKeyFromObject(el)))
}
