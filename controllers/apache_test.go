package controllers_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/internal/testing/apache"
	"github.com/pam-operator/pam-operator/internal/testing/kdc"
)

// apacheNTLMAccount is the NTLM account as gss-ntlmssp names it, and so as PAM sees it
// through Apache; the Kerberos account is MIT's principal name, jen@PAM.TEST.
const apacheNTLMAccount = `PRIV\jen`

// apachePAM is the emulator behind Apache httpd, which authenticates for it as IIS does for
// MIM: Kerberos with the service keytab of HTTP/127.0.0.1 of a real KDC (jen, password
// kerberosCanary) through MIT's GSS-API, NTLM through gss-ntlmssp (PRIV\jen, password
// ntlmCanary). The emulator trusts only the user Apache names.
func apachePAM(t *testing.T) (*kdc.KDC, *emulator.Server, *apache.Server) {
	t.Helper()
	realm := kdc.Start(t)
	realm.AddPrincipal("jen", kerberosCanary)
	realm.AddRandomKeyPrincipal("HTTP/127.0.0.1")
	pam := emulator.New(emulator.Options{TrustedUserHeader: apache.DefaultUserHeader})
	backend := httptest.NewServer(pam)
	t.Cleanup(backend.Close)
	srv := apache.Start(t, apache.Options{
		Backend: backend.URL, Krb5Conf: realm.Krb5Conf(), Keytab: realm.Keytab("HTTP/127.0.0.1"),
		NTLMUsers: []apache.NTLMUser{{Domain: "PRIV", Username: "jen", Password: ntlmCanary}},
	})
	return realm, pam, srv
}

// ntlmServer creates a PamServer using NTLM with the given password.
func ntlmServer(t *testing.T, ns, name, url, password string) {
	t.Helper()
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		StringData: map[string]string{"username": apacheNTLMAccount, "password": password}})
	create(t, &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: pamv1.PamServerSpec{
		URL: url, Timeout: &metav1.Duration{Duration: 5 * time.Second},
		Auth: &pamv1.PamServerAuth{NTLM: &pamv1.NTLMAuth{SecretRef: pamv1.SecretReference{Name: name}}}}})
}

// TestApacheAcceptsKerberosAndNTLM: elevations close through Apache httpd, whose acceptors this
// project did not write — Kerberos with a password and with a keytab, NTLM as its own scheme and
// inside Negotiate — each close reaching PAM as the account Apache authenticated, by the
// mechanism Apache says it verified. Every Kerberos success answer carried an AP-REP that the
// client verified before it took the answer (the close would fail otherwise: see
// TestApacheAnswerWithoutProofIsNotTrusted). No password appears anywhere the operator writes.
func TestApacheAcceptsKerberosAndNTLM(t *testing.T) {
	realm, pam, srv := apachePAM(t)
	ns := newNamespace(t)
	create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "krb5"},
		Data: map[string]string{"krb5.conf": realm.Krb5Conf()}})
	kerberosServer(t, ns, "krb-password", srv.URL+apache.PathNegotiateAndNTLM,
		map[string][]byte{"username": []byte("jen"), "password": []byte(kerberosCanary)},
		func(k *pamv1.KerberosAuth) { k.Krb5ConfigMapRef = &pamv1.ConfigMapReference{Name: "krb5"} })
	kerberosServer(t, ns, "krb-keytab", srv.URL+apache.PathNegotiateOnly,
		map[string][]byte{"username": []byte("jen"), "keytab": realm.Keytab("jen")},
		func(k *pamv1.KerberosAuth) { k.Realm, k.KDCs = realm.Realm, []string{realm.Addr} })
	ntlmServer(t, ns, "ntlm-raw", srv.URL+apache.PathNegotiateAndNTLM, ntlmCanary)
	ntlmServer(t, ns, "ntlm-in-negotiate", srv.URL+apache.PathNegotiateOnly, ntlmCanary)

	cases := []struct {
		server, path, owner, mechanism string
	}{
		{"krb-password", apache.PathNegotiateAndNTLM, "jen@" + realm.Realm, "Negotiate/krb5"},
		{"krb-keytab", apache.PathNegotiateOnly, "jen@" + realm.Realm, "Negotiate/krb5"},
		{"ntlm-raw", apache.PathNegotiateAndNTLM, apacheNTLMAccount, "NTLM/NTLM"},
		{"ntlm-in-negotiate", apache.PathNegotiateOnly, apacheNTLMAccount, "Negotiate/NTLM"},
	}
	for _, tc := range cases {
		t.Run(tc.server, func(t *testing.T) {
			g := NewWithT(t)
			id := pam.AddRequest(emulator.Request{Owner: tc.owner, RoleID: randomGUID(), RequestedTTL: time.Hour}).ID
			el := elevation(ns, tc.server, id, func(el *pamv1.PamElevation) { el.Spec.ServerRef.Name = tc.server })
			create(t, el)
			waitActive(t, el)
			deleteObj(t, el)
			waitGone(t, el)
			_, successes := pam.CloseCalls(id)
			g.Expect(successes).To(Equal(1))
			for _, call := range pam.Calls() {
				if call.RequestID == id {
					g.Expect(call.User).To(Equal(tc.owner), "the close reached PAM as the account Apache authenticated")
				}
			}
			closePath := fmt.Sprintf("%s/api/pamresources/pamrequests(guid'%s')/Close", tc.path, id)
			g.Eventually(srv.Requests).WithTimeout(waitTimeout).WithPolling(pollEvery).Should(
				ContainElement(apache.Request{Status: http.StatusOK, Mechanism: tc.mechanism, Path: closePath}),
				"Apache's log:\n%v", srv.Requests())
		})
	}
	t.Run("another account's request", func(t *testing.T) {
		// PRIV\jen (NTLM) cannot see, let alone close, a request jen@PAM.TEST (Kerberos)
		// made: the emulator takes the account from Apache, not from the client.
		id := pam.AddRequest(emulator.Request{Owner: "jen@" + realm.Realm, RoleID: randomGUID(), RequestedTTL: time.Hour}).ID
		el := elevation(ns, "cross-account", id, func(el *pamv1.PamElevation) {
			el.Spec.ServerRef.Name = "ntlm-raw"
			el.Spec.DeletionPolicy = pamv1.DeletionPolicyOrphan
		})
		create(t, el)
		waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
			expectCondition(g, el.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, pamv1.ReasonRequestNotFound)
		})
		releaseAll(t, []*pamv1.PamElevation{el})
		if req, _ := pam.Request(id); req.Status != "Active" {
			t.Errorf("the request is %s, want Active", req.Status)
		}
	})

	g := NewWithT(t)
	g.Expect(srv.Refusals()).To(BeEmpty(), srv.ErrorLog())
	// The debug log a person reads on a real MIM (docs/authentication.md) shows each handshake
	// by its flags: every Kerberos answer proved the server, and NTLM went under both schemes.
	host := strings.TrimPrefix(srv.URL, "http://")
	krbLines := grepLines(managerLog.String(), "Kerberos handshake", host)
	g.Expect(krbLines).NotTo(BeEmpty())
	g.Expect(krbLines).To(HaveEach(ContainSubstring(`"mutualAuthentication": "verified"`)))
	ntlmLines := grepLines(managerLog.String(), "NTLM handshake", host)
	g.Expect(ntlmLines).To(ContainElements(ContainSubstring(`"scheme": "NTLM"`), ContainSubstring(`"scheme": "Negotiate"`)))
	g.Expect(ntlmLines).To(HaveEach(And(ContainSubstring(`"status": 200`), ContainSubstring(`"avFlags": "0x2"`))))
	// No token: base64 of "NTLMSSP" or of a SPNEGO token's start.
	g.Expect(append(krbLines, ntlmLines...)).NotTo(ContainElement(Or(ContainSubstring("TlRMTVNT"), ContainSubstring("YII"))))
	assertNoSecretIn(t, ns, kerberosCanary)
	assertNoSecretIn(t, ns, ntlmCanary)
}

// TestApacheRefusedNTLMLoginIsCountedOnce: a wrong NTLM password behind 10 elevations costs
// Apache (and the directory behind it) one refused logon, then one try per backoff window; the
// right password in the Secret heals the elevations, and the close goes through.
func TestApacheRefusedNTLMLoginIsCountedOnce(t *testing.T) {
	g := NewWithT(t)
	_, pam, srv := apachePAM(t)
	ns := newNamespace(t)

	// The breaker is the account's and its credential data's, across tests and runs: a
	// password of its own makes it this test's.
	wrong := "not-the-password-" + randomGUID()
	ntlmServer(t, ns, "pam", srv.URL+apache.PathNegotiateAndNTLM, wrong)
	var els []*pamv1.PamElevation
	for i := range 10 {
		id := pam.AddRequest(emulator.Request{Owner: apacheNTLMAccount, RoleID: randomGUID(), RequestedTTL: time.Hour}).ID
		el := elevation(ns, fmt.Sprintf("el-%d", i), id)
		create(t, el)
		els = append(els, el)
	}
	for _, el := range els {
		waitFor(t, el, refusedOrPaused)
	}
	waitLoginBackoff(t, ns, `priv\jen`)
	g.Expect(srv.Refusals()).To(HaveLen(1), "10 elevations, one refused logon:\n%s", srv.ErrorLog())
	g.Eventually(srv.Refusals).WithTimeout(3 * authFailureBackoff).Should(HaveLen(2))
	// The probe after the backoff is one logon, not the first of ten in a row.
	g.Consistently(srv.Refusals).WithTimeout(authFailureBackoff / 2).Should(HaveLen(2))
	expectBackoffBetween(g, srv.Refusals())
	g.Expect(pam.Calls()).To(BeEmpty(), "nothing reached PAM without a logon")

	secret := &corev1.Secret{}
	g.Expect(k8sClient.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "pam"}, secret)).To(Succeed())
	secret.Data["password"] = []byte(ntlmCanary)
	g.Expect(k8sClient.Update(t.Context(), secret)).To(Succeed())
	for _, el := range els {
		waitActive(t, el)
	}
	releaseAll(t, els)
	g.Expect(len(srv.Refusals())).To(BeNumerically("<=", 3), "a try already on its way may still be refused")
	assertNoSecretIn(t, ns, wrong)
	g.Expect(srv.ErrorLog()).NotTo(ContainSubstring(wrong))
}

// TestApacheAnswerWithoutProofIsNotTrusted: behind a proxy that drops WWW-Authenticate from
// success answers, Apache's AP-REP never arrives; the operator takes no such answer for PAM's
// and stalls saying why, without counting it as a refused logon.
func TestApacheAnswerWithoutProofIsNotTrusted(t *testing.T) {
	realm, pam, srv := apachePAM(t)
	ns := newNamespace(t)
	kerberosServer(t, ns, "pam", srv.URL+apache.PathDropsProof,
		map[string][]byte{"username": []byte("jen"), "password": []byte(kerberosCanary)},
		func(k *pamv1.KerberosAuth) { k.Realm, k.KDCs = realm.Realm, []string{realm.Addr} })
	id := pam.AddRequest(emulator.Request{Owner: "jen@" + realm.Realm, RoleID: randomGUID(), RequestedTTL: time.Hour}).ID
	el := elevation(ns, "no-proof", id, func(el *pamv1.PamElevation) { el.Spec.DeletionPolicy = pamv1.DeletionPolicyOrphan })
	create(t, el)
	waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
		stalled := findCondition(el.Status.Conditions, pamv1.ConditionStalled)
		g.Expect(stalled).NotTo(BeNil())
		g.Expect(stalled.Message).To(ContainSubstring("did not prove it is HTTP/127.0.0.1"))
		g.Expect(el.Status.RequestStatus).To(BeEmpty(), "an answer without proof was read as PAM's")
	})
	server := &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"}}
	waitFor(t, server, func(g Gomega, s *pamv1.PamServer) { g.Expect(s.Status.LoginBackoff).To(BeNil()) })
	releaseAll(t, []*pamv1.PamElevation{el})
}

func grepLines(text string, words ...string) []string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		keep := true
		for _, w := range words {
			keep = keep && strings.Contains(line, w)
		}
		if keep {
			out = append(out, line)
		}
	}
	return out
}

// TestApacheServiceKeyRotation: the PAM service account's password changes and Apache gets the
// new keys; the operator's cached ticket, encrypted in the old key, is refused once by Apache,
// a new ticket is fetched, and the close goes through — the refusal of a ticket is not a
// refused logon of the account.
func TestApacheServiceKeyRotation(t *testing.T) {
	g := NewWithT(t)
	realm, pam, srv := apachePAM(t)
	ns := newNamespace(t)
	kerberosServer(t, ns, "pam", srv.URL+apache.PathNegotiateAndNTLM,
		map[string][]byte{"username": []byte("jen"), "password": []byte(kerberosCanary)},
		func(k *pamv1.KerberosAuth) { k.Realm, k.KDCs = realm.Realm, []string{realm.Addr} })
	closeOne := func(name string) {
		t.Helper()
		id := pam.AddRequest(emulator.Request{Owner: "jen@" + realm.Realm, RoleID: randomGUID(), RequestedTTL: time.Hour}).ID
		el := elevation(ns, name, id)
		create(t, el)
		waitActive(t, el)
		deleteObj(t, el)
		waitGone(t, el)
		_, successes := pam.CloseCalls(id)
		g.Expect(successes).To(Equal(1))
	}
	closeOne("before")
	g.Expect(srv.Refusals()).To(BeEmpty(), srv.ErrorLog())

	realm.RotateKey("HTTP/127.0.0.1")
	srv.SetKeytab(realm.Keytab("HTTP/127.0.0.1"))
	closeOne("after")
	g.Expect(srv.Refusals()).To(HaveLen(1), "the cached ticket, once:\n%s", srv.ErrorLog())
	server := &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"}}
	waitFor(t, server, func(g Gomega, s *pamv1.PamServer) { g.Expect(s.Status.LoginBackoff).To(BeNil()) })
	assertNoSecretIn(t, ns, kerberosCanary)
}
