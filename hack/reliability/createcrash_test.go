package main

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/emulator"
)

// TestCreateSurvivesAKillBetweenTheCreateAndItsRecord: PAM makes the request and holds its
// answer; the manager is killed (SIGKILL) while it waits for it, so status.requestID is never
// written. The next manager finds the request by its marker and adopts it: exactly one request,
// one create call.
func TestCreateSurvivesAKillBetweenTheCreateAndItsRecord(t *testing.T) {
	ctx := context.Background()
	h, err := startHarness(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer h.stop()
	const ns = "crash-create"
	role := h.pam.AddRole(emulator.Role{DisplayName: "Crash Role", TTL: time.Hour})
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"},
			StringData: map[string]string{"username": pamUser, "password": pamPassword}},
		&pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"}, Spec: pamv1.PamServerSpec{
			URL: h.pamURL, CABundle: h.pam.CABundle,
			Auth: &pamv1.PamServerAuth{Basic: &pamv1.BasicAuth{SecretRef: pamv1.SecretReference{Name: "pam"}}}}},
	} {
		if err := h.client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	h.pam.InjectFault(emulator.Fault{Endpoint: emulator.EndpointCreateRequest, HoldAnswer: true, Times: 1})

	first, err := h.startManager("first", false)
	if err != nil {
		t.Fatal(err)
	}
	el := &pamv1.PamElevation{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "crash"}, Spec: pamv1.PamElevationSpec{
		Request:   &pamv1.ElevationRequest{Role: role.DisplayName, Justification: "INC-4711"},
		ServerRef: pamv1.ServerReference{Name: "pam"}}}
	if err := h.client.Create(ctx, el); err != nil {
		t.Fatal(err)
	}
	creates := func() int {
		n := 0
		for _, c := range h.pam.Calls() {
			if c.Endpoint == emulator.EndpointCreateRequest && c.Effective {
				n++
			}
		}
		return n
	}
	if err := poll(ctx, time.Minute, 20*time.Millisecond, func() (bool, error) { return creates() == 1, nil }); err != nil {
		t.Fatalf("the create never reached PAM: %v", err)
	}
	first.kill()

	// What the dead manager left: the create's time, no request.
	if err := h.client.Get(ctx, client.ObjectKeyFromObject(el), el); err != nil {
		t.Fatal(err)
	}
	if el.Status.RequestID != "" || el.Status.RequestCreateTime == nil {
		t.Fatalf("after the kill: requestID %q, requestCreateTime %v; want none, and the create's time", el.Status.RequestID, el.Status.RequestCreateTime)
	}

	second, err := h.startManager("second", false)
	if err != nil {
		t.Fatal(err)
	}
	defer second.stop()
	err = poll(ctx, time.Minute, 100*time.Millisecond, func() (bool, error) {
		err := h.client.Get(ctx, client.ObjectKeyFromObject(el), el)
		return el.Status.RequestID != "" && el.Status.RequestStatus == "Active", err
	})
	if err != nil {
		t.Fatalf("the next manager did not adopt the request: %v (status %+v)", err, el.Status)
	}
	var made []emulator.Request
	for _, r := range h.pam.Requests() {
		if strings.Contains(r.Justification, "[pam-operator "+ns+"/crash ") {
			made = append(made, r)
		}
	}
	if len(made) != 1 || made[0].ID != el.Status.RequestID {
		t.Fatalf("PAM holds %d requests for the object (%v), want exactly the one adopted, %s", len(made), made, el.Status.RequestID)
	}
	if n := creates(); n != 1 {
		t.Fatalf("%d creates reached PAM, want 1", n)
	}
}
