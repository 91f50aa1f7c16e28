package controllers_test

import (
	"context"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/emulator/kerberosserver"
	"github.com/pam-operator/pam-operator/emulator/ntlmserver"
	"github.com/pam-operator/pam-operator/internal/testing/kdc"
)

// kerberosCanary is the Kerberos user's password: it must appear nowhere the operator writes.
const kerberosCanary = "krb-canary-5b0f2e7c"

// kerberosPAM is an emulator that accepts only Negotiate tokens for HTTP/127.0.0.1 of a real
// KDC, with the user jen (password kerberosCanary).
func kerberosPAM(t *testing.T) (*kdc.KDC, *emulator.Server, string) {
	t.Helper()
	realm := kdc.Start(t)
	realm.AddPrincipal("jen", kerberosCanary)
	realm.AddRandomKeyPrincipal("HTTP/127.0.0.1")
	verifier, err := kerberosserver.New(kerberosserver.Config{
		Keytab: realm.Keytab("HTTP/127.0.0.1"), ServicePrincipalName: "HTTP/127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	pam := emulator.New(emulator.Options{Authenticate: verifier.Authenticate})
	srv := httptest.NewServer(pam)
	t.Cleanup(srv.Close)
	return realm, pam, srv.URL
}

// kerberosServer creates a PamServer using Kerberos with the given Secret data.
func kerberosServer(t *testing.T, ns, name, url string, data map[string][]byte, mutate func(*pamv1.KerberosAuth)) {
	t.Helper()
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: data})
	krb := &pamv1.KerberosAuth{SecretRef: pamv1.SecretReference{Name: name}}
	mutate(krb)
	spec := pamv1.PamServerSpec{URL: url, Timeout: &metav1.Duration{Duration: 5 * time.Second}, Auth: &pamv1.PamServerAuth{Kerberos: krb}}
	if url == pamURL {
		spec.CABundle = pamCABundle
	}
	create(t, &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec})
}

// TestKerberosClosesThroughRealKDC: elevations close through PamServers that authenticate with
// Kerberos against a real MIT KDC — with a password and krb5.conf from a ConfigMap, and with a
// keytab and realm + kdcs — and the password appears in no log, Event or status.
func TestKerberosClosesThroughRealKDC(t *testing.T) {
	g := NewWithT(t)
	realm, pam, url := kerberosPAM(t)
	owner := "jen@" + realm.Realm
	ns := newNamespace(t)
	create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "krb5"},
		Data: map[string]string{"krb5.conf": realm.Krb5Conf()}})
	kerberosServer(t, ns, "krb-password", url, map[string][]byte{"username": []byte("jen"), "password": []byte(kerberosCanary)},
		func(k *pamv1.KerberosAuth) { k.Krb5ConfigMapRef = &pamv1.ConfigMapReference{Name: "krb5"} })
	kerberosServer(t, ns, "krb-keytab", url, map[string][]byte{"username": []byte("jen"), "keytab": realm.Keytab("jen")},
		func(k *pamv1.KerberosAuth) { k.Realm, k.KDCs = realm.Realm, []string{realm.Addr} })

	for _, server := range []string{"krb-password", "krb-keytab"} {
		id := pam.AddRequest(emulator.Request{Owner: owner, RoleID: randomGUID(), RequestedTTL: time.Hour}).ID
		el := elevation(ns, server, id, func(el *pamv1.PamElevation) { el.Spec.ServerRef.Name = server })
		create(t, el)
		waitActive(t, el)
		deleteObj(t, el)
		waitGone(t, el)
		_, successes := pam.CloseCalls(id)
		g.Expect(successes).To(Equal(1), "server %s", server)
		for _, call := range pam.Calls() {
			if call.RequestID == id {
				g.Expect(call.User).To(Equal(owner))
			}
		}
		waitEvent(t, el, pamv1.ConditionClosed, "HTTP 200")
		assertNoSecretIn(t, ns, kerberosCanary)
	}
}

// TestKerberosBadInput: each broken configuration or credential stalls with a message a person
// can act on, and never reaches PAM's data.
func TestKerberosBadInput(t *testing.T) {
	realm, pam, url := kerberosPAM(t)
	owner := "jen@" + realm.Realm
	realm.AddPrincipal("expired", kerberosCanary)
	realm.ExpirePassword("expired")
	ns := newNamespace(t)
	password := func(user, pw string) map[string][]byte {
		return map[string][]byte{"username": []byte(user), "password": []byte(pw)}
	}
	kdcs := func(k *pamv1.KerberosAuth) { k.Realm, k.KDCs = realm.Realm, []string{realm.Addr} }
	create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "broken-krb5"},
		Data: map[string]string{"krb5.conf": "[libdefaults\n default_realm = "}})

	cases := []struct {
		name   string
		data   map[string][]byte
		mutate func(*pamv1.KerberosAuth)
		// server is the reason the server reports, "" when its configuration is valid.
		server string
		reason string
		text   string
	}{
		{"wrong-password", password("jen", "not-the-password"), kdcs, "", pamv1.ReasonUnauthorized, "password"},
		{"wrong-spn", password("jen", kerberosCanary), func(k *pamv1.KerberosAuth) {
			kdcs(k)
			k.ServicePrincipalName = "HTTP/pam.wrong.example"
		}, "", pamv1.ReasonUnauthorized, "HTTP/pam.wrong.example"},
		{"expired-password", password("expired", kerberosCanary), kdcs, "", pamv1.ReasonUnauthorized, "expired"},
		{"malformed-keytab", map[string][]byte{"username": []byte("jen"), "keytab": []byte("not a keytab")}, kdcs,
			pamv1.ReasonInvalidServerConfig, pamv1.ReasonInvalidServerConfig, "keytab"},
		{"unparseable-krb5-conf", password("jen", kerberosCanary), func(k *pamv1.KerberosAuth) {
			k.Krb5ConfigMapRef = &pamv1.ConfigMapReference{Name: "broken-krb5"}
		}, pamv1.ReasonInvalidServerConfig, pamv1.ReasonInvalidServerConfig, "krb5.conf"},
		{"missing-keys", map[string][]byte{"username": []byte("jen")}, kdcs,
			pamv1.ReasonInvalidServerConfig, pamv1.ReasonInvalidServerConfig, `"password" and "keytab"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kerberosServer(t, ns, tc.name, url, tc.data, tc.mutate)
			if tc.server != "" {
				server := &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: tc.name}}
				waitFor(t, server, func(g Gomega, s *pamv1.PamServer) {
					cond := findCondition(s.Status.Conditions, pamv1.ConditionStalled)
					g.Expect(cond).NotTo(BeNil())
					g.Expect(cond.Reason).To(Equal(tc.server))
					g.Expect(cond.Message).To(ContainSubstring(tc.text))
				})
			}
			id := pam.AddRequest(emulator.Request{Owner: owner, RoleID: randomGUID(), RequestedTTL: time.Hour}).ID
			el := elevation(ns, tc.name, id, func(el *pamv1.PamElevation) { el.Spec.ServerRef.Name = tc.name })
			create(t, el)
			waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
				if tc.reason == pamv1.ReasonUnauthorized {
					refusedOrPaused(g, el) // a refused login, then its breaker
				} else {
					expectCondition(g, el.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, tc.reason)
				}
				g.Expect(conditionMessage(el, pamv1.ConditionStalled)).To(ContainSubstring(tc.text))
			})
			if req, _ := pam.Request(id); req.Status != "Active" {
				t.Fatalf("request is %s after a failed authentication, want Active", req.Status)
			}
		})
	}
	assertNoSecretIn(t, ns, kerberosCanary)
}

// assertNoSecretIn fails when secret appears in the manager's log, in the Events or the status
// of any elevation or server of the namespace, or in the metrics.
func assertNoSecretIn(t *testing.T, ns, secret string) {
	t.Helper()
	ctx := context.Background()
	texts := []string{managerLog.String()}
	var elevations pamv1.PamElevationList
	if err := k8sClient.List(ctx, &elevations, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, el := range elevations.Items {
		for _, c := range el.Status.Conditions {
			texts = append(texts, c.Message)
		}
	}
	var servers pamv1.PamServerList
	if err := k8sClient.List(ctx, &servers, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, s := range servers.Items {
		for _, c := range s.Status.Conditions {
			texts = append(texts, c.Message)
		}
	}
	texts = append(texts, allEventNotes(t, ns)...)
	// And the metrics the manager serves: every label value of every family.
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				texts = append(texts, l.GetValue())
			}
		}
	}
	for _, text := range texts {
		if strings.Contains(text, secret) {
			t.Fatalf("a credential leaked into %.200q", text)
		}
	}
}

func findCondition(conds []metav1.Condition, condType string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == condType {
			return &conds[i]
		}
	}
	return nil
}

// allEventNotes returns the notes of every Event in a namespace.
func allEventNotes(t *testing.T, ns string) []string {
	t.Helper()
	var list eventsv1.EventList
	if err := k8sClient.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	notes := make([]string, 0, len(list.Items))
	for _, e := range list.Items {
		notes = append(notes, e.Note)
	}
	return notes
}

// TestAuthMethodMismatchSaysWhatTheServerOffers: a PamServer configured for Kerberos against a
// server that offers only Basic stalls, and the message names what the server offered.
func TestAuthMethodMismatchSaysWhatTheServerOffers(t *testing.T) {
	realm := kdc.Start(t)
	realm.AddPrincipal("jen", kerberosCanary)
	ns := newNamespace(t)
	kerberosServer(t, ns, "mismatch", pamURL, map[string][]byte{"username": []byte("jen"), "password": []byte(kerberosCanary)},
		func(k *pamv1.KerberosAuth) { k.Realm, k.KDCs = realm.Realm, []string{realm.Addr} })
	id := seedRequest(pamUser, time.Hour)
	el := elevation(ns, "mismatch", id, func(el *pamv1.PamElevation) { el.Spec.ServerRef.Name = "mismatch" })
	create(t, el)
	waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, pamv1.ReasonUnauthorized)
		g.Expect(conditionMessage(el, pamv1.ConditionStalled)).To(ContainSubstring("server offers Basic"))
	})
	if len(realm.Requests()) != 0 {
		t.Errorf("the KDC was asked for tickets although the server offers no Negotiate: %v", realm.Requests())
	}
	assertNoSecretIn(t, ns, kerberosCanary)
}

// ntlmCanary is the NTLM user's password: it must appear nowhere the operator writes.
const ntlmCanary = "ntlm-canary-9c1d44aa"

// ntlmPAM is an emulator that accepts only NTLM from PRIV\jen, over https with Extended
// Protection required when withTLS is set. It returns the emulator, its URL and the CA bundle.
func ntlmPAM(t *testing.T, withTLS bool) (*emulator.Server, string, string) {
	pam, url, caBundle, _ := ntlmPAMVerifier(t, withTLS)
	return pam, url, caBundle
}

// ntlmPAMVerifier is ntlmPAM that also returns the NTLM verifier, which counts the refused
// handshakes.
func ntlmPAMVerifier(t *testing.T, withTLS bool) (*emulator.Server, string, string, *ntlmserver.Server) {
	t.Helper()
	var verifier *ntlmserver.Server
	pam := emulator.New(emulator.Options{Authenticate: func(w http.ResponseWriter, r *http.Request) (string, bool) {
		return verifier.Authenticate(w, r)
	}})
	srv := httptest.NewUnstartedServer(pam)
	srv.EnableHTTP2 = false
	// NTLM state lives with each connection; the verifier exists before any client connects.
	srv.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context { return verifier.ConnContext(ctx, c) }
	opts := ntlmserver.Options{Users: map[string]ntlmserver.User{"jen": {Domain: "PRIV", Username: "jen", Password: ntlmCanary}},
		Domain: "PRIV"}
	caBundle := ""
	if withTLS {
		srv.StartTLS()
		opts.Certificate = srv.Certificate()
		opts.ChannelBinding = ntlmserver.ChannelBindingRequire
		caBundle = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	} else {
		srv.Start()
	}
	var err error
	if verifier, err = ntlmserver.New(opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return pam, srv.URL, caBundle, verifier
}

// TestNTLMClosesAndHealsAfterRotation: elevations close through PamServers that authenticate
// with NTLMv2 — over http, and over https where the server requires channel binding; a wrong
// password stalls with 401, and fixing the Secret heals it without a restart.
func TestNTLMClosesAndHealsAfterRotation(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "http", true: "https with channel binding required"}[withTLS], func(t *testing.T) {
			g := NewWithT(t)
			pam, url, caBundle := ntlmPAM(t, withTLS)
			ns := newNamespace(t)
			secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "jen-ntlm"},
				StringData: map[string]string{"username": `PRIV\jen`, "password": "not-the-password"}}
			create(t, secret)
			create(t, &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"}, Spec: pamv1.PamServerSpec{
				URL: url, CABundle: caBundle, Timeout: &metav1.Duration{Duration: 5 * time.Second},
				Auth: &pamv1.PamServerAuth{NTLM: &pamv1.NTLMAuth{SecretRef: pamv1.SecretReference{Name: "jen-ntlm"}}}}})
			id := pam.AddRequest(emulator.Request{Owner: "jen", RoleID: randomGUID(), RequestedTTL: time.Hour}).ID
			el := elevation(ns, "ntlm", id)
			create(t, el)
			waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
				refusedOrPaused(g, el) // a refused login, then its breaker
				g.Expect(conditionMessage(el, pamv1.ConditionStalled)).To(ContainSubstring("HTTP 401"))
			})

			patch := client.MergeFrom(secret.DeepCopy())
			secret.StringData = map[string]string{"password": ntlmCanary}
			g.Expect(k8sClient.Patch(context.Background(), secret, patch)).To(Succeed())
			waitActive(t, el)
			deleteObj(t, el)
			waitGone(t, el)
			_, successes := pam.CloseCalls(id)
			g.Expect(successes).To(Equal(1))
			assertNoSecretIn(t, ns, ntlmCanary)
			assertNoSecretIn(t, ns, "not-the-password")
		})
	}
}
