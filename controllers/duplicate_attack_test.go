package controllers_test

import (
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/pamapi"
)

// TestAnotherTenantCannotStopAClose: team B learns the request ID of team A's elevation and
// names it first, in every way it can. A still reads the request, is never a duplicate, closes
// it when deleted, and learns nothing of B; nothing B did is named to A.
func TestAnotherTenantCannotStopAClose(t *testing.T) {
	for _, tc := range []struct {
		name string
		// claim makes team B's elevation of id in namespace ns, and waits until it has done
		// what it can.
		claim func(t *testing.T, ns, id string) *pamv1.PamElevation
	}{
		{"first, never synced, on a missing server", func(t *testing.T, ns, id string) *pamv1.PamElevation {
			el := elevation(ns, "claim", id, func(el *pamv1.PamElevation) { el.Spec.ServerRef.Name = "missing" })
			create(t, el)
			waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
				expectCondition(g, el.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, pamv1.ReasonServerNotFound)
			})
			return el
		}},
		{"first, synced on the same PAM", func(t *testing.T, ns, id string) *pamv1.PamElevation {
			withServer(t, ns)
			el := elevation(ns, "claim", strings.ToUpper(id))
			create(t, el)
			waitActive(t, el)
			return el
		}},
		{"first, on a fake server of its own that answers Active", func(t *testing.T, _, id string) *pamv1.PamElevation {
			ns, fake := withOwnEmulator(t, nil)
			fake.AddRequest(emulator.Request{ID: id, Owner: pamUser, RoleID: randomGUID(), RequestedTTL: time.Hour})
			el := elevation(ns, "claim", id)
			create(t, el)
			waitActive(t, el)
			return el
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			id := seedRequest(pamUser, time.Hour)
			claim := tc.claim(t, newNamespace(t), id)

			nsA := newNamespace(t)
			withServer(t, nsA)
			el := elevation(nsA, "owner", id)
			create(t, el)
			waitActive(t, el)
			for _, cond := range el.Status.Conditions {
				g.Expect(cond.Message).NotTo(ContainSubstring(claim.Namespace), "team A is told of team B's object")
			}

			deleteObj(t, el)
			waitGone(t, el)
			attempts, successes := pamServer.CloseCalls(id)
			g.Expect([]int{attempts, successes}).To(Equal([]int{1, 1}), "team A's deletion must close its request")
			g.Expect(eventNotes(t, el, pamv1.ReasonDuplicateRequest)).To(BeEmpty())
		})
	}
}

// TestSameRequestOnAnotherServerIsNotADuplicate: two elevations of one namespace on two servers
// each close; only one of the same namespace and server that read the request open holds it.
func TestSameRequestOnAnotherServerIsNotADuplicate(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	withServer(t, ns)
	create(t, &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam-2"}, Spec: basicServerSpec("pam-credentials")})
	id := seedRequest(pamUser, time.Hour)
	first := elevation(ns, "first", id)
	create(t, first)
	waitActive(t, first)

	other := elevation(ns, "other-server", id, func(el *pamv1.PamElevation) { el.Spec.ServerRef.Name = "pam-2" })
	create(t, other)
	waitActive(t, other)
	deleteObj(t, other)
	waitGone(t, other)
	_, successes := pamServer.CloseCalls(id)
	g.Expect(successes).To(Equal(1), "an elevation on another server is not a duplicate: its deletion closes")

	// The first one sees the request ended in PAM, and goes without a second close.
	waitFor(t, first, func(g Gomega, el *pamv1.PamElevation) {
		g.Expect(el.Status.RequestStatus).To(Equal(string(pamapi.StatusClosed)))
	})
}
