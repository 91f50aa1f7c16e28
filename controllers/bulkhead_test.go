package controllers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"
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
