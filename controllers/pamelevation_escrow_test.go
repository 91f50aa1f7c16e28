package controllers_test

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/emulator"
)

// TestEscrowServesACloseAndSaysSoOnce: the use the escrow is for — the Secret deleted first, as
// a namespace deletion may — still closes, after a change to the server that sends nothing
// elsewhere; the elevation gets one Warning Event that says the copy was used, however many
// times the close had to be tried.
func TestEscrowServesACloseAndSaysSoOnce(t *testing.T) {
	g := NewWithT(t)
	s := basicEscrowed(t)
	g.Expect(s.escrow.Data).To(HaveKey("secret.password"))
	g.Expect(s.escrow.Data).NotTo(HaveKey("secret.unrelated-token"), "the escrow keeps only what basic reads")

	deleteObj(t, s.secret)
	// The client built from the Secret was for the server as it was: the close reads the
	// credentials again, and finds the copy.
	server := patchServer(t, s.ns, func(p *pamv1.PamServer) { p.Spec.Timeout = &metav1.Duration{Duration: 3 * time.Second} })
	waitFor(t, server, func(g Gomega, p *pamv1.PamServer) {
		g.Expect(p.Status.ObservedGeneration).To(Equal(p.Generation))
		expectCondition(g, p.Status.Conditions, pamv1.ConditionReady, metav1.ConditionTrue, pamv1.ReasonConfigured)
	})
	s.pam.InjectFault(emulator.Fault{Endpoint: emulator.EndpointCloseRequest, Status: 503, Times: 2})
	deleteObj(t, s.el)
	waitGone(t, s.el)
	attempts, successes := s.pam.CloseCalls(s.el.Spec.RequestID)
	g.Expect([]int{attempts, successes}).To(Equal([]int{3, 1}), "two refused closes, then the close")

	escrowEvents := func() []eventsv1.Event { return eventsAbout(t, s.el, pamv1.ReasonCredentialEscrowUsed) }
	g.Eventually(escrowEvents).WithTimeout(waitTimeout).WithPolling(100 * time.Millisecond).Should(HaveLen(1))
	// A second Event would show as a second object, or as a series on the first.
	g.Consistently(func(g Gomega) {
		events := escrowEvents()
		g.Expect(events).To(HaveLen(1))
		g.Expect(events[0].Series).To(BeNil())
	}).WithTimeout(2 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
	event := escrowEvents()[0]
	g.Expect(event.Type).To(Equal(corev1.EventTypeWarning))
	g.Expect(event.Note).To(ContainSubstring(`Secret "pam-credentials" not found in namespace ` + s.ns))
	g.Expect(event.Note).To(ContainSubstring(s.escrow.Name))
	assertNoSecretIn(t, s.ns, escrowPassword)
	waitGone(t, s.escrow) // nothing needs it any more
}

// TestEscrowNeverAsksForNewAccess: the kept copy is there so that access can still be taken
// away once the Secret is gone. A create-mode elevation whose server's Secret is gone reads with
// it, but asks PAM for nothing: Stalled with the original reason, and no create reaches PAM.
func TestEscrowNeverAsksForNewAccess(t *testing.T) {
	g := NewWithT(t)
	s := basicEscrowed(t)
	s.pam.AddRole(emulator.Role{DisplayName: "SQL Admins", TTL: time.Hour})
	deleteObj(t, s.secret)

	el := requesting(s.ns, "after-the-secret", "SQL Admins")
	create(t, el)
	waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, pamv1.ReasonSecretNotFound)
		g.Expect(condition(el, pamv1.ConditionStalled).Message).To(ContainSubstring("never used to ask PAM for new access"))
		g.Expect(el.Status.RequestCreateTime).To(BeNil(), "nothing was asked for")
	})
	g.Expect(createCalls(s.pam)).To(BeZero())
	g.Expect(s.pam.Requests()).To(HaveLen(1), "only the request the adopting elevation tracks")

	// What it is for still works: the adopting elevation's close goes out with the copy.
	deleteObj(t, el)
	waitGone(t, el)
	deleteObj(t, s.el)
	waitGone(t, s.el)
	_, successes := s.pam.CloseCalls(s.el.Spec.RequestID)
	g.Expect(successes).To(Equal(1))
}

// eventsAbout returns the Events about obj with the reason.
func eventsAbout(t *testing.T, obj client.Object, reason string) []eventsv1.Event {
	t.Helper()
	var list eventsv1.EventList
	if err := k8sClient.List(context.Background(), &list, client.InNamespace(obj.GetNamespace())); err != nil {
		t.Fatalf("listing events: %v", err)
	}
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.UID == obj.GetUID() && e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}
