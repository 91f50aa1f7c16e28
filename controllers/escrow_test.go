package controllers_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf16"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/controllers"
	"github.com/pam-operator/pam-operator/emulator"
)

// The credentials of the servers whose escrow these tests try to divert: distinctive, so that
// finding them anywhere is no accident.
const (
	escrowUser     = "escrow-canary-user-58e0"
	escrowPassword = "escrow-canary-pass-a3c9"
)

// trap is an attacker's endpoint on 127.0.0.1: it asks for basic credentials and keeps every
// request it receives, as received.
type trap struct {
	url, caBundle string
	mu            sync.Mutex
	requests      [][]byte
}

func newTrap(t *testing.T) *trap {
	t.Helper()
	tr := &trap{}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dump, _ := httputil.DumpRequest(r, true)
		tr.mu.Lock()
		tr.requests = append(tr.requests, dump)
		tr.mu.Unlock()
		w.Header().Set("WWW-Authenticate", `Basic realm="pam"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(srv.Close)
	tr.url, tr.caBundle = srv.URL, certificatePEM(srv)
	return tr
}

// leaks returns the requests that carry any of the canaries: as text, in the UTF-16 NTLM
// messages use, as the base64 of user:password basic sends, or inside the decoded token of any
// Authorization header.
func (tr *trap) leaks(user, password string) []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	canaries := [][]byte{[]byte(password), utf16LE(password), []byte(base64.StdEncoding.EncodeToString([]byte(user + ":" + password)))}
	if len(user) > 6 {
		canaries = append(canaries, []byte(user), utf16LE(user))
	}
	var found []string
	for _, dump := range tr.requests {
		texts := [][]byte{dump}
		for line := range strings.Lines(string(dump)) {
			if value, ok := strings.CutPrefix(line, "Authorization: "); ok {
				if _, token, ok := strings.Cut(strings.TrimSpace(value), " "); ok {
					decoded, _ := base64.StdEncoding.DecodeString(token)
					texts = append(texts, decoded)
				}
			}
		}
		for _, text := range texts {
			for _, c := range canaries {
				if bytes.Contains(text, c) {
					found = append(found, fmt.Sprintf("%q", dump))
				}
			}
		}
	}
	return found
}

func utf16LE(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = append(b, byte(u), byte(u>>8))
	}
	return b
}

// escrowed is a namespace whose PamServer "pam" is in use by an Active elevation, with its
// credentials in escrow.
type escrowed struct {
	ns             string
	secret         *corev1.Secret
	el             *pamv1.PamElevation
	escrow         *corev1.Secret
	user, password string
	// pam is the emulator the server calls; closes counts the successful closes of the
	// elevation's request there.
	pam    *emulator.Server
	closes func() int
}

// basicEscrowed is escrowed with basic credentials to an emulator of its own; the Secret holds
// an unrelated key too.
func basicEscrowed(t *testing.T) escrowed {
	t.Helper()
	own := emulator.New(emulator.Options{Users: map[string]string{escrowUser: escrowPassword}})
	srv := httptest.NewTLSServer(own)
	t.Cleanup(srv.Close)
	ns := newNamespace(t)
	secret := basicSecret(ns, "pam-credentials", escrowUser, escrowPassword)
	secret.StringData["unrelated-token"] = "unrelated-canary-2f71"
	spec := basicServerSpec("pam-credentials")
	spec.URL, spec.CABundle = srv.URL, certificatePEM(srv)
	id := own.AddRequest(emulator.Request{Owner: escrowUser, RoleID: randomGUID(), RequestedTTL: time.Hour}).ID
	return inUse(t, ns, secret, spec, id, escrowUser, escrowPassword, own)
}

// ntlmEscrowed is escrowed with NTLM credentials.
func ntlmEscrowed(t *testing.T) escrowed {
	t.Helper()
	own, url, _ := ntlmPAM(t, false)
	ns := newNamespace(t)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam-credentials"},
		StringData: map[string]string{"username": `PRIV\jen`, "password": ntlmCanary}}
	spec := pamv1.PamServerSpec{URL: url, Timeout: &metav1.Duration{Duration: 5 * time.Second},
		Auth: &pamv1.PamServerAuth{NTLM: &pamv1.NTLMAuth{SecretRef: pamv1.SecretReference{Name: "pam-credentials"}}}}
	id := own.AddRequest(emulator.Request{Owner: "jen", RoleID: randomGUID(), RequestedTTL: time.Hour}).ID
	return inUse(t, ns, secret, spec, id, `PRIV\jen`, ntlmCanary, own)
}

func inUse(t *testing.T, ns string, secret *corev1.Secret, spec pamv1.PamServerSpec, id, user, password string, own *emulator.Server) escrowed {
	t.Helper()
	create(t, secret)
	server := &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"}, Spec: spec}
	create(t, server)
	el := elevation(ns, "el", id)
	create(t, el)
	waitActive(t, el)
	waitFor(t, server, func(g Gomega, s *pamv1.PamServer) {
		g.Expect(s.Finalizers).To(ContainElement(controllers.InUseFinalizer))
	})
	return escrowed{ns: ns, secret: secret, el: el, escrow: escrowOf(t, pamv1.KeyOf(server)), user: user, password: password,
		pam: own, closes: func() int { _, successes := own.CloseCalls(id); return successes }}
}

// patchServer changes the server "pam" of ns.
func patchServer(t *testing.T, ns string, change func(*pamv1.PamServer)) *pamv1.PamServer {
	t.Helper()
	ctx := context.Background()
	server := &pamv1.PamServer{}
	if err := k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "pam"}, server); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(server.DeepCopy())
	change(server)
	if err := k8sClient.Patch(ctx, server, patch); err != nil {
		t.Fatalf("patching the server: %v", err)
	}
	return server
}

// TestEscrowIsNeverSentElsewhere: whoever may edit a PamServer cannot have the copy of its
// credentials sent to an endpoint of theirs by making the Secret unreadable and pointing the
// server there, in any of the ways that could be tried. The close then stalls on the original
// problem, and the endpoint sees no credential in any encoding.
func TestEscrowIsNeverSentElsewhere(t *testing.T) {
	cases := []struct {
		name  string
		setup func(*testing.T) escrowed
		// attack makes the Secret unreadable and points the server at the trap.
		attack func(t *testing.T, s escrowed, trap *trap)
		// note: the stall says that a kept copy is not used (one dropped with its server is
		// not there to mention).
		note bool
	}{
		{name: "Secret deleted, url changed", setup: basicEscrowed, note: true, attack: func(t *testing.T, s escrowed, trap *trap) {
			deleteObj(t, s.secret)
			patchServer(t, s.ns, func(p *pamv1.PamServer) { p.Spec.URL, p.Spec.CABundle = trap.url, trap.caBundle })
		}},
		{name: "secretRef pointed at a missing Secret, url changed", setup: basicEscrowed, note: true, attack: func(t *testing.T, s escrowed, trap *trap) {
			patchServer(t, s.ns, func(p *pamv1.PamServer) {
				p.Spec.URL, p.Spec.CABundle = trap.url, trap.caBundle
				p.Spec.Auth.Basic.SecretRef.Name = "missing"
			})
		}},
		{name: "NTLM turned into basic, url changed", setup: ntlmEscrowed, note: true, attack: func(t *testing.T, s escrowed, trap *trap) {
			deleteObj(t, s.secret)
			patchServer(t, s.ns, func(p *pamv1.PamServer) {
				p.Spec.URL, p.Spec.CABundle = trap.url, trap.caBundle
				p.Spec.Auth = &pamv1.PamServerAuth{Basic: &pamv1.BasicAuth{SecretRef: pamv1.SecretReference{Name: "pam-credentials"}}}
			})
		}},
		{name: "server deleted mid-way and re-created under its name", setup: basicEscrowed, attack: func(t *testing.T, s escrowed, trap *trap) {
			ctx := context.Background()
			deleteObj(t, s.secret)
			server := &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: "pam"}}
			g := NewWithT(t)
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(server), server)).To(Succeed())
			spec := server.Spec
			deleteObj(t, server)
			// Mid-way: its in-use finalizer removed by hand while an elevation still needs it.
			patchServer(t, s.ns, func(p *pamv1.PamServer) { p.Finalizers = nil })
			waitGone(t, server)
			waitGone(t, s.escrow) // dropped with its server
			spec.URL, spec.CABundle = trap.url, trap.caBundle
			create(t, &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: "pam"}, Spec: spec})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			s := tc.setup(t)
			t.Cleanup(func() { orphan(s.el) })
			attacker := newTrap(t)
			tc.attack(t, s, attacker)

			deleteObj(t, s.el)
			waitFor(t, s.el, func(g Gomega, el *pamv1.PamElevation) {
				g.Expect(findCondition(el.Status.Conditions, pamv1.ConditionStalled)).NotTo(BeNil())
			})
			// The close is retried on its backoff: none of the retries may reach the trap either.
			g.Consistently(func() []string { return attacker.leaks(s.user, s.password) }).
				WithTimeout(2*maxRetryDelay).WithPolling(100*time.Millisecond).Should(BeEmpty(), "the credentials reached the attacker")
			g.Expect(s.closes()).To(BeZero())
			g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(s.el), s.el)).To(Succeed())
			expectCondition(g, s.el.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, pamv1.ReasonSecretNotFound)
			if tc.note {
				msg := conditionMessage(s.el, pamv1.ConditionStalled)
				g.Expect(msg).To(ContainSubstring("belongs to another configuration of the server"))
				g.Expect(msg).To(HaveSuffix("is not used"))
			}
			assertNoSecretIn(t, s.ns, s.password)
		})
	}
}

// orphan lets an elevation a test leaves stalled go without a close.
func orphan(el *pamv1.PamElevation) {
	ctx := context.Background()
	current := &pamv1.PamElevation{}
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(el), current); err != nil {
		return
	}
	patch := client.MergeFrom(current.DeepCopy())
	current.Spec.DeletionPolicy = pamv1.DeletionPolicyOrphan
	_ = k8sClient.Patch(ctx, current, patch)
}
