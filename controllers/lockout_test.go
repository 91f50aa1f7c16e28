package controllers_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/internal/credentials"
)

// lockoutAccount is the account whose password the lockout tests get wrong.
const lockoutAccount = "priv-lockout"

// refusedOrPaused passes an elevation stalled by a refused login or by its breaker.
func refusedOrPaused(g Gomega, el *pamv1.PamElevation) {
	stalled := findCondition(el.Status.Conditions, pamv1.ConditionStalled)
	g.Expect(stalled).NotTo(BeNil())
	g.Expect(stalled.Reason).To(BeElementOf(pamv1.ReasonUnauthorized, pamv1.ReasonAuthBackoff))
}

// waitLoginBackoff waits until the server's status records the refusal of account.
func waitLoginBackoff(t *testing.T, ns string, account string) *pamv1.LoginBackoff {
	t.Helper()
	server := &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"}}
	waitFor(t, server, func(g Gomega, s *pamv1.PamServer) {
		g.Expect(s.Status.LoginBackoff).NotTo(BeNil())
		g.Expect(s.Status.LoginBackoff.Account).To(Equal(account))
		expectCondition(g, s.Status.Conditions, pamv1.ConditionReady, metav1.ConditionFalse, pamv1.ReasonAuthBackoff)
		expectCondition(g, s.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, pamv1.ReasonAuthBackoff)
	})
	return server.Status.LoginBackoff
}

// refusedLogons returns the times of the calls the emulator refused for a wrong password.
func refusedLogons(pam *emulator.Server) []time.Time {
	var at []time.Time
	for _, c := range pam.Calls() {
		if c.Status == 401 {
			at = append(at, c.Time)
		}
	}
	return at
}

// expectBackoffBetween fails unless consecutive refused logons are at least a backoff apart.
func expectBackoffBetween(g Gomega, at []time.Time) {
	for i := 1; i < len(at); i++ {
		// The emulator stamps an answer; the breaker times its refusal a moment later.
		g.Expect(at[i].Sub(at[i-1])).To(BeNumerically(">=", authFailureBackoff-200*time.Millisecond),
			"refused logons %d and %d came %s apart", i, i+1, at[i].Sub(at[i-1]))
	}
}

// TestWrongPasswordIsTriedOncePerBackoff: 20 elevations on two servers that share one account
// and a wrong basic password cost PAM (and Active Directory) one refused logon, then one try
// per backoff window; a metadata-only change of the Secret does not reset it, a manager that
// starts afresh adds none, and the right password in the Secret heals every elevation at once.
func TestWrongPasswordIsTriedOncePerBackoff(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	own := emulator.New(emulator.Options{Users: map[string]string{lockoutAccount: "right-password"}})
	srv := httptest.NewTLSServer(own)
	t.Cleanup(srv.Close)
	var namespaces []string
	var secrets []*corev1.Secret
	var els []*pamv1.PamElevation
	for range 2 {
		ns := newNamespace(t)
		secret := basicSecret(ns, "pam-credentials", lockoutAccount, "wrong-password")
		create(t, secret)
		spec := basicServerSpec("pam-credentials")
		spec.URL, spec.CABundle = srv.URL, certificatePEM(srv)
		create(t, &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"}, Spec: spec})
		for i := range 10 {
			id := own.AddRequest(emulator.Request{Owner: lockoutAccount, RoleID: randomGUID(), RequestedTTL: time.Hour}).ID
			el := elevation(ns, fmt.Sprintf("el-%d", i), id)
			create(t, el)
			els = append(els, el)
		}
		namespaces, secrets = append(namespaces, ns), append(secrets, secret)
	}
	for _, el := range els {
		waitFor(t, el, refusedOrPaused)
	}
	recorded := waitLoginBackoff(t, namespaces[0], lockoutAccount)
	g.Expect(recorded.Message).NotTo(ContainSubstring("wrong-password"))
	waitLoginBackoff(t, namespaces[1], lockoutAccount) // shared: the other server's status says so too
	waitFor(t, els[0], func(g Gomega, el *pamv1.PamElevation) {
		expectCondition(g, el.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, pamv1.ReasonAuthBackoff)
		g.Expect(conditionMessage(el, pamv1.ConditionStalled)).To(ContainSubstring("paused until"))
	})

	// A metadata-only change is not new credentials.
	patch := client.MergeFrom(secrets[0].DeepCopy())
	secrets[0].Labels = map[string]string{"touched": "yes"}
	g.Expect(k8sClient.Patch(ctx, secrets[0], patch)).To(Succeed())

	// A manager that starts afresh — nothing in memory — learns the refusal from the status
	// and sends nothing.
	fresh := &credentials.Connector{Client: managerClient, LiveReader: k8sClient, Writer: k8sClient,
		OperatorNamespace: clusterResourceNamespace, ClusterResourceNamespace: clusterResourceNamespace,
		AuthFailureBackoff: authFailureBackoff}
	server := &pamv1.PamServer{}
	g.Expect(managerClient.Get(ctx, client.ObjectKey{Namespace: namespaces[1], Name: "pam"}, server)).To(Succeed())
	before := len(refusedLogons(own))
	pc, err := fresh.Connect(ctx, server)
	g.Expect(err).NotTo(HaveOccurred())
	_, err = pc.Get(ctx, els[10].Spec.RequestID)
	g.Expect(err).To(MatchError(ContainSubstring("paused until")))
	g.Expect(refusedLogons(own)).To(HaveLen(before), "a manager started afresh sent the refused credentials")

	// One try per backoff window, whatever the 20 elevations and the metadata change do.
	g.Eventually(func() int { return len(refusedLogons(own)) }).WithTimeout(3 * authFailureBackoff).Should(BeNumerically(">=", 2))
	expectBackoffBetween(g, refusedLogons(own))

	// The right password heals every elevation, with no refused logon more.
	for _, secret := range secrets {
		patch := client.MergeFrom(secret.DeepCopy())
		secret.Data = map[string][]byte{"username": []byte(lockoutAccount), "password": []byte("right-password")}
		g.Expect(k8sClient.Patch(ctx, secret, patch)).To(Succeed())
	}
	fixed := time.Now()
	refusedBefore := len(refusedLogons(own))
	for _, el := range els {
		waitActive(t, el)
	}
	t.Logf("every elevation Active %s after the Secrets were fixed", time.Since(fixed).Round(time.Millisecond))
	g.Expect(time.Since(fixed)).To(BeNumerically("<", 30*time.Second))
	g.Expect(len(refusedLogons(own))).To(BeNumerically("<=", refusedBefore+1), "a try already on its way may still be refused")
	for _, ns := range namespaces {
		server := &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"}}
		waitFor(t, server, func(g Gomega, s *pamv1.PamServer) {
			g.Expect(s.Status.LoginBackoff).To(BeNil())
			expectCondition(g, s.Status.Conditions, pamv1.ConditionReady, metav1.ConditionTrue, pamv1.ReasonConfigured)
		})
	}
	for _, el := range els {
		deleteObj(t, el)
	}
	for _, el := range els {
		waitGone(t, el)
	}
}

// TestRefusedWindowsLoginIsTriedOncePerBackoff: the same for NTLM, counted by the NTLM
// verifier, and Kerberos, counted by the KDC's log.
func TestRefusedWindowsLoginIsTriedOncePerBackoff(t *testing.T) {
	t.Run("ntlm", func(t *testing.T) {
		g := NewWithT(t)
		own, url, _, verifier := ntlmPAMVerifier(t, false)
		ns := newNamespace(t)
		create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam-credentials"},
			StringData: map[string]string{"username": `PRIV\jen`, "password": "wrong-password"}})
		create(t, &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"}, Spec: pamv1.PamServerSpec{
			URL: url, Timeout: &metav1.Duration{Duration: 5 * time.Second},
			Auth: &pamv1.PamServerAuth{NTLM: &pamv1.NTLMAuth{SecretRef: pamv1.SecretReference{Name: "pam-credentials"}}}}})
		var els []*pamv1.PamElevation
		for i := range 20 {
			id := own.AddRequest(emulator.Request{Owner: "jen", RoleID: randomGUID(), RequestedTTL: time.Hour}).ID
			el := elevation(ns, fmt.Sprintf("el-%d", i), id, func(el *pamv1.PamElevation) { el.Spec.DeletionPolicy = pamv1.DeletionPolicyOrphan })
			create(t, el)
			els = append(els, el)
		}
		for _, el := range els {
			waitFor(t, el, refusedOrPaused)
		}
		waitLoginBackoff(t, ns, `priv\jen`)
		g.Expect(verifier.Stats().Refused).To(BeEquivalentTo(1), "20 elevations, one refused logon")
		g.Eventually(func() int64 { return verifier.Stats().Refused }).WithTimeout(3 * authFailureBackoff).Should(BeEquivalentTo(2))
		releaseAll(t, els)
	})
	t.Run("kerberos", func(t *testing.T) {
		g := NewWithT(t)
		realm, own, url := kerberosPAM(t)
		ns := newNamespace(t)
		kerberosServer(t, ns, "pam", url, map[string][]byte{"username": []byte("jen"), "password": []byte("wrong-password")},
			func(k *pamv1.KerberosAuth) { k.Realm, k.KDCs = realm.Realm, []string{realm.Addr} })
		var els []*pamv1.PamElevation
		for i := range 20 {
			id := own.AddRequest(emulator.Request{Owner: "jen@" + realm.Realm, RoleID: randomGUID(), RequestedTTL: time.Hour}).ID
			el := elevation(ns, fmt.Sprintf("el-%d", i), id, func(el *pamv1.PamElevation) { el.Spec.DeletionPolicy = pamv1.DeletionPolicyOrphan })
			create(t, el)
			els = append(els, el)
		}
		for _, el := range els {
			waitFor(t, el, refusedOrPaused)
		}
		waitLoginBackoff(t, ns, "jen@"+realm.Realm)
		refused := func() int {
			n := 0
			for _, req := range realm.Requests() {
				if req.Status == "PREAUTH_FAILED" {
					n++
				}
			}
			return n
		}
		g.Expect(refused()).To(Equal(1), "20 elevations, one refused logon")
		g.Eventually(refused).WithTimeout(3 * authFailureBackoff).Should(Equal(2))
		releaseAll(t, els)
	})
}

// releaseAll deletes elevations set to Orphan and waits until they are gone: left stalled, they
// would retry for the rest of the suite.
func releaseAll(t *testing.T, els []*pamv1.PamElevation) {
	t.Helper()
	for _, el := range els {
		deleteObj(t, el)
	}
	for _, el := range els {
		waitGone(t, el)
	}
}
