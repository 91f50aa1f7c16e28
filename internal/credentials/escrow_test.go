package credentials_test

import (
	"context"
	"slices"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/credentials"
)

// escrowCanary is the password of the servers these tests escrow: it must appear in no message.
const escrowCanary = "escrow-canary-pass-0d5b"

// keptServer creates a namespace with a Secret "creds" holding data and an unrelated key, and a
// PamServer "pam" with spec, and returns a Connector keeping its escrow in that namespace, the
// server, the Secret, and the escrow as written.
func keptServer(t *testing.T, spec pamv1.PamServerSpec, data map[string][]byte) (*credentials.Connector, *pamv1.PamServer, *corev1.Secret, *corev1.Secret) {
	t.Helper()
	ctx := context.Background()
	ns := newNamespace(t)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "creds"}, Data: map[string][]byte{
		"unrelated-token": []byte("unrelated-canary-44c1")}}
	for k, v := range data {
		secret.Data[k] = v
	}
	create(t, secret)
	server := &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"}, Spec: spec}
	create(t, server)
	c := &credentials.Connector{Client: k8sClient, LiveReader: k8sClient, Writer: k8sClient,
		OperatorNamespace: ns, ClusterResourceNamespace: "pam-system"}
	_, creds, _ := c.Check(ctx, server) // a client that cannot be built still has credentials to keep
	if creds == nil {
		t.Fatal("Check read no credentials")
	}
	if err := c.KeepEscrow(ctx, server, creds); err != nil {
		t.Fatal(err)
	}
	escrow := &corev1.Secret{}
	if err := k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: credentials.EscrowName(server)}, escrow); err != nil {
		t.Fatalf("the escrow was not written: %v", err)
	}
	return c, server, secret, escrow
}

func basicSpec() pamv1.PamServerSpec {
	return pamv1.PamServerSpec{URL: "https://pam.example", Timeout: &metav1.Duration{Duration: 2 * time.Second},
		Auth: &pamv1.PamServerAuth{Basic: &pamv1.BasicAuth{SecretRef: pamv1.SecretReference{Name: "creds"}}}}
}

func kerberosSpec() pamv1.PamServerSpec {
	return pamv1.PamServerSpec{URL: "https://pam.example", Timeout: &metav1.Duration{Duration: 2 * time.Second},
		Auth: &pamv1.PamServerAuth{Kerberos: &pamv1.KerberosAuth{SecretRef: pamv1.SecretReference{Name: "creds"},
			Realm: "CORP.EXAMPLE", KDCs: []string{"kdc1.corp.example"}}}}
}

func passwordData() map[string][]byte {
	return map[string][]byte{"username": []byte("escrow-user"), "password": []byte(escrowCanary)}
}

// update writes the server's spec as change leaves it.
func update(t *testing.T, server *pamv1.PamServer, change func(*pamv1.PamServerSpec)) {
	t.Helper()
	change(&server.Spec)
	if err := k8sClient.Update(context.Background(), server); err != nil {
		t.Fatalf("updating the server: %v", err)
	}
}

// TestEscrowServesOnlyTheServerItWasKeptFor: once the Secret is gone, the escrow serves the
// server as long as nothing that says where the credentials go, or whom to trust, has changed
// — and the server is the same object. Any such change leaves the original problem reported,
// with a note that the copy is not used; changes that send nothing elsewhere keep it usable.
func TestEscrowServesOnlyTheServerItWasKeptFor(t *testing.T) {
	cases := []struct {
		name string
		spec func() pamv1.PamServerSpec
		// keepSecret leaves the Secret in place: the change itself makes it unreadable.
		keepSecret bool
		change     func(t *testing.T, server *pamv1.PamServer) *pamv1.PamServer
		used       bool
	}{
		{name: "nothing changed", spec: basicSpec, used: true},
		{name: "timeout changed", spec: basicSpec, used: true, change: spec(func(s *pamv1.PamServerSpec) {
			s.Timeout = &metav1.Duration{Duration: 7 * time.Second}
		})},
		{name: "rate limit changed", spec: basicSpec, used: true, change: spec(func(s *pamv1.PamServerSpec) {
			s.RateLimit = &pamv1.RateLimit{QPS: 3}
		})},
		{name: "version changed", spec: basicSpec, used: true, change: spec(func(s *pamv1.PamServerSpec) { s.Version = "2" })},
		{name: "url changed", spec: basicSpec, change: spec(func(s *pamv1.PamServerSpec) { s.URL = "https://attacker.example" })},
		{name: "url path changed", spec: basicSpec, change: spec(func(s *pamv1.PamServerSpec) { s.URL += "/other" })},
		{name: "caBundle changed", spec: basicSpec, change: spec(func(s *pamv1.PamServerSpec) { s.CABundle = "not the CA it trusted" })},
		{name: "secretRef pointed at a missing Secret", spec: basicSpec, keepSecret: true, change: spec(func(s *pamv1.PamServerSpec) {
			s.Auth.Basic.SecretRef.Name = "missing"
		})},
		{name: "auth method changed", spec: basicSpec, change: spec(func(s *pamv1.PamServerSpec) {
			s.Auth = &pamv1.PamServerAuth{NTLM: &pamv1.NTLMAuth{SecretRef: pamv1.SecretReference{Name: "creds"}}}
		})},
		{name: "kerberos: nothing changed", spec: kerberosSpec, used: true},
		{name: "kerberos: realm changed", spec: kerberosSpec, change: spec(func(s *pamv1.PamServerSpec) {
			s.Auth.Kerberos.Realm = "ATTACKER.EXAMPLE"
		})},
		{name: "kerberos: KDCs changed", spec: kerberosSpec, change: spec(func(s *pamv1.PamServerSpec) {
			s.Auth.Kerberos.KDCs = append(s.Auth.Kerberos.KDCs, "kdc.attacker.example")
		})},
		{name: "kerberos: SPN set", spec: kerberosSpec, change: spec(func(s *pamv1.PamServerSpec) {
			s.Auth.Kerberos.ServicePrincipalName = "HTTP/attacker.example"
		})},
		{name: "kerberos: krb5 ConfigMap instead of KDCs", spec: kerberosSpec, change: spec(func(s *pamv1.PamServerSpec) {
			s.Auth.Kerberos.KDCs = nil
			s.Auth.Kerberos.Krb5ConfigMapRef = &pamv1.ConfigMapReference{Name: "krb5"}
		})},
		{name: "server re-created under the same name", spec: basicSpec, change: func(t *testing.T, server *pamv1.PamServer) *pamv1.PamServer {
			ctx := context.Background()
			if err := k8sClient.Delete(ctx, server); err != nil {
				t.Fatal(err)
			}
			again := &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: server.Namespace, Name: server.Name}, Spec: server.Spec}
			create(t, again)
			if again.UID == server.UID {
				t.Fatal("the re-created server has the same UID")
			}
			return again
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			ctx := context.Background()
			c, server, secret, escrow := keptServer(t, tc.spec(), passwordData())
			if !tc.keepSecret {
				g.Expect(k8sClient.Delete(ctx, secret)).To(Succeed())
			}
			if tc.change != nil {
				server = tc.change(t, server)
			}

			pc, err := c.Connect(ctx, server)
			if tc.used {
				g.Expect(err).NotTo(HaveOccurred())
				note, fromEscrow := credentials.FromEscrow(pc)
				g.Expect(fromEscrow).To(BeTrue(), "the client comes from the escrow")
				g.Expect(note).To(ContainSubstring(`Secret "creds" not found`))
				g.Expect(note).To(ContainSubstring(escrow.Name))
				g.Expect(note).NotTo(ContainSubstring(escrowCanary))
				return
			}
			g.Expect(pc).To(BeNil())
			ce, ok := credentials.AsError(err)
			g.Expect(ok).To(BeTrue(), "a configuration error, got %v", err)
			g.Expect(ce.Reason).To(Equal(pamv1.ReasonSecretNotFound), ce.Message)
			g.Expect(ce.Message).To(ContainSubstring("not found"))
			g.Expect(ce.Message).To(ContainSubstring("belongs to another configuration of the server"))
			g.Expect(ce.Message).To(ContainSubstring("not used"))
			g.Expect(ce.Message).NotTo(ContainSubstring(escrowCanary))
		})
	}
}

// spec turns a change of the spec into a change of the server.
func spec(change func(*pamv1.PamServerSpec)) func(*testing.T, *pamv1.PamServer) *pamv1.PamServer {
	return func(t *testing.T, server *pamv1.PamServer) *pamv1.PamServer {
		update(t, server, change)
		return server
	}
}

// TestEscrowHoldsOnlyTheKeysItsMethodReads: whatever else the Secret holds stays out of the
// copy, and the copy's annotations bind it without holding anything secret.
func TestEscrowHoldsOnlyTheKeysItsMethodReads(t *testing.T) {
	ntlm := func() pamv1.PamServerSpec {
		s := basicSpec()
		s.Auth = &pamv1.PamServerAuth{NTLM: &pamv1.NTLMAuth{SecretRef: pamv1.SecretReference{Name: "creds"}}}
		return s
	}
	keytab := map[string][]byte{"username": []byte("escrow-user"), "keytab": []byte(escrowCanary)}
	cases := []struct {
		name string
		spec func() pamv1.PamServerSpec
		data map[string][]byte
		want []string
	}{
		{"basic", basicSpec, passwordData(), []string{"secret.password", "secret.username"}},
		{"ntlm", ntlm, map[string][]byte{"username": []byte("escrow-user"), "password": []byte(escrowCanary), "domain": []byte("PRIV")},
			[]string{"secret.domain", "secret.password", "secret.username"}},
		{"kerberos with a password", kerberosSpec, passwordData(), []string{"secret.password", "secret.username"}},
		{"kerberos with a keytab", kerberosSpec, keytab, []string{"secret.keytab", "secret.username"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			_, server, _, escrow := keptServer(t, tc.spec(), tc.data)
			keys := make([]string, 0, len(escrow.Data))
			for k := range escrow.Data {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			g.Expect(keys).To(Equal(tc.want))
			g.Expect(escrow.Annotations).To(HaveKeyWithValue("pam.mim.dev/server-uid", string(server.UID)))
			g.Expect(escrow.Annotations).To(HaveKeyWithValue("pam.mim.dev/binding", MatchRegexp(`^[0-9a-f]{64}$`)))
			for k, v := range escrow.Annotations {
				g.Expect(v).NotTo(ContainSubstring(escrowCanary), "annotation %s", k)
			}
		})
	}
}

// TestEscrowFollowsTheServerFromTheLiveSecretOnly: a server in use that is pointed elsewhere
// while its Secret can be read gets its escrow rewritten from that Secret, bound to where it now
// points; once the Secret is gone, a further change rewrites nothing from the old copy.
func TestEscrowFollowsTheServerFromTheLiveSecretOnly(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	c, server, secret, escrow := keptServer(t, basicSpec(), passwordData())
	first := escrow.Annotations["pam.mim.dev/binding"]

	update(t, server, func(s *pamv1.PamServerSpec) { s.URL = "https://pam2.example" })
	_, err := c.Connect(ctx, server)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(escrow), escrow)).To(Succeed())
	second := escrow.Annotations["pam.mim.dev/binding"]
	g.Expect(second).NotTo(Equal(first), "the escrow follows the server")

	g.Expect(k8sClient.Delete(ctx, secret)).To(Succeed())
	pc, err := c.Connect(ctx, server)
	g.Expect(err).NotTo(HaveOccurred(), "the rewritten escrow serves the server as it now is")
	_, fromEscrow := credentials.FromEscrow(pc)
	g.Expect(fromEscrow).To(BeTrue())

	written := escrow.ResourceVersion
	update(t, server, func(s *pamv1.PamServerSpec) { s.URL = "https://pam3.example" })
	_, err = c.Connect(ctx, server)
	g.Expect(err).To(HaveOccurred())
	_, creds, _ := c.Check(ctx, server)
	g.Expect(c.KeepEscrow(ctx, server, creds)).To(Succeed())
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(escrow), escrow)).To(Succeed())
	g.Expect(escrow.ResourceVersion).To(Equal(written), "nothing is written from the old copy")
	g.Expect(escrow.Annotations["pam.mim.dev/binding"]).To(Equal(second))
}

// TestCollectEscrows: the escrows nothing needs go, by their label in the operator namespace;
// other Secrets there stay; and a server whose escrow was collected gets it written again.
func TestCollectEscrows(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	c, server, _, escrow := keptServer(t, basicSpec(), passwordData())
	ns := c.OperatorNamespace
	labels := map[string]string{"app.kubernetes.io/managed-by": "pam-operator", "app.kubernetes.io/component": "credential-escrow"}
	gone := &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: "gone", Name: "pam"}}
	leftOver := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: credentials.EscrowName(gone), Labels: labels,
		Annotations: map[string]string{"pam.mim.dev/server": pamv1.KeyOf(gone), "pam.mim.dev/server-uid": "0b5c3c1e-0000-4000-8000-000000000000"}},
		Data: map[string][]byte{"secret.password": []byte(escrowCanary)}}
	create(t, leftOver)
	bystander := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "not-an-escrow"},
		Data: map[string][]byte{"token": []byte("bystander")}}
	create(t, bystander)

	var asked []string
	needed := func(want string) func(context.Context, string, types.UID) (bool, error) {
		return func(_ context.Context, key string, uid types.UID) (bool, error) {
			asked = append(asked, key+" "+string(uid))
			return key == want && uid == server.UID, nil
		}
	}
	g.Expect(c.CollectEscrows(ctx, needed(pamv1.KeyOf(server)))).To(Succeed())
	g.Expect(asked).To(ConsistOf(pamv1.KeyOf(server)+" "+string(server.UID), pamv1.KeyOf(gone)+" 0b5c3c1e-0000-4000-8000-000000000000"))
	g.Expect(exists(t, leftOver)).To(BeFalse(), "the escrow of a server that is gone was collected")
	g.Expect(exists(t, escrow)).To(BeTrue(), "the escrow still needed stays")
	g.Expect(exists(t, bystander)).To(BeTrue(), "a Secret without the escrow label is never touched")

	g.Expect(c.CollectEscrows(ctx, needed(""))).To(Succeed())
	g.Expect(exists(t, escrow)).To(BeFalse(), "an escrow nothing needs was collected")
	_, creds, err := c.Check(ctx, server)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(c.KeepEscrow(ctx, server, creds)).To(Succeed())
	g.Expect(exists(t, escrow)).To(BeTrue(), "needed again, it is written again")
}

func exists(t *testing.T, obj client.Object) bool {
	t.Helper()
	err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(obj), &corev1.Secret{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}
