package controllers_test

import (
	"context"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/emulator"
)

// TestDialsRefusedByPolicy: an elevation whose server is at the metadata address, or at a host
// outside the manager's --allowed-pam-hosts, stalls with reason HostNotAllowed before anything
// is sent, and its deletion waits for a person (fail closed) until Orphan releases it. The
// emulator outside the list listens on 127.0.0.2 and sees no call; nothing can listen on
// 169.254.169.254 here, so there the message shows the dial was refused, not attempted.
func TestDialsRefusedByPolicy(t *testing.T) {
	cases := []struct {
		reason string
		// serve returns the server URL and CA bundle, and the emulator behind it when there is one.
		serve     func(t *testing.T) (string, string, *emulator.Server)
		inMessage string
	}{
		{"the metadata address", func(*testing.T) (string, string, *emulator.Server) { return "https://169.254.169.254/", "", nil },
			"dial to PAM host 169.254.169.254 refused: 169.254.169.254 lies in 169.254.0.0/16"},
		{"a host outside --allowed-pam-hosts", emulatorOn127002,
			"dial to PAM host 127.0.0.2 refused: the address is not in --allowed-pam-hosts (" + allowedPAMHosts + ")"},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			ctx := context.Background()
			url, caBundle, emu := tc.serve(t)
			ns := newNamespace(t)
			create(t, basicSecret(ns, "pam-credentials", pamUser, pamPassword))
			spec := basicServerSpec("pam-credentials")
			spec.URL, spec.CABundle = url, caBundle
			create(t, &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"}, Spec: spec})
			id := randomGUID()
			if emu != nil {
				id = emu.AddRequest(emulator.Request{Owner: pamUser, RoleID: randomGUID(), RequestedTTL: time.Hour}).ID
			}
			el := elevation(ns, "refused", id)
			create(t, el)
			waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
				g.Expect(el.Finalizers).To(ContainElement(pamv1.ElevationFinalizer))
				expectCondition(g, el.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, pamv1.ReasonHostNotAllowed)
				expectCondition(g, el.Status.Conditions, pamv1.ConditionReady, metav1.ConditionFalse, pamv1.ReasonHostNotAllowed)
				g.Expect(conditionMessage(el, pamv1.ConditionStalled)).To(ContainSubstring(tc.inMessage))
				g.Expect(el.Status.LastSyncTime).To(BeNil())
			})

			// The policy says where credentials may go: closes stop too, and the deletion waits.
			deleteObj(t, el)
			waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
				g.Expect(el.DeletionTimestamp).NotTo(BeNil())
				expectCondition(g, el.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, pamv1.ReasonHostNotAllowed)
			})
			g.Consistently(func() error {
				return k8sClient.Get(ctx, client.ObjectKeyFromObject(el), &pamv1.PamElevation{})
			}).WithTimeout(2 * maxRetryDelay).WithPolling(100 * time.Millisecond).Should(Succeed())
			patch := client.MergeFrom(el.DeepCopy())
			el.Spec.DeletionPolicy = pamv1.DeletionPolicyOrphan
			g.Expect(k8sClient.Patch(ctx, el, patch)).To(Succeed())
			waitGone(t, el)

			if emu != nil {
				g.Expect(emu.Calls()).To(BeEmpty(), "the host outside the list was called")
				if req, _ := emu.Request(id); req.Status != "Active" {
					t.Fatalf("the request is %s, want it untouched", req.Status)
				}
			}
			g.Expect(managerLog.String()).NotTo(ContainSubstring(pamPassword))
		})
	}
}

// TestKDCRefusedByPolicy: a Kerberos server whose KDC is outside --allowed-pam-hosts stalls with
// HostNotAllowed, and no login is sent: the policy reaches the Kerberos client too. (Nothing
// listens on 127.0.0.2, so a dial attempted would fail as unreachable instead.)
func TestKDCRefusedByPolicy(t *testing.T) {
	g := NewWithT(t)
	realm, pam, url := kerberosPAM(t)
	_, port, _ := net.SplitHostPort(realm.Addr)
	ns := newNamespace(t)
	kerberosServer(t, ns, "krb", url, map[string][]byte{"username": []byte("jen"), "password": []byte(kerberosCanary)},
		func(k *pamv1.KerberosAuth) {
			k.Realm, k.KDCs = realm.Realm, []string{net.JoinHostPort("127.0.0.2", port)}
		})
	id := pam.AddRequest(emulator.Request{Owner: "jen@" + realm.Realm, RoleID: randomGUID(), RequestedTTL: time.Hour}).ID
	el := elevation(ns, "krb", id, func(el *pamv1.PamElevation) {
		el.Spec.ServerRef.Name = "krb"
		el.Spec.DeletionPolicy = pamv1.DeletionPolicyOrphan // it could never be closed
	})
	create(t, el)
	waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, pamv1.ReasonHostNotAllowed)
		g.Expect(conditionMessage(el, pamv1.ConditionStalled)).To(ContainSubstring(
			"dial to KDC 127.0.0.2 refused: the address is not in --allowed-pam-hosts (" + allowedPAMHosts + ")"))
	})
	g.Expect(realm.Requests()).To(BeEmpty(), "the KDC was asked")
	deleteObj(t, el)
	waitGone(t, el)
	assertNoSecretIn(t, ns, kerberosCanary)
}

// emulatorOn127002 serves an emulator of its own over TLS on 127.0.0.2, a loopback address
// outside the suite's --allowed-pam-hosts; it returns its URL and certificate.
func emulatorOn127002(t *testing.T) (string, string, *emulator.Server) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatalf("cannot listen on 127.0.0.2: %v", err)
	}
	emu := emulator.New(emulator.Options{Users: map[string]string{pamUser: pamPassword}})
	srv := httptest.NewUnstartedServer(emu)
	srv.Listener.Close()
	srv.Listener = l
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL, certificatePEM(srv), emu
}
