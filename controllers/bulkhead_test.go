package controllers_test

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/emulator"
)

// TestHungServerDoesNotDelayAnotherServersClose: a server that accepts connections and never
// answers has 200 elevations due; it holds at most its maxConcurrentCalls workers, the passes
// waiting for its slots give theirs back, and a healthy server's close goes through within
// seconds.
func TestHungServerDoesNotDelayAnotherServersClose(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	hungNS, hung := withOwnEmulator(t, func(spec *pamv1.PamServerSpec) {
		spec.RateLimit = &pamv1.RateLimit{QPS: 1000, Burst: 1000, MaxConcurrentCalls: 2}
	})
	var due []*pamv1.PamElevation
	for i := range 200 {
		id := hung.AddRequest(emulator.Request{Owner: pamUser, RoleID: randomGUID(), RequestedTTL: time.Hour}).ID
		el := elevation(hungNS, fmt.Sprintf("due-%03d", i), id)
		create(t, el)
		due = append(due, el)
	}
	for _, el := range due {
		waitActive(t, el)
	}
	hung.InjectFault(emulator.Fault{Delay: time.Hour})
	g.Expect(k8sClient.DeleteAllOf(ctx, &pamv1.PamElevation{}, client.InNamespace(hungNS))).To(Succeed())
	t.Cleanup(func() {
		hung.ClearFaults()
		for _, el := range due {
			waitGone(t, el)
		}
	})
	// The hung server's passes have started: its calls are in flight.
	g.Eventually(func() int { return len(hung.Calls()) }).WithTimeout(10 * time.Second).Should(BeNumerically(">", 0))

	el, id := trackActive(t, "healthy")
	deleted := time.Now()
	deleteObj(t, el)
	g.Eventually(func() int {
		_, successes := pamServer.CloseCalls(id)
		return successes
	}).WithTimeout(5*time.Second).WithPolling(50*time.Millisecond).Should(Equal(1),
		"the healthy server's close waited behind the hung server's")
	t.Logf("the healthy server's close came %s after its deletion", time.Since(deleted).Round(time.Millisecond))
	waitGone(t, el)
}

// TestHungServerHoldsNoServerWorker: listing the roles of a server that accepts connections and
// never answers holds no worker of the server controller, so a server created after it is
// checked, and says Ready, within seconds rather than after the hung call's minute.
func TestHungServerHoldsNoServerWorker(t *testing.T) {
	hung := emulator.New(emulator.Options{Users: map[string]string{pamUser: pamPassword}})
	hung.InjectFault(emulator.Fault{Delay: time.Hour})
	var arrived atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		hung.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(srv.CloseClientConnections) // first: ends the calls it holds
	hungNS := newNamespace(t)
	create(t, basicSecret(hungNS, "pam-credentials", pamUser, pamPassword))
	spec := basicServerSpec("pam-credentials")
	spec.URL, spec.CABundle, spec.Timeout = srv.URL, certificatePEM(srv), &metav1.Duration{Duration: time.Minute}
	create(t, &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: hungNS, Name: "pam"}, Spec: spec})
	g := NewWithT(t)
	g.Eventually(arrived.Load).WithTimeout(10*time.Second).Should(BeNumerically(">", 0), "the hung server's roles were never asked for")

	healthyNS, _ := withOwnEmulator(t, nil)
	created := time.Now()
	healthy := &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: healthyNS, Name: "pam"}}
	g.Eventually(func(g Gomega) {
		g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(healthy), healthy)).To(Succeed())
		expectCondition(g, healthy.Status.Conditions, pamv1.ConditionReady, metav1.ConditionTrue, pamv1.ReasonConfigured)
	}).WithTimeout(5*time.Second).WithPolling(50*time.Millisecond).Should(Succeed(),
		"the healthy server waited behind the hung server's list of roles")
	t.Logf("the healthy server was Ready %s after its creation", time.Since(created).Round(time.Millisecond))
}

// TestConfirmationsFollowTheClosesAndShareAList: in a mass revocation what a security team
// measures is when the last access is gone. The read that confirms each close waits for the
// server's call slots behind the closes still due, and the confirmations that piled up there
// are answered by a list of the server's requests, not by a read each.
func TestConfirmationsFollowTheClosesAndShareAList(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns, own := withOwnEmulator(t, func(spec *pamv1.PamServerSpec) {
		spec.RateLimit = &pamv1.RateLimit{QPS: 20, Burst: 1, MaxConcurrentCalls: 2}
	})
	const n = 30
	els := activeElevations(t, ns, own, "mass", n)
	// The first two closes take both slots for a second: every other deletion is seen and
	// waits for a slot by then, as in a mass revocation the closes wait for the rate limit.
	own.InjectFault(emulator.Fault{Endpoint: emulator.EndpointCloseRequest, Delay: time.Second, Times: 2})
	own.ResetCalls()
	g.Expect(k8sClient.DeleteAllOf(ctx, &pamv1.PamElevation{}, client.InNamespace(ns))).To(Succeed())
	for _, el := range els {
		waitGone(t, el)
	}

	closedAt, alone := closesAndLoneReads(g, own.Calls())
	g.Expect(closedAt).To(HaveLen(n))
	lastClose := slices.Max(slices.Collect(maps.Values(closedAt)))
	for _, i := range alone {
		g.Expect(i).To(BeNumerically(">", lastClose), "a confirmation read went out before the last close")
	}
	// The closes in flight when the last list was asked for, one per slot, may be read alone.
	g.Expect(len(alone)).To(BeNumerically("<=", 2), "confirmations read one by one instead of from a list")
	// Every close was confirmed all the same: only the confirmation tells of a Closed request.
	for _, el := range els {
		waitEvent(t, el, pamv1.ConditionClosed, "Closed PAM request")
	}
}

// TestBurstOfDeletionsConfirmsAfterIt: in a burst of deletions the API server's marking of them
// paces the closes, and every write the manager makes slows it: the reads that confirm the
// closes, and the Events and releases that follow them, wait for the burst to end. The first
// deletions, before they are a burst, are not held.
func TestBurstOfDeletionsConfirmsAfterIt(t *testing.T) {
	g := NewWithT(t)
	ns, own := withOwnEmulator(t, nil)
	const n = 60
	els := activeElevations(t, ns, own, "burst", n)
	own.ResetCalls()
	// One after another, as a GitOps prune deletes them: the first are closed while the rest
	// arrive.
	for _, el := range els {
		deleteObj(t, el)
	}
	burstEnd := time.Now()
	for _, el := range els {
		waitGone(t, el)
	}

	calls := own.Calls()
	closedAt, alone := closesAndLoneReads(g, calls)
	g.Expect(closedAt).To(HaveLen(n))
	confirmedEarly := 0
	for _, i := range alone {
		if calls[i].Time.Before(burstEnd) {
			confirmedEarly++
		}
	}
	// Those closed before the deletions were a burst may have been confirmed at once.
	g.Expect(confirmedEarly).To(BeNumerically("<", n/2), "closes were confirmed while the burst of deletions still arrived")
}

// activeElevations creates n elevations in ns, each tracking a request of its own in own, and
// waits until each is Active.
func activeElevations(t *testing.T, ns string, own *emulator.Server, prefix string, n int) []*pamv1.PamElevation {
	t.Helper()
	var els []*pamv1.PamElevation
	for i := range n {
		id := own.AddRequest(emulator.Request{Owner: pamUser, RoleID: randomGUID(), RequestedTTL: time.Hour}).ID
		el := elevation(ns, fmt.Sprintf("%s-%02d", prefix, i), id)
		create(t, el)
		els = append(els, el)
	}
	for _, el := range els {
		waitActive(t, el)
	}
	return els
}

// closesAndLoneReads reads a call log: where each request was closed (none twice), and where a
// read named a request after its close — a confirmation read on its own, not from a list.
func closesAndLoneReads(g Gomega, calls []emulator.Call) (closedAt map[string]int, alone []int) {
	closedAt = map[string]int{}
	for i, c := range calls {
		if c.Endpoint == emulator.EndpointCloseRequest {
			g.Expect(closedAt).NotTo(HaveKey(c.RequestID), "a request was closed twice")
			closedAt[c.RequestID] = i
		}
	}
	for i, c := range calls {
		if c.Endpoint != emulator.EndpointListRequests {
			continue
		}
		query, _ := url.QueryUnescape(c.Query)
		query = strings.ToLower(query)
		for id, at := range closedAt {
			if i > at && strings.Contains(query, id) {
				alone = append(alone, i)
			}
		}
	}
	return closedAt, alone
}
