package controllers_test

import (
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/pam/emulator"
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
		g.Expect(conditionMessage(el, pamv1.ConditionStalled)).To(ContainSubstring(ns + "/original"))
	})

	deleteObj(t, duplicate)
	waitGone(t, duplicate)
	attempts, _ := pamServer.CloseCalls(id)
	g.Expect(attempts).To(BeZero(), "deleting a duplicate must not revoke the original's access")
	req, _ := pamServer.Request(id)
	g.Expect(req.Status).To(Equal(emulator.StatusActive))
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
	attempts, _ := pamServer.CloseCalls(id)
	g.Expect(attempts).To(BeZero(), "PAM was down: no close got through")
	waitEvent(t, el, pamv1.ReasonEndedInPAM, "ExpirationTime")
}

func TestCloseAnswered200ButStillOpenIsNotTrusted(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	withServer(t, ns)
	id := seedRequest(pamUser, time.Hour)
	el := elevation(ns, "lying-200", id)
	create(t, el)
	waitActive(t, el)

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
	g.Expect(req.Status).To(Equal(emulator.StatusClosed))
}
