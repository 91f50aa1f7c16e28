package controllers_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/pamapi"
)

func TestCloseOnDeleteExactlyOnce(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	withServer(t, ns)
	id := seedRequest(pamUser, time.Hour)
	el := elevation(ns, "on-delete", id)
	create(t, el)

	waitActive(t, el)
	waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionClosed, metav1.ConditionFalse, pamv1.ReasonActive)
		g.Expect(el.Status.LastSyncTime).NotTo(BeNil())
		g.Expect(el.Status.ObservedGeneration).To(Equal(el.Generation))
	})
	attempts, _ := pamServer.CloseCalls(id)
	g.Expect(attempts).To(BeZero(), "nothing is closed while the object exists")

	deleteObj(t, el)
	waitGone(t, el)

	attempts, successes := pamServer.CloseCalls(id)
	g.Expect(attempts).To(Equal(1))
	g.Expect(successes).To(Equal(1))
	req, _ := pamServer.Request(id)
	g.Expect(req.Status).To(Equal(pamapi.StatusClosed))
	waitEvent(t, el, pamv1.ConditionClosed, "HTTP 200")
}

func TestOrphanDoesNotCallPAM(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	withServer(t, ns)
	id := seedRequest(pamUser, time.Hour)
	el := elevation(ns, "orphan", id, func(el *pamv1.PamElevation) { el.Spec.DeletionPolicy = pamv1.DeletionPolicyOrphan })
	create(t, el)
	waitActive(t, el)

	deleteObj(t, el)
	waitGone(t, el)

	attempts, _ := pamServer.CloseCalls(id)
	g.Expect(attempts).To(BeZero())
	req, _ := pamServer.Request(id)
	g.Expect(req.Status).To(Equal(pamapi.StatusActive))
}

func TestCloseAtExpiry(t *testing.T) {
	cases := []struct {
		name   string
		expiry func(el *pamv1.PamElevation)
	}{
		{"expiresAt", func(el *pamv1.PamElevation) {
			at := metav1.NewTime(time.Now().Add(3 * time.Second).Truncate(time.Second))
			el.Spec.ExpiresAt = &at
		}},
		{"ttl", func(el *pamv1.PamElevation) { el.Spec.TTL = &metav1.Duration{Duration: 3 * time.Second} }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			ns := newNamespace(t)
			withServer(t, ns)
			id := seedRequest(pamUser, time.Hour)
			el := elevation(ns, "expiring", id, tc.expiry)
			create(t, el)

			waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
				expectCondition(g, el.Status.Conditions, pamv1.ConditionClosed, metav1.ConditionTrue, pamv1.ReasonExpired)
				expectCondition(g, el.Status.Conditions, pamv1.ConditionReady, metav1.ConditionTrue, pamv1.ReasonExpired)
				g.Expect(el.Status.RequestStatus).To(Equal("Closed"))
				g.Expect(el.Status.ClosedAt).NotTo(BeNil())
			})
			g.Expect(el.Status.ExpiresAt).NotTo(BeNil())
			expiry := el.Status.ExpiresAt.Time

			calls := closeCalls(id)
			g.Expect(calls).To(HaveLen(1))
			lag := calls[0].Time.Sub(expiry)
			g.Expect(lag).To(BeNumerically(">=", 0), "closed %s before expiry", -lag)
			g.Expect(lag).To(BeNumerically("<", time.Second), "the close reached PAM %s after expiry", lag)

			// Deleting a closed elevation needs no call to PAM.
			deleteObj(t, el)
			waitGone(t, el)
			attempts, successes := pamServer.CloseCalls(id)
			g.Expect([]int{attempts, successes}).To(Equal([]int{1, 1}))
		})
	}
}

func TestEndedInPAM(t *testing.T) {
	g := NewWithT(t)
	el, id := trackActive(t, "ended")

	g.Expect(pamServer.SetRequestStatus(id, pamapi.StatusExpired)).To(BeTrue())
	waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionClosed, metav1.ConditionTrue, pamv1.ReasonEndedInPAM)
		g.Expect(el.Status.RequestStatus).To(Equal("Expired"))
	})

	deleteObj(t, el)
	waitGone(t, el)
	attempts, _ := pamServer.CloseCalls(id)
	g.Expect(attempts).To(BeZero(), "a request PAM ended is never closed again")
}

func TestRequestNotFoundKeepsFinalizerUntilOrphan(t *testing.T) {
	cases := []struct {
		name      string
		requestID func() string
	}{
		{"unknown id", randomGUID},
		{"another account's request", func() string { return seedRequest(otherUser, time.Hour) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			ns := newNamespace(t)
			withServer(t, ns)
			id := tc.requestID()
			el := elevation(ns, "not-found", id)
			create(t, el)
			waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
				expectCondition(g, el.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, pamv1.ReasonRequestNotFound)
				expectCondition(g, el.Status.Conditions, pamv1.ConditionReady, metav1.ConditionFalse, pamv1.ReasonRequestNotFound)
			})

			deleteObj(t, el)
			// Fail closed: the object stays while retries keep finding nothing to close.
			g.Consistently(func(g Gomega) {
				g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(el), el)).To(Succeed())
				g.Expect(el.Finalizers).To(ContainElement(pamv1.ElevationFinalizer))
			}).WithTimeout(3 * maxRetryDelay).WithPolling(100 * time.Millisecond).Should(Succeed())
			g.Expect(el.DeletionTimestamp).NotTo(BeNil())
			expectCondition(g, el.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, pamv1.ReasonRequestNotFound)

			patch := client.MergeFrom(el.DeepCopy())
			el.Spec.DeletionPolicy = pamv1.DeletionPolicyOrphan
			g.Expect(k8sClient.Patch(context.Background(), el, patch)).To(Succeed())
			waitGone(t, el)
			attempts, _ := pamServer.CloseCalls(id)
			g.Expect(attempts).To(BeZero())
		})
	}
}

func TestCloseRetriesThroughFaults(t *testing.T) {
	cases := []struct {
		name       string
		fault      emulator.Fault
		minSpacing time.Duration // the Retry-After the operator must honour
	}{
		{"503 with Retry-After", emulator.Fault{Status: 503, RetryAfter: "1", Times: 2}, time.Second},
		{"408", emulator.Fault{Status: 408, Times: 2}, 0},
		{"429 with Retry-After", emulator.Fault{Status: 429, RetryAfter: "1", Times: 2}, time.Second},
		{"500", emulator.Fault{Status: 500, Times: 2}, 0},
		{"dropped connection", emulator.Fault{Drop: true, Times: 2}, 0},
		{"lost 200", emulator.Fault{LoseResponse: true, Times: 1}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			ns := newNamespace(t)
			withServer(t, ns)
			id := seedRequest(pamUser, time.Hour)
			el := elevation(ns, "faulty", id)
			create(t, el)
			waitActive(t, el)

			fault := tc.fault
			fault.Endpoint = emulator.EndpointCloseRequest
			pamServer.InjectFault(fault)
			t.Cleanup(pamServer.ClearFaults)
			deleteObj(t, el)
			waitGone(t, el)

			_, successes := pamServer.CloseCalls(id)
			g.Expect(successes).To(Equal(1), "exactly one close took effect")
			calls := closeCalls(id)
			g.Expect(len(calls)).To(BeNumerically(">=", tc.fault.Times))
			for i := 1; i < len(calls); i++ {
				g.Expect(calls[i].Time.Sub(calls[i-1].Time)).To(BeNumerically(">=", tc.minSpacing-50*time.Millisecond),
					"retry %d came before the server's Retry-After", i)
			}
			waitEvent(t, el, pamv1.ReasonCloseFailed, "Closing PAM request "+id+" failed")
		})
	}
}

func TestRetryingCloseReportsReconciling(t *testing.T) {
	g := NewWithT(t)
	el, id := trackActive(t, "retrying")

	pamServer.InjectFault(emulator.Fault{Endpoint: emulator.EndpointCloseRequest, Status: 503})
	t.Cleanup(pamServer.ClearFaults)
	deleteObj(t, el)
	waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionReady, metav1.ConditionFalse, pamv1.ReasonPAMUnavailable)
		expectCondition(g, el.Status.Conditions, pamv1.ConditionReconciling, metav1.ConditionTrue, pamv1.ReasonPAMUnavailable)
		g.Expect(conditionMessage(el, pamv1.ConditionReady)).To(ContainSubstring("HTTP 503"))
	})

	pamServer.ClearFaults()
	waitGone(t, el)
	_, successes := pamServer.CloseCalls(id)
	g.Expect(successes).To(Equal(1))
}

func TestUnauthorizedStallsAndHealsWhenSecretIsFixed(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	secret := withServerAs(t, ns, pamUser, "wrong-password")
	id := seedRequest(pamUser, time.Hour)
	el := elevation(ns, "unauthorized", id)
	create(t, el)

	// Refused, then paused by the account's login breaker until the Secret's data changes; the
	// message says why either way.
	waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
		refusedOrPaused(g, el)
		g.Expect(conditionMessage(el, pamv1.ConditionStalled)).To(ContainSubstring("HTTP 401"))
	})

	rotatePassword(t, secret, pamPassword)
	waitActive(t, el)
	g.Expect(el.Status.Conditions).NotTo(ContainElement(HaveField("Type", pamv1.ConditionStalled)))
	assertNoCredentialLeak(t, ns, el)
}

// TestPasswordChangedUnderACloseClosesAtOnce: a close goes out with the credentials last read
// while they are read again; when the password changed and the old one is refused, the same pass
// closes with the new one, instead of reporting the refusal and backing off.
func TestPasswordChangedUnderACloseClosesAtOnce(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	user := "rotating-" + strings.ToLower(randomGUID()[:8])
	pamServer.SetPassword(user, "first-password")
	secret := withServerAs(t, ns, user, "first-password")
	id := seedRequest(user, time.Hour)
	el := elevation(ns, "rotated", id)
	create(t, el)
	waitActive(t, el)

	// Every version of the object from here on.
	w, err := k8sClient.Watch(ctx, &pamv1.PamElevationList{}, client.InNamespace(ns), client.MatchingFields{"metadata.name": el.Name})
	g.Expect(err).NotTo(HaveOccurred())
	defer w.Stop()

	// The directory changes the password, then the Secret follows, then the object is deleted.
	pamServer.SetPassword(user, "second-password")
	rotatePassword(t, secret, "second-password")
	deleteObj(t, el)
	waitGone(t, el)

	deleted := false
	for ev := range w.ResultChan() {
		if ev.Type == watch.Deleted {
			deleted = true
			break
		}
		seen, ok := ev.Object.(*pamv1.PamElevation)
		g.Expect(ok).To(BeTrue(), "watch event %s: %v", ev.Type, ev.Object)
		g.Expect(seen.Status.Conditions).NotTo(ContainElement(HaveField("Reason", pamv1.ReasonUnauthorized)),
			"the close was never reported refused")
	}
	g.Expect(deleted).To(BeTrue(), "the watch ended before the deletion: not every version was seen")
	// At most one close went out with the old password, refused before PAM looked at it.
	closes := closeCalls(id)
	g.Expect(len(closes)).To(BeNumerically("<=", 2))
	g.Expect(closes[len(closes)-1].Status).To(Equal(http.StatusOK))
	if len(closes) == 2 {
		g.Expect(closes[0].Status).To(Equal(http.StatusUnauthorized))
	}
}

func TestServerMissingStallsAndHealsWhenCreated(t *testing.T) {
	ns := newNamespace(t)
	id := seedRequest(pamUser, time.Hour)
	el := elevation(ns, "no-server", id)
	create(t, el)
	waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, pamv1.ReasonServerNotFound)
		expectCondition(g, el.Status.Conditions, pamv1.ConditionReady, metav1.ConditionFalse, pamv1.ReasonServerNotFound)
	})

	create(t, &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"}, Spec: basicServerSpec("pam-credentials")})
	waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, pamv1.ReasonSecretNotFound)
	})

	create(t, basicSecret(ns, "pam-credentials", pamUser, pamPassword))
	waitActive(t, el)
}

func TestSecretNamespaces(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	clusterSecret := "cluster-" + strings.ToLower(randomGUID()[:8])

	// The elevation's own namespace holds a Secret of the same name: a ClusterPamServer must not
	// read it, only the one in the cluster resource namespace.
	create(t, basicSecret(ns, clusterSecret, pamUser, pamPassword))
	server := &pamv1.ClusterPamServer{ObjectMeta: metav1.ObjectMeta{Name: clusterSecret}, Spec: pamv1.ClusterPamServerSpec{
		PamServerSpec: basicServerSpec(clusterSecret), AllowedNamespaces: &metav1.LabelSelector{}}}
	create(t, server)
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), server) })

	id := seedRequest(pamUser, time.Hour)
	el := elevation(ns, "cluster-server", id, func(el *pamv1.PamElevation) {
		el.Spec.ServerRef = pamv1.ServerReference{Kind: pamv1.ServerKindClusterPamServer, Name: clusterSecret}
	})
	create(t, el)
	waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, pamv1.ReasonSecretNotFound)
		g.Expect(conditionMessage(el, pamv1.ConditionStalled)).To(ContainSubstring(clusterResourceNamespace))
	})
	waitFor(t, server, func(g Gomega, s *pamv1.ClusterPamServer) {
		expectCondition(g, s.Status.Conditions, pamv1.ConditionReady, metav1.ConditionFalse, pamv1.ReasonSecretNotFound)
	})

	create(t, basicSecret(clusterResourceNamespace, clusterSecret, pamUser, pamPassword))
	waitActive(t, el)
	waitFor(t, server, func(g Gomega, s *pamv1.ClusterPamServer) {
		expectCondition(g, s.Status.Conditions, pamv1.ConditionReady, metav1.ConditionTrue, pamv1.ReasonConfigured)
	})

	// A PamServer reads from its own namespace: one in another namespace cannot use this
	// namespace's Secret.
	other := newNamespace(t)
	create(t, &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: other, Name: "pam"}, Spec: basicServerSpec(clusterSecret)})
	el2 := elevation(other, "namespaced", seedRequest(pamUser, time.Hour))
	create(t, el2)
	waitFor(t, el2, func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, pamv1.ReasonSecretNotFound)
		g.Expect(conditionMessage(el, pamv1.ConditionStalled)).To(ContainSubstring("namespace " + other))
	})

	deleteObj(t, el)
	waitGone(t, el)
	_, successes := pamServer.CloseCalls(id)
	g.Expect(successes).To(Equal(1))
}

func TestPamServerConditions(t *testing.T) {
	ns := newNamespace(t)
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "no-password"},
		StringData: map[string]string{"username": pamUser}})
	cases := []struct {
		name   string
		spec   pamv1.PamServerSpec
		ready  metav1.ConditionStatus
		reason string
	}{
		{"no auth is valid", pamv1.PamServerSpec{URL: pamURL}, metav1.ConditionTrue, pamv1.ReasonConfigured},
		{"missing Secret", basicServerSpec("absent"), metav1.ConditionFalse, pamv1.ReasonSecretNotFound},
		{"Secret without password", basicServerSpec("no-password"), metav1.ConditionFalse, pamv1.ReasonInvalidServerConfig},
		{"CA bundle without certificates", pamv1.PamServerSpec{URL: "https://pam.example.test", CABundle: "not a certificate"},
			metav1.ConditionFalse, pamv1.ReasonInvalidServerConfig},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			server := &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "server-" + string(rune('a'+i))}, Spec: tc.spec}
			create(t, server)
			waitFor(t, server, func(g Gomega, s *pamv1.PamServer) {
				expectCondition(g, s.Status.Conditions, pamv1.ConditionReady, tc.ready, tc.reason)
				g.Expect(s.Status.ObservedGeneration).To(Equal(s.Generation))
				if tc.ready == metav1.ConditionFalse {
					expectCondition(g, s.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, tc.reason)
				}
			})
		})
	}
}

// conditionMessage returns the message of a condition, "" when absent.
func conditionMessage(el *pamv1.PamElevation, condType string) string {
	for _, c := range el.Status.Conditions {
		if c.Type == condType {
			return c.Message
		}
	}
	return ""
}

// assertNoCredentialLeak scans the manager's log, the namespace's Events and the object's
// status for the test passwords.
func assertNoCredentialLeak(t *testing.T, namespace string, el *pamv1.PamElevation) {
	t.Helper()
	g := NewWithT(t)
	var texts []string
	texts = append(texts, managerLog.String())
	for _, reason := range []string{pamv1.ConditionClosed, pamv1.ReasonCloseFailed, pamv1.ReasonEndedInPAM} {
		texts = append(texts, eventNotes(t, el, reason)...)
	}
	for _, c := range el.Status.Conditions {
		texts = append(texts, c.Message)
	}
	for _, text := range texts {
		g.Expect(text).NotTo(ContainSubstring(pamPassword))
		g.Expect(text).NotTo(ContainSubstring(otherPass))
		g.Expect(text).NotTo(ContainSubstring("Basic "))
	}
	_ = namespace
}

func TestRequestClosingInPAMIsNotClosedAgain(t *testing.T) {
	g := NewWithT(t)
	el, id := trackActive(t, "closing")

	// PAM starts closing it, and a periodic sync sees that before the deletion.
	g.Expect(pamServer.SetRequestStatus(id, pamapi.StatusClosing)).To(BeTrue())
	waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
		g.Expect(el.Status.RequestStatus).To(Equal("Closing"))
	})
	deleteObj(t, el)
	waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionReconciling, metav1.ConditionTrue, pamv1.ReasonClosing)
		g.Expect(el.Status.RequestStatus).To(Equal("Closing"))
	})

	g.Expect(pamServer.SetRequestStatus(id, pamapi.StatusClosed)).To(BeTrue())
	waitGone(t, el)
	attempts, _ := pamServer.CloseCalls(id)
	g.Expect(attempts).To(BeZero(), "PAM was already closing it")
}

func TestExpiryEdges(t *testing.T) {
	at := func(d time.Duration) *metav1.Time {
		t := metav1.NewTime(time.Now().Add(d).Truncate(time.Second))
		return &t
	}
	cases := []struct {
		name string
		// spec sets the expiry at creation; change, when set, moves it right after.
		spec   func(el *pamv1.PamElevation)
		change func(el *pamv1.PamElevation)
	}{
		{"expiry in the past at creation",
			func(el *pamv1.PamElevation) { el.Spec.ExpiresAt = at(-time.Hour) }, nil},
		{"ttl of one second",
			func(el *pamv1.PamElevation) { el.Spec.TTL = &metav1.Duration{Duration: time.Second} }, nil},
		{"expiry moved later while pending",
			func(el *pamv1.PamElevation) { el.Spec.ExpiresAt = at(3 * time.Second) },
			func(el *pamv1.PamElevation) { el.Spec.ExpiresAt = at(6 * time.Second) }},
		{"expiry moved earlier while pending",
			func(el *pamv1.PamElevation) { el.Spec.ExpiresAt = at(time.Hour) },
			func(el *pamv1.PamElevation) { el.Spec.ExpiresAt = at(3 * time.Second) }},
		{"ttl replaced by an earlier expiresAt",
			func(el *pamv1.PamElevation) { el.Spec.TTL = &metav1.Duration{Duration: time.Hour} },
			func(el *pamv1.PamElevation) { el.Spec.TTL = nil; el.Spec.ExpiresAt = at(2 * time.Second) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			ns := newNamespace(t)
			withServer(t, ns)
			id := seedRequest(pamUser, time.Hour)
			el := elevation(ns, "edge", id, tc.spec)
			create(t, el)
			if tc.change != nil {
				patch := client.MergeFrom(el.DeepCopy())
				tc.change(el)
				g.Expect(k8sClient.Patch(context.Background(), el, patch)).To(Succeed())
			}
			want, _ := el.Expiry()

			waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
				expectCondition(g, el.Status.Conditions, pamv1.ConditionClosed, metav1.ConditionTrue, pamv1.ReasonExpired)
			})
			g.Expect(el.Status.ExpiresAt.Time).To(BeTemporally("==", want.Time))
			calls := closeCalls(id)
			g.Expect(calls).To(HaveLen(1))
			g.Expect(calls[0].Time).NotTo(BeTemporally("<", want.Time), "closed before the expiry in force")
			if want.After(el.CreationTimestamp.Time) { // a past expiry closes on the first pass instead
				g.Expect(calls[0].Time.Sub(want.Time)).To(BeNumerically("<", time.Second), "closed late")
			}
		})
	}
}
