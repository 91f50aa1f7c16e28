package credentials_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/credentials"
)

// k8sClient talks to the real API server of the suite (envtest on the binaries `make test`
// builds into ./bin).
var k8sClient client.Client

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: run the tests with 'make test', which builds the control plane into ./bin")
		return 1
	}
	testEnv := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := testEnv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		return 1
	}
	defer func() { _ = testEnv.Stop() }()
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(pamv1.AddToScheme(scheme))
	if k8sClient, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		return 1
	}
	return m.Run()
}

// newNamespace creates a namespace of its own for one test.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "pam-test-"}}
	if err := k8sClient.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	return ns.Name
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8sClient.Create(context.Background(), obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

// rotatePassword changes the Secret's password as kubectl apply does it: with a patch.
func rotatePassword(t *testing.T, secret *corev1.Secret, password string) {
	t.Helper()
	patch := client.MergeFrom(secret.DeepCopy())
	secret.StringData = map[string]string{"password": password}
	if err := k8sClient.Patch(context.Background(), secret, patch); err != nil {
		t.Fatalf("rotating the password of Secret %s: %v", secret.Name, err)
	}
}

// connectorOfOwnServer creates a namespace with a PamServer using basic credentials whose
// password is "first-password", and returns a Connector that reads credentials through live
// and keeps its escrow in that namespace, the server, and its Secret, to rotate it. No call
// reaches the server's URL: these tests build clients, they do not use them.
func connectorOfOwnServer(t *testing.T, live client.Reader) (*credentials.Connector, *pamv1.PamServer, *corev1.Secret) {
	t.Helper()
	ns := newNamespace(t)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam-credentials"},
		StringData: map[string]string{"username": fmt.Sprintf("own-%x", b), "password": "first-password"}}
	create(t, secret)
	server := &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"}, Spec: pamv1.PamServerSpec{
		URL: "https://pam.invalid", Timeout: &metav1.Duration{Duration: 2 * time.Second},
		Auth: &pamv1.PamServerAuth{Basic: &pamv1.BasicAuth{SecretRef: pamv1.SecretReference{Name: secret.Name}}},
	}}
	create(t, server)
	return &credentials.Connector{Client: k8sClient, LiveReader: live, Writer: k8sClient,
		OperatorNamespace: ns, ClusterResourceNamespace: "pam-system"}, server, secret
}

// connectorKeepingEscrow is connectorOfOwnServer, reading live from the API server, with the
// server's escrow kept; it returns the escrow too.
func connectorKeepingEscrow(t *testing.T) (*credentials.Connector, *pamv1.PamServer, *corev1.Secret, *corev1.Secret) {
	t.Helper()
	ctx := context.Background()
	c, server, secret := connectorOfOwnServer(t, k8sClient)
	escrow := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: c.OperatorNamespace, Name: credentials.EscrowName(server)}}
	_, creds, err := c.Check(ctx, server)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.KeepEscrow(ctx, server, creds); err != nil {
		t.Fatal(err)
	}
	return c, server, secret, escrow
}

// heldSecretRead holds the answer of the first Secret read until release is closed, once it
// has signalled read.
type heldSecretRead struct {
	client.Reader
	once          sync.Once
	read, release chan struct{}
}

func (r *heldSecretRead) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	err := r.Reader.Get(ctx, key, obj, opts...)
	if _, ok := obj.(*corev1.Secret); ok {
		first := false
		r.once.Do(func() { first = true })
		if first {
			close(r.read)
			<-r.release
		}
	}
	return err
}

// secretReads counts the Secret reads that go through it.
type secretReads struct {
	client.Reader
	mu    sync.Mutex
	count int
}

func (r *secretReads) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*corev1.Secret); ok {
		r.mu.Lock()
		r.count++
		r.mu.Unlock()
	}
	return r.Reader.Get(ctx, key, obj, opts...)
}

func (r *secretReads) n() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count
}
