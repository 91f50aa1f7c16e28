package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/pamapi"
)

// approver decides the create-mode tests' requests in the emulator.
const approver = `PRIV\ann`

// createModePAM is a namespace with a PamServer on an emulator of its own, holding the roles.
func createModePAM(t *testing.T, adjust func(*pamv1.PamServerSpec), roles ...emulator.Role) (string, *emulator.Server, []emulator.Role) {
	t.Helper()
	ns, emu := withOwnEmulator(t, adjust)
	// Deleted while their emulator still answers: left behind, they would retry for the rest of
	// the suite.
	t.Cleanup(func() { deleteAllElevations(t, ns) })
	var added []emulator.Role
	for _, role := range roles {
		added = append(added, emu.AddRole(role))
	}
	return ns, emu, added
}

// requesting is an elevation in create mode, asking for the role by name.
func requesting(ns, name, role string, mutate ...func(*pamv1.PamElevation)) *pamv1.PamElevation {
	return elevation(ns, name, "", append([]func(*pamv1.PamElevation){func(el *pamv1.PamElevation) {
		el.Spec.Request = &pamv1.ElevationRequest{Role: role, Justification: "INC-4711: rotate the keys"}
	}}, mutate...)...)
}

// requestsOf returns the emulator's requests made for the elevation, by the marker the operator
// appends to the justification.
func requestsOf(emu *emulator.Server, el *pamv1.PamElevation) []emulator.Request {
	var out []emulator.Request
	for _, r := range emu.Requests() {
		if strings.Contains(r.Justification, "[pam-operator "+el.Namespace+"/"+el.Name+" ") {
			out = append(out, r)
		}
	}
	return out
}

// waitReady waits for Ready with the status and reason.
func waitReady(t *testing.T, el *pamv1.PamElevation, status metav1.ConditionStatus, reason string) {
	t.Helper()
	waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionReady, status, reason)
	})
}

func TestCreateModeRequestsTheRoleOnceAndClosesOnDeletion(t *testing.T) {
	g := NewWithT(t)
	ns, emu, roles := createModePAM(t, nil, emulator.Role{DisplayName: "SQL Admins", TTL: 2 * time.Hour})
	el := requesting(ns, "sql", "SQL Admins", func(el *pamv1.PamElevation) {
		el.Spec.Request.TTL = &metav1.Duration{Duration: 90 * time.Minute}
	})
	create(t, el)
	waitActive(t, el)

	made := requestsOf(emu, el)
	g.Expect(made).To(HaveLen(1))
	g.Expect(el.Status.RequestID).To(Equal(made[0].ID), "status.requestID is the request PAM made")
	g.Expect(made[0].RoleID).To(Equal(roles[0].ID))
	g.Expect(made[0].RequestedTTL).To(Equal(90 * time.Minute))
	g.Expect(made[0].Justification).To(HavePrefix("INC-4711: rotate the keys [pam-operator " + ns + "/sql "))
	g.Expect(made[0].Owner).To(Equal(pamUser))

	deleteObj(t, el)
	waitGone(t, el)
	attempts, successes := emu.CloseCalls(made[0].ID)
	g.Expect([]int{attempts, successes}).To(Equal([]int{1, 1}), "close attempts and successes")
	g.Expect(requestsOf(emu, el)).To(HaveLen(1), "a second request was made")
}

func TestCreateModeWaitsForApprovalAndMFA(t *testing.T) {
	ns, emu, _ := createModePAM(t, nil,
		emulator.Role{DisplayName: "Domain Admins", TTL: time.Hour, ApprovalEnabled: true, MFAEnabled: true, Approvers: []string{approver}},
		emulator.Role{DisplayName: "Slow", TTL: time.Hour, HoldProcessing: true})

	el := requesting(ns, "da", "Domain Admins")
	create(t, el)
	waitReady(t, el, metav1.ConditionFalse, pamv1.ReasonPendingMFA)
	waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionReconciling, metav1.ConditionTrue, pamv1.ReasonPendingMFA)
		g.Expect(condition(el, pamv1.ConditionReady).Message).To(ContainSubstring("multi-factor"))
	})
	NewWithT(t).Expect(emu.CompleteMFA(el.Status.RequestID)).To(Succeed())
	waitReady(t, el, metav1.ConditionFalse, pamv1.ReasonPendingApproval)
	NewWithT(t).Expect(emu.Approve(el.Status.RequestID, approver)).To(Succeed())
	waitActive(t, el)

	slow := requesting(ns, "slow", "Slow")
	create(t, slow)
	waitReady(t, slow, metav1.ConditionFalse, pamv1.ReasonProcessing)
	NewWithT(t).Expect(emu.Advance(slow.Status.RequestID)).To(Succeed())
	waitActive(t, slow)
}

func TestCreateModeRejectedIsTerminalAndReleasedWithoutClose(t *testing.T) {
	g := NewWithT(t)
	ns, emu, _ := createModePAM(t, nil,
		emulator.Role{DisplayName: "Domain Admins", TTL: time.Hour, ApprovalEnabled: true, Approvers: []string{approver}})
	el := requesting(ns, "rejected", "Domain Admins")
	create(t, el)
	waitReady(t, el, metav1.ConditionFalse, pamv1.ReasonPendingApproval)
	g.Expect(emu.Reject(el.Status.RequestID, approver)).To(Succeed())
	waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionClosed, metav1.ConditionTrue, pamv1.ReasonRejected)
		expectCondition(g, el.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, pamv1.ReasonRejected)
		expectCondition(g, el.Status.Conditions, pamv1.ConditionReady, metav1.ConditionFalse, pamv1.ReasonRejected)
	})
	deleteObj(t, el)
	waitGone(t, el)
	attempts, _ := emu.CloseCalls(el.Status.RequestID)
	g.Expect(attempts).To(BeZero(), "a rejected request was closed")
	g.Expect(requestsOf(emu, el)).To(HaveLen(1))
}

func TestCreateModeDeletionWhilePendingWithdrawsTheRequest(t *testing.T) {
	g := NewWithT(t)
	ns, emu, _ := createModePAM(t, nil,
		emulator.Role{DisplayName: "Domain Admins", TTL: time.Hour, ApprovalEnabled: true, Approvers: []string{approver}})
	el := requesting(ns, "withdrawn", "Domain Admins")
	create(t, el)
	waitReady(t, el, metav1.ConditionFalse, pamv1.ReasonPendingApproval)
	id := el.Status.RequestID
	deleteObj(t, el)
	waitGone(t, el)
	req, _ := emu.Request(id)
	g.Expect(req.Status).To(Equal(pamapi.StatusClosed))
}

func TestClosedTrueClosesNowAndKeepsTheRecord(t *testing.T) {
	g := NewWithT(t)
	ns, emu, _ := createModePAM(t, nil, emulator.Role{DisplayName: "SQL Admins", TTL: time.Hour})
	el := requesting(ns, "early", "SQL Admins")
	create(t, el)
	waitActive(t, el)

	patch := client.MergeFrom(el.DeepCopy())
	el.Spec.Closed = true
	g.Expect(k8sClient.Patch(context.Background(), el, patch)).To(Succeed())
	waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionClosed, metav1.ConditionTrue, pamv1.ReasonCloseRequested)
		expectCondition(g, el.Status.Conditions, pamv1.ConditionReady, metav1.ConditionTrue, pamv1.ReasonCloseRequested)
		g.Expect(el.Status.ClosedAt).NotTo(BeNil())
	})
	req, _ := emu.Request(el.Status.RequestID)
	g.Expect(req.Status).To(Equal(pamapi.StatusClosed))
	g.Expect(el.Finalizers).To(ContainElement(pamv1.ElevationFinalizer), "the record is kept")

	// Adopt mode too.
	adopted, id := trackActive(t, "adopted-early")
	patch = client.MergeFrom(adopted.DeepCopy())
	adopted.Spec.Closed = true
	g.Expect(k8sClient.Patch(context.Background(), adopted, patch)).To(Succeed())
	waitFor(t, adopted, func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionClosed, metav1.ConditionTrue, pamv1.ReasonCloseRequested)
	})
	attempts, successes := pamServer.CloseCalls(id)
	g.Expect([]int{attempts, successes}).To(Equal([]int{1, 1}), "close attempts and successes")
	g.Expect(adopted.Status.RequestID).To(Equal(strings.ToLower(id)))
}

func TestCreateModeRefusesRolesItMayNotRequest(t *testing.T) {
	roles := []emulator.Role{
		{DisplayName: "SQL Admins", TTL: time.Hour},
		{DisplayName: "Twins", TTL: time.Hour},
		{DisplayName: "Twins", TTL: time.Hour},
		{DisplayName: "Web Admins", TTL: 8 * time.Hour},
		{DisplayName: "Backup Operators", TTL: time.Hour},
	}
	ns, emu, added := createModePAM(t, func(spec *pamv1.PamServerSpec) {
		spec.RequestPolicy = &pamv1.RequestPolicy{AllowedRoles: []string{"sql admins", "Twins", "Web Admins"},
			MaxTTL: &metav1.Duration{Duration: 4 * time.Hour}}
	}, roles...)
	create(t, &pamv1.ClusterPamServer{ObjectMeta: metav1.ObjectMeta{Name: ns + "-no-policy"},
		Spec: pamv1.ClusterPamServerSpec{PamServerSpec: basicServerSpec("pam-credentials"), AllowedNamespaces: &metav1.LabelSelector{}}})
	t.Cleanup(func() {
		_ = k8sClient.Delete(context.Background(), &pamv1.ClusterPamServer{ObjectMeta: metav1.ObjectMeta{Name: ns + "-no-policy"}})
	})

	cases := []struct {
		name, reason string
		el           *pamv1.PamElevation
		message      []string
	}{
		{"unknown", pamv1.ReasonRoleNotFound, requesting(ns, "unknown", "Exchange Admins"), []string{`role "Exchange Admins"`}},
		{"ambiguous", pamv1.ReasonRoleAmbiguous, requesting(ns, "ambiguous", "Twins"), []string{added[1].ID, added[2].ID, "spec.request.roleID"}},
		{"outside allowedRoles", pamv1.ReasonRoleNotAllowed, elevation(ns, "not-allowed", "", func(el *pamv1.PamElevation) {
			el.Spec.Request = &pamv1.ElevationRequest{RoleID: strings.ToUpper(added[4].ID), Justification: "x"}
		}), []string{"Backup Operators", "allowedRoles"}},
		{"role's TTL above maxTTL", pamv1.ReasonRoleNotAllowed, requesting(ns, "too-long-default", "Web Admins"), []string{"maxTTL"}},
		{"ttl above maxTTL", pamv1.ReasonRoleNotAllowed, requesting(ns, "too-long", "SQL Admins", func(el *pamv1.PamElevation) {
			el.Spec.Request.TTL = &metav1.Duration{Duration: 5 * time.Hour}
		}), []string{"maxTTL"}},
		{"ClusterPamServer without requestPolicy", pamv1.ReasonRoleNotAllowed, requesting(ns, "cluster", "SQL Admins", func(el *pamv1.PamElevation) {
			el.Spec.ServerRef = pamv1.ServerReference{Kind: pamv1.ServerKindClusterPamServer, Name: ns + "-no-policy"}
		}), []string{"no requestPolicy"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			create(t, tc.el)
			waitFor(t, tc.el, func(g Gomega, el *pamv1.PamElevation) {
				expectCondition(g, el.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, tc.reason)
				expectCondition(g, el.Status.Conditions, pamv1.ConditionReady, metav1.ConditionFalse, tc.reason)
				for _, want := range tc.message {
					g.Expect(condition(el, pamv1.ConditionStalled).Message).To(ContainSubstring(want))
				}
			})
			NewWithT(t).Expect(requestsOf(emu, tc.el)).To(BeEmpty(), "a request was made")
			// Never asked for anything: deletion releases it at once.
			deleteObj(t, tc.el)
			waitGone(t, tc.el)
		})
	}
	// The roles 'allowedRoles' names by a different case still match.
	ok := requesting(ns, "allowed", "SQL Admins")
	create(t, ok)
	waitActive(t, ok)
}

func TestCreateModeShowsPAMsRefusalWithoutARetryStorm(t *testing.T) {
	g := NewWithT(t)
	ns, emu, _ := createModePAM(t, nil, emulator.Role{DisplayName: "SQL Admins", TTL: time.Hour})
	el := requesting(ns, "too-long", "SQL Admins", func(el *pamv1.PamElevation) {
		el.Spec.Request.TTL = &metav1.Duration{Duration: 2 * time.Hour}
	})
	create(t, el)
	waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, pamv1.ReasonPAMError)
		g.Expect(condition(el, pamv1.ConditionStalled).Message).To(ContainSubstring("exceeds the role's TTL"))
		g.Expect(el.Status.RequestCreateTime).To(BeNil(), "a refused create made nothing")
	})
	// A definite refusal made nothing: no list looked for a lost request.
	for _, c := range emu.Calls() {
		g.Expect(c.Endpoint).NotTo(Equal(emulator.EndpointListRequests), "a refused create was looked for as if lost")
	}
	// The retries back off towards the cap (2 s in this suite): a few in five seconds, no storm.
	start := createCalls(emu)
	g.Consistently(func() int { return createCalls(emu) - start }).WithTimeout(5 * time.Second).WithPolling(250 * time.Millisecond).
		Should(BeNumerically("<=", 4))
	g.Expect(emu.Requests()).To(BeEmpty())
}

func createCalls(emu *emulator.Server) int {
	n := 0
	for _, c := range emu.Calls() {
		if c.Endpoint == emulator.EndpointCreateRequest {
			n++
		}
	}
	return n
}

// TestCreateWhoseAnswerWasLostIsAdoptedNotRepeated: PAM makes the request and the answer never
// arrives (a dropped connection), or arrives as a 201 whose body cannot be read: the request is
// found by its marker and adopted, and no second one is asked for.
func TestCreateWhoseAnswerWasLostIsAdoptedNotRepeated(t *testing.T) {
	for _, fault := range []emulator.Fault{
		{Endpoint: emulator.EndpointCreateRequest, LoseResponse: true, Times: 1},
		{Endpoint: emulator.EndpointCreateRequest, MalformedBody: true, Times: 1},
	} {
		t.Run(fault.String(), func(t *testing.T) {
			g := NewWithT(t)
			ns, emu, _ := createModePAM(t, nil, emulator.Role{DisplayName: "SQL Admins", TTL: time.Hour})
			emu.InjectFault(fault)
			el := requesting(ns, "lost", "SQL Admins")
			create(t, el)
			waitActive(t, el)
			made := requestsOf(emu, el)
			g.Expect(made).To(HaveLen(1))
			g.Expect(el.Status.RequestID).To(Equal(made[0].ID))
			g.Expect(createCalls(emu)).To(Equal(1))
		})
	}
}

// TestRequestMadeBeforeACrashIsAdopted: the manager asked PAM for the request and stopped before
// recording the answer — the state it leaves is a RequestCreateTime in the status and a request
// in PAM carrying the object's marker. The next pass adopts it and asks for nothing.
func TestRequestMadeBeforeACrashIsAdopted(t *testing.T) {
	g := NewWithT(t)
	ns, emu, roles := createModePAM(t, nil, emulator.Role{DisplayName: "SQL Admins", TTL: time.Hour})
	el := requesting(ns, "crashed", "SQL Admins", func(el *pamv1.PamElevation) {
		el.Spec.ServerRef.Name = "not-yet" // held back until the crash's state is in place
	})
	create(t, el)
	attempt := metav1.NewTime(time.Now().Add(-time.Second).Truncate(time.Second))
	status := el.DeepCopy()
	status.Status.RequestCreateTime = &attempt
	g.Expect(k8sClient.Status().Patch(context.Background(), status, client.MergeFrom(el))).To(Succeed())
	made := emu.AddRequest(emulator.Request{Owner: pamUser, RoleID: roles[0].ID, RequestedTTL: time.Hour,
		Justification: "INC-4711: rotate the keys [pam-operator " + ns + "/crashed " + string(el.UID)[:8] + "]"})

	// A PamServer named like the reference, on the same emulator: the pass goes ahead.
	server := &pamv1.PamServer{}
	g.Expect(k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "pam"}, server)).To(Succeed())
	create(t, &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "not-yet"}, Spec: server.Spec})
	waitActive(t, el)
	g.Expect(el.Status.RequestID).To(Equal(made.ID))
	g.Expect(createCalls(emu)).To(BeZero())
	g.Expect(requestsOf(emu, el)).To(HaveLen(1))
}

func TestHundredCreateModeElevationsMakeHundredRequests(t *testing.T) {
	g := NewWithT(t)
	ns, emu, _ := createModePAM(t, func(spec *pamv1.PamServerSpec) {
		spec.RateLimit = &pamv1.RateLimit{QPS: 200, Burst: 200, MaxConcurrentCalls: 3}
	}, emulator.Role{DisplayName: "SQL Admins", TTL: time.Hour})
	var els []*pamv1.PamElevation
	var wg sync.WaitGroup
	for i := range 100 {
		el := requesting(ns, fmt.Sprintf("bulk-%03d", i), "SQL Admins")
		els = append(els, el)
		wg.Go(func() { create(t, el) })
	}
	wg.Wait()
	for _, el := range els {
		waitActive(t, el)
	}
	ids := map[string]bool{}
	for _, r := range emu.Requests() {
		g.Expect(ids[r.Justification]).To(BeFalse(), "two requests for %s", r.Justification)
		ids[r.Justification] = true
	}
	g.Expect(ids).To(HaveLen(100))
	g.Expect(createCalls(emu)).To(Equal(100))
}

func TestServerListsTheRolesItsAccountMayRequest(t *testing.T) {
	ns, _, roles := createModePAM(t, nil,
		emulator.Role{DisplayName: "SQL Admins", TTL: time.Hour},
		emulator.Role{DisplayName: "Domain Admins", TTL: 2 * time.Hour, ApprovalEnabled: true, MFAEnabled: true})
	server := &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"}}
	waitFor(t, server, func(g Gomega, s *pamv1.PamServer) {
		g.Expect(s.Status.RoleCount).To(BeEquivalentTo(2))
		g.Expect(s.Status.Roles).To(ConsistOf(
			pamv1.ServerRole{Name: "SQL Admins", ID: roles[0].ID, TTL: &metav1.Duration{Duration: time.Hour}},
			pamv1.ServerRole{Name: "Domain Admins", ID: roles[1].ID, TTL: &metav1.Duration{Duration: 2 * time.Hour}, Approval: true, MFA: true},
		))
	})
}

// deleteAllElevations deletes the namespace's elevations and waits until they are gone.
func deleteAllElevations(t *testing.T, ns string) {
	t.Helper()
	g := NewWithT(t)
	g.Expect(k8sClient.DeleteAllOf(context.Background(), &pamv1.PamElevation{}, client.InNamespace(ns))).To(Succeed())
	g.Eventually(func() []pamv1.PamElevation {
		var list pamv1.PamElevationList
		g.Expect(k8sClient.List(context.Background(), &list, client.InNamespace(ns))).To(Succeed())
		return list.Items
	}).WithTimeout(waitTimeout).WithPolling(pollEvery).Should(BeEmpty())
}

// condition returns el's condition of the type, an empty one when it has none.
func condition(el *pamv1.PamElevation, condType string) metav1.Condition {
	for _, c := range el.Status.Conditions {
		if c.Type == condType {
			return c
		}
	}
	return metav1.Condition{}
}
