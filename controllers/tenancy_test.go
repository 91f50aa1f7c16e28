package controllers_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/controllers"
	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/internal/credentials"
	"github.com/pam-operator/pam-operator/internal/pam"
	"github.com/pam-operator/pam-operator/pamapi"
)

// pamCallsFor returns every call the emulator received that names the request, closes and lists.
func pamCallsFor(requestID string) int {
	n := 0
	for _, c := range pamServer.Calls() {
		if c.RequestID == requestID || strings.Contains(strings.ToLower(c.Query), requestID) {
			n++
		}
	}
	return n
}

// TestAllowedNamespaces: a ClusterPamServer serves only the namespaces its selector picks. An
// elevation elsewhere is refused before any call to PAM, and deleting it releases it without a
// close; labelling the namespace lets the next elevation through.
func TestAllowedNamespaces(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	secretName := "tenancy-" + strings.ToLower(randomGUID()[:8])
	create(t, basicSecret(clusterResourceNamespace, secretName, pamUser, pamPassword))
	server := &pamv1.ClusterPamServer{ObjectMeta: metav1.ObjectMeta{Name: secretName}, Spec: pamv1.ClusterPamServerSpec{
		PamServerSpec:     basicServerSpec(secretName),
		AllowedNamespaces: &metav1.LabelSelector{MatchLabels: map[string]string{"pam.example/tenant": secretName}},
	}}
	create(t, server)
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), server) })
	useCluster := func(el *pamv1.PamElevation) {
		el.Spec.ServerRef = pamv1.ServerReference{Kind: pamv1.ServerKindClusterPamServer, Name: secretName}
	}

	ns := newNamespace(t)
	refusedID := seedRequest(pamUser, time.Hour)
	refused := elevation(ns, "refused", refusedID, useCluster)
	create(t, refused)
	waitFor(t, refused, func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, pamv1.ReasonNamespaceNotAllowed)
		g.Expect(conditionMessage(el, pamv1.ConditionStalled)).To(ContainSubstring("does not allow namespace " + ns))
		// Nothing was read from PAM, not even through the server's shared batch, whose calls
		// do not name the request.
		g.Expect(el.Status.LastSyncTime).To(BeNil())
		g.Expect(el.Status.RequestStatus).To(BeEmpty())
	})
	g.Expect(pamCallsFor(refusedID)).To(BeZero(), "a refused elevation called PAM")

	// It never tracked the request, so deleting it releases it without a close, and says so.
	deleteObj(t, refused)
	waitGone(t, refused)
	waitEvent(t, refused, pamv1.ReasonNamespaceNotAllowed, "Released without closing")
	g.Expect(pamCallsFor(refusedID)).To(BeZero(), "deleting a refused elevation called PAM")
	if req, _ := pamServer.Request(refusedID); req.Status != "Active" {
		t.Fatalf("the refused elevation's request is %s, want it left Active", req.Status)
	}

	// Labelled, the namespace may use the server.
	nsObj := &corev1.Namespace{}
	g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj)).To(Succeed())
	patch := client.MergeFrom(nsObj.DeepCopy())
	nsObj.Labels["pam.example/tenant"] = secretName
	g.Expect(k8sClient.Patch(ctx, nsObj, patch)).To(Succeed())
	allowedID := seedRequest(pamUser, time.Hour)
	allowed := elevation(ns, "allowed", allowedID, useCluster)
	create(t, allowed)
	waitActive(t, allowed)

	// The label removed while the elevation is Active: it reads nothing more, yet its close is
	// never refused.
	g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj)).To(Succeed())
	patch = client.MergeFrom(nsObj.DeepCopy())
	delete(nsObj.Labels, "pam.example/tenant")
	g.Expect(k8sClient.Patch(ctx, nsObj, patch)).To(Succeed())
	waitFor(t, allowed, func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, pamv1.ReasonNamespaceNotAllowed)
	})
	deleteObj(t, allowed)
	waitGone(t, allowed)
	_, successes := pamServer.CloseCalls(allowedID)
	g.Expect(successes).To(Equal(1), "a namespace that lost access must still close what it tracks")
}

// TestClusterPamServerWithoutSelectorServesNoNamespace: allowedNamespaces absent selects no
// namespace, and such elevations do not hold the server; {} selects every namespace.
func TestClusterPamServerWithoutSelectorServesNoNamespace(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	name := "unselected-" + strings.ToLower(randomGUID()[:8])
	create(t, basicSecret(clusterResourceNamespace, name, pamUser, pamPassword))
	server := &pamv1.ClusterPamServer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: pamv1.ClusterPamServerSpec{PamServerSpec: basicServerSpec(name)}}
	create(t, server)
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), server) })

	ns := newNamespace(t)
	id := seedRequest(pamUser, time.Hour)
	refused := elevation(ns, "refused", id, func(el *pamv1.PamElevation) {
		el.Spec.ServerRef = pamv1.ServerReference{Kind: pamv1.ServerKindClusterPamServer, Name: name}
	})
	create(t, refused)
	waitFor(t, refused, func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, pamv1.ReasonNamespaceNotAllowed)
		g.Expect(conditionMessage(el, pamv1.ConditionStalled)).To(ContainSubstring("no spec.allowedNamespaces"))
	})
	g.Expect(pamCallsFor(id)).To(BeZero())
	// A refused elevation is no user of the server: it holds no in-use finalizer (one it had
	// for the moment before it was refused goes).
	waitFor(t, server, func(g Gomega, s *pamv1.ClusterPamServer) {
		g.Expect(s.Finalizers).NotTo(ContainElement(controllers.InUseFinalizer))
	})

	patch := client.MergeFrom(server.DeepCopy())
	server.Spec.AllowedNamespaces = &metav1.LabelSelector{}
	g.Expect(k8sClient.Patch(ctx, server, patch)).To(Succeed())
	waitActive(t, refused)
	waitFor(t, server, func(g Gomega, s *pamv1.ClusterPamServer) {
		g.Expect(s.Finalizers).To(ContainElement(controllers.InUseFinalizer))
	})
}

// TestSyncIsBatchedPerServer: the periodic sync of many elevations of one server costs one list
// per sync interval, not one per elevation.
func TestSyncIsBatchedPerServer(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	withServer(t, ns)
	const count = 12
	els := make([]*pamv1.PamElevation, count)
	for i := range els {
		els[i] = elevation(ns, "batched-"+strings.Repeat("x", i+1), seedRequest(pamUser, time.Hour))
		create(t, els[i])
	}
	for _, el := range els {
		waitActive(t, el)
	}

	// While every elevation syncs three more times, none is read on its own: they share the
	// server's batched lists. (Other tests' servers use the same account, so the lists are told
	// apart by their filter.)
	ids := map[string]bool{}
	for _, el := range els {
		ids[strings.ToLower(el.Spec.RequestID)] = true
	}
	callsBefore := len(pamServer.Calls())
	tally := func() (single, batched int) {
		for _, c := range pamServer.Calls()[callsBefore:] {
			query := strings.ToLower(c.Query)
			for id := range ids {
				if strings.Contains(query, id) {
					single++
				}
			}
			if c.User == pamUser && strings.Contains(query, "creationtime") {
				batched++
			}
		}
		return single, batched
	}
	g.Eventually(func() int { _, batched := tally(); return batched }).
		WithTimeout(waitTimeout).WithPolling(pollEvery).Should(BeNumerically(">=", 4))
	single, _ := tally()
	g.Expect(single).To(BeZero(), "%d lists named one of the elevations' requests: the sync is not batched", single)

	// A request that ends in PAM is still seen through the batch.
	g.Expect(pamServer.SetRequestStatus(els[0].Spec.RequestID, pamapi.StatusExpired)).To(BeTrue())
	waitFor(t, els[0], func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionClosed, metav1.ConditionTrue, pamv1.ReasonEndedInPAM)
	})
	_ = ctx
}

// TestIdleElevationIsQueuedOnlyForItsExpiry: the sweep does the periodic sync, so a pass of an
// idle elevation leaves nothing in the work queue for it, and one with an expiry only its timer.
// A reconciler of its own makes the pass, so the suite's does not race it.
func TestIdleElevationIsQueuedOnlyForItsExpiry(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	withServer(t, ns)
	expiry := metav1.NewTime(time.Now().Add(time.Hour))
	idle := elevation(ns, "idle", seedRequest(pamUser, 2*time.Hour))
	expiring := elevation(ns, "expiring", seedRequest(pamUser, 2*time.Hour), func(el *pamv1.PamElevation) { el.Spec.ExpiresAt = &expiry })
	create(t, idle)
	create(t, expiring)
	waitActive(t, idle)
	waitActive(t, expiring)

	r := handReconciler(t, managerClient, k8sClient, nil)
	res, err := r.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(idle)})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.RequeueAfter).To(BeZero(), "an idle elevation waits for the sweep outside the queue")
	res, err = r.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(expiring)})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.RequeueAfter).To(And(BeNumerically(">", time.Until(expiry.Time)-time.Minute), BeNumerically("<=", time.Until(expiry.Time))),
		"an elevation with an expiry is queued for it, not for a sync before it")
}

// TestIdleElevationsAreNotQueuedForTheirSync: over three sync intervals, elevations whose
// requests did not change cost no pass at all; each interval's list answers for them. The server
// has an emulator of its own, so its lists count this test's sweeps only. (Objects other tests
// left retrying add a few passes; a pass per elevation and interval would add 150.)
func TestIdleElevationsAreNotQueuedForTheirSync(t *testing.T) {
	g := NewWithT(t)
	ns, own := withOwnEmulator(t, func(spec *pamv1.PamServerSpec) {
		// Their closes at the end are not what is measured: they need not queue at 10 calls/s.
		spec.RateLimit = &pamv1.RateLimit{QPS: 200, Burst: 200, MaxConcurrentCalls: 16}
	})
	const count = 50
	els := make([]*pamv1.PamElevation, count)
	for i := range els {
		els[i] = elevation(ns, fmt.Sprintf("idle-%d", i), own.AddRequest(emulator.Request{Owner: pamUser, RoleID: randomGUID(), RequestedTTL: time.Hour}).ID)
		create(t, els[i])
	}
	for _, el := range els {
		waitActive(t, el)
	}

	lists := func() int {
		n := 0
		for _, c := range own.Calls() {
			if c.Endpoint == emulator.EndpointListRequests && strings.Contains(strings.ToLower(c.Query), "creationtime") {
				n++
			}
		}
		return n
	}
	adds := func() float64 {
		return metricValue(t, "workqueue_adds_total", map[string]string{"name": "pamelevation"})
	}
	// After a first sweep has recorded every elevation's read, three more are counted.
	first := lists()
	g.Eventually(lists).WithTimeout(waitTimeout).WithPolling(pollEvery).Should(BeNumerically(">", first))
	addsBefore, listsBefore := adds(), lists()
	g.Eventually(lists).WithTimeout(waitTimeout).WithPolling(pollEvery).Should(BeNumerically(">=", listsBefore+3))
	g.Expect(adds()-addsBefore).To(BeNumerically("<", count),
		"three sync intervals of %d idle elevations queued them for passes", count)

	// Closed while their emulator still answers: left behind, they would retry for the rest of the suite.
	g.Expect(k8sClient.DeleteAllOf(context.Background(), &pamv1.PamElevation{}, client.InNamespace(ns))).To(Succeed())
	for _, el := range els {
		waitGone(t, el)
	}
}

// TestListTooLargeForOneAnswerIsSplitIntoWindows: an account with more requests in the lookback
// than the client reads in one answer (8 MiB) is listed in CreationTime windows, and its
// elevations still sync from the list, not each on its own.
func TestListTooLargeForOneAnswerIsSplitIntoWindows(t *testing.T) {
	g := NewWithT(t)
	ns, own := withOwnEmulator(t, nil)
	const history = 26000 // about 10 MB of answer
	first := time.Now().Add(-6 * 24 * time.Hour)
	for i := range history {
		created := first.Add(time.Duration(i) * (6 * 24 * time.Hour / history))
		own.AddRequest(emulator.Request{Owner: pamUser, RoleID: randomGUID(), CreationTime: created,
			RequestedTTL: time.Hour, Status: pamapi.StatusExpired})
	}
	id := own.AddRequest(emulator.Request{Owner: pamUser, RoleID: randomGUID(), RequestedTTL: time.Hour}).ID
	el := elevation(ns, "among-many", id)
	create(t, el)
	waitActive(t, el)

	own.ResetCalls()
	g.Expect(own.SetRequestStatus(id, pamapi.StatusExpired)).To(BeTrue())
	waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionClosed, metav1.ConditionTrue, pamv1.ReasonEndedInPAM)
	})
	windowed, single := 0, 0
	for _, c := range own.Calls() {
		query, _ := url.QueryUnescape(c.Query)
		query = strings.ToLower(query)
		if strings.Contains(query, "creationtime lt") {
			windowed++
		}
		if strings.Contains(query, id) {
			single++
		}
	}
	g.Expect(windowed).To(BeNumerically(">", 0), "the list was not split into windows")
	g.Expect(single).To(BeZero(), "the request was read on its own, not through the list")
	deleteObj(t, el)
	waitGone(t, el)
}

// TestListSplitNarrowsWhenRequestsAgeOut: a list split into CreationTime windows because the
// account's requests filled more than one answer goes back to a single call once they have left
// the lookback, and is halved again when an answer overflows once more.
func TestListSplitNarrowsWhenRequestsAgeOut(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns, own := withOwnEmulator(t, nil)
	const history = 26000 // about 10 MB of answer
	busyFrom, busyFor := time.Now().Add(-6*24*time.Hour), 3*24*time.Hour
	for i := range history {
		own.AddRequest(emulator.Request{Owner: pamUser, RoleID: randomGUID(), CreationTime: busyFrom.Add(time.Duration(i) * (busyFor / history)),
			RequestedTTL: time.Hour, Status: pamapi.StatusExpired})
	}
	server := &pamv1.PamServer{}
	g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "pam"}, server)).To(Succeed())
	c := &credentials.Connector{Client: k8sClient, LiveReader: k8sClient, Writer: k8sClient,
		OperatorNamespace: clusterResourceNamespace, ClusterResourceNamespace: clusterResourceNamespace}
	connect := func(ctx context.Context) (pam.Client, error) { return c.Connect(ctx, server) }
	listCalls := func(since time.Time) int {
		own.ResetCalls()
		_, err := c.Batcher(server).Fetch(ctx, connect, since, time.Now)
		g.Expect(err).NotTo(HaveOccurred())
		n := 0
		for _, call := range own.Calls() {
			if call.Endpoint == emulator.EndpointListRequests {
				n++
			}
		}
		return n
	}

	busy, quiet := busyFrom.Add(-time.Hour), busyFrom.Add(busyFor+time.Hour)
	halving := listCalls(busy)
	g.Expect(halving).To(BeNumerically(">", 2), "one answer too large, then its halves")
	split := listCalls(busy)
	g.Expect(split).To(BeNumerically(">=", 2), "the windows that fitted are kept")
	g.Expect(split).To(BeNumerically("<", halving), "the windows that fitted are asked for once each, the empty ones merged")
	g.Expect(listCalls(busy)).To(Equal(split), "the split is kept")
	g.Expect(listCalls(quiet)).To(Equal(1), "once the busy days are out of the lookback, one call lists them")

	// Busy again, with requests twice as long: half as many fill an answer. Their window is
	// halved, and the halves are kept apart, though together they hold fewer than fitted before.
	longFrom := quiet.Add(24 * time.Hour)
	for i := range history / 2 {
		own.AddRequest(emulator.Request{Owner: pamUser, RoleID: randomGUID(), CreationTime: longFrom.Add(time.Duration(i) * (24 * time.Hour / history * 2)),
			RequestedTTL: time.Hour, Status: pamapi.StatusExpired, Justification: strings.Repeat("j", 500)})
	}
	g.Expect(listCalls(quiet)).To(BeNumerically(">", 2), "one answer too large, then its halves")
	g.Expect(listCalls(quiet)).To(Equal(2), "the split is kept")
}

// secretReads counts the Secrets read through it.
type secretReads struct {
	client.Reader
	mu    sync.Mutex
	count int
}

func (r *secretReads) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	// The operator's own key of credential hashes, read once per process, is no credential.
	if _, ok := obj.(*corev1.Secret); ok && key.Name != "pam-operator-credential-hash-key" {
		r.mu.Lock()
		r.count++
		r.mu.Unlock()
	}
	return r.Reader.Get(ctx, key, obj, opts...)
}

func (r *secretReads) n() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count
}

// TestBatchAnsweredSyncReadsNoCredentials: credentials are read for a call to PAM, and a periodic
// sync that the server's shared batch answers makes none. A reconciler of its own, half an hour
// ahead, finds both elevations due: the first fetches the batch and reads the Secret for it, the
// second is answered from that batch.
func TestBatchAnsweredSyncReadsNoCredentials(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	withServer(t, ns)
	first, second := elevation(ns, "first", seedRequest(pamUser, 2*time.Hour)), elevation(ns, "second", seedRequest(pamUser, 2*time.Hour))
	create(t, first)
	create(t, second)
	waitActive(t, first)
	waitActive(t, second)

	reads := &secretReads{Reader: k8sClient}
	r := handReconciler(t, managerClient, reads, clocktesting.NewFakePassiveClock(time.Now().Add(30*time.Minute)))
	_, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(first)})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(reads.n()).To(Equal(1), "fetching the batch reads the Secret once")

	_, err = r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(second)})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(reads.n()).To(Equal(1), "a sync the batch answers reads no credentials")
}

// TestRateLimitPacesCallsToOneServer: a mass deletion reaches PAM no faster than the server's
// rateLimit and never with more calls in flight than maxConcurrentCalls. The emulator is one of
// its own, so other tests' calls do not count, and answers slowly, so calls would overlap.
func TestRateLimitPacesCallsToOneServer(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	const qps, burst = 20, 2
	ns, paced := withOwnEmulator(t, func(spec *pamv1.PamServerSpec) {
		spec.RateLimit = &pamv1.RateLimit{QPS: qps, Burst: burst, MaxConcurrentCalls: 2}
	})
	paced.InjectFault(emulator.Fault{Delay: 50 * time.Millisecond})
	const count = 8
	ids := make([]string, count)
	for i := range ids {
		ids[i] = paced.AddRequest(emulator.Request{Owner: pamUser, RoleID: randomGUID(), RequestedTTL: time.Hour}).ID
		create(t, elevation(ns, fmt.Sprintf("paced-%d", i), ids[i]))
	}
	g.Eventually(func(g Gomega) {
		var list pamv1.PamElevationList
		g.Expect(k8sClient.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		g.Expect(list.Items).To(HaveLen(count))
		for _, el := range list.Items {
			g.Expect(el.Status.RequestStatus).To(Equal("Active"))
		}
	}).WithTimeout(waitTimeout).WithPolling(pollEvery).Should(Succeed())

	paced.ResetCalls()
	g.Expect(k8sClient.DeleteAllOf(ctx, &pamv1.PamElevation{}, client.InNamespace(ns))).To(Succeed())
	g.Eventually(func(g Gomega) {
		var list pamv1.PamElevationList
		g.Expect(k8sClient.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		g.Expect(list.Items).To(BeEmpty())
	}).WithTimeout(waitTimeout).WithPolling(pollEvery).Should(Succeed())

	for _, id := range ids {
		_, successes := paced.CloseCalls(id)
		g.Expect(successes).To(Equal(1))
	}
	calls := paced.Calls()
	g.Expect(paced.MaxInFlight()).To(BeNumerically("<=", 2), "more calls in flight than maxConcurrentCalls")
	// n calls under a token bucket of rate qps and size burst take at least (n-burst)/qps.
	span := calls[len(calls)-1].Time.Sub(calls[0].Time)
	least := time.Duration(float64(len(calls)-burst) / qps * float64(time.Second))
	g.Expect(span).To(BeNumerically(">=", least*9/10), "%d calls in %s: faster than %d per second", len(calls), span, qps)
}
