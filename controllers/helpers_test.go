package controllers_test

import (
	"context"
	"encoding/pem"
	"net/http/httptest"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/controllers"
	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/internal/credentials"
)

const (
	waitTimeout = 20 * time.Second
	pollEvery   = 20 * time.Millisecond
)

func basicSecret(namespace, name, username, password string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		StringData: map[string]string{"username": username, "password": password},
	}
}

// certificatePEM is the certificate srv serves, as a PamServer's caBundle.
func certificatePEM(srv *httptest.Server) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
}

func basicServerSpec(secretName string) pamv1.PamServerSpec {
	return pamv1.PamServerSpec{
		URL:      pamURL,
		CABundle: pamCABundle,
		Version:  "1",
		Timeout:  &metav1.Duration{Duration: 2 * time.Second},
		Auth:     &pamv1.PamServerAuth{Basic: &pamv1.BasicAuth{SecretRef: pamv1.SecretReference{Name: secretName}}},
	}
}

// withServer creates a Secret with jen's credentials and a PamServer named "pam" using it.
func withServer(t *testing.T, namespace string) {
	t.Helper()
	withServerAs(t, namespace, pamUser, pamPassword)
}

// withServerAs is withServer with other credentials; it returns the Secret, to rotate it.
func withServerAs(t *testing.T, namespace, username, password string) *corev1.Secret {
	t.Helper()
	secret := basicSecret(namespace, "pam-credentials", username, password)
	create(t, secret)
	create(t, &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "pam"}, Spec: basicServerSpec("pam-credentials")})
	return secret
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

// handReconciler is a PamElevation reconciler of its own that a test drives by hand, beside the
// suite's manager: it reads elevations through c and credentials through live.
func handReconciler(t *testing.T, c client.Client, live client.Reader, clk clock.PassiveClock) *controllers.PamElevationReconciler {
	t.Helper()
	r := &controllers.PamElevationReconciler{
		Client:    c,
		APIReader: k8sClient,
		Connector: &credentials.Connector{Client: k8sClient, LiveReader: live, Writer: k8sClient,
			OperatorNamespace: clusterResourceNamespace, ClusterResourceNamespace: clusterResourceNamespace},
		Recorder: events.NewFakeRecorder(10),
		Clock:    clk,
	}
	if err := r.SetDefaults(context.Background(), managerCache); err != nil {
		t.Fatal(err)
	}
	return r
}

// withOwnEmulator creates a namespace whose PamServer "pam" calls an emulator of its own, so
// that the calls it records are this test's only; adjust may change the server's spec.
func withOwnEmulator(t *testing.T, adjust func(*pamv1.PamServerSpec)) (string, *emulator.Server) {
	t.Helper()
	own := emulator.New(emulator.Options{Users: map[string]string{pamUser: pamPassword}})
	srv := httptest.NewTLSServer(own)
	t.Cleanup(srv.Close)
	ns := newNamespace(t)
	create(t, basicSecret(ns, "pam-credentials", pamUser, pamPassword))
	spec := basicServerSpec("pam-credentials")
	spec.URL, spec.CABundle = srv.URL, certificatePEM(srv)
	if adjust != nil {
		adjust(&spec)
	}
	create(t, &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"}, Spec: spec})
	return ns, own
}

// seedRequest creates an Active request owned by owner in the emulator, as if the owner had
// asked PAM for elevation.
func seedRequest(owner string, ttl time.Duration) string {
	return pamServer.AddRequest(emulator.Request{Owner: owner, RoleID: randomGUID(), RequestedTTL: ttl}).ID
}

func elevation(namespace, name, requestID string, mutate ...func(*pamv1.PamElevation)) *pamv1.PamElevation {
	el := &pamv1.PamElevation{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: pamv1.PamElevationSpec{
			RequestID: requestID,
			ServerRef: pamv1.ServerReference{Name: "pam"},
		},
	}
	for _, m := range mutate {
		m(el)
	}
	return el
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8sClient.Create(context.Background(), obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

// waitFor polls the object until check passes.
func waitFor[T client.Object](t *testing.T, obj T, check func(g Gomega, obj T)) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(obj), obj)).To(Succeed())
		check(g, obj)
	}).WithTimeout(waitTimeout).WithPolling(pollEvery).Should(Succeed())
}

// expectCondition asserts a condition of the given type, status and reason.
func expectCondition(g Gomega, conds []metav1.Condition, condType string, status metav1.ConditionStatus, reason string) {
	c := meta.FindStatusCondition(conds, condType)
	g.Expect(c).NotTo(BeNil(), "condition %s missing from %v", condType, conds)
	g.Expect(c.Status).To(Equal(status), "condition %s: %s", condType, c.Message)
	g.Expect(c.Reason).To(Equal(reason), "condition %s: %s", condType, c.Message)
}

func waitGone(t *testing.T, obj client.Object) {
	t.Helper()
	NewWithT(t).Eventually(func() bool {
		err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(obj), obj)
		return apierrors.IsNotFound(err)
	}).WithTimeout(waitTimeout).WithPolling(pollEvery).Should(BeTrue(), "%s was not deleted", obj.GetName())
}

func deleteObj(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8sClient.Delete(context.Background(), obj); err != nil {
		t.Fatalf("deleting %s: %v", obj.GetName(), err)
	}
}

// trackActive creates a namespace with a PamServer, a PAM request of jen's and a PamElevation
// tracking it, and waits until the elevation is Active. It returns the elevation and request id.
func trackActive(t *testing.T, name string) (*pamv1.PamElevation, string) {
	t.Helper()
	ns := newNamespace(t)
	withServer(t, ns)
	id := seedRequest(pamUser, time.Hour)
	el := elevation(ns, name, id)
	create(t, el)
	waitActive(t, el)
	return el, id
}

// waitActive waits until the elevation has its finalizer and is Ready with the request Active.
func waitActive(t *testing.T, el *pamv1.PamElevation) {
	t.Helper()
	waitFor(t, el, func(g Gomega, el *pamv1.PamElevation) {
		g.Expect(el.Finalizers).To(ContainElement(pamv1.ElevationFinalizer))
		g.Expect(el.Status.RequestStatus).To(Equal("Active"))
		expectCondition(g, el.Status.Conditions, pamv1.ConditionReady, metav1.ConditionTrue, pamv1.ReasonActive)
	})
}

// waitEvent waits for an Event about obj with the reason and a note containing text. Events are
// sent asynchronously, so they are polled for.
func waitEvent(t *testing.T, obj client.Object, reason, text string) {
	t.Helper()
	NewWithT(t).Eventually(func() []string { return eventNotes(t, obj, reason) }).
		WithTimeout(waitTimeout).WithPolling(100*time.Millisecond).
		Should(ContainElement(ContainSubstring(text)), "no %s Event about %s", reason, obj.GetName())
}

// eventNotes returns the notes of the Events about an object with a reason.
func eventNotes(t *testing.T, obj client.Object, reason string) []string {
	t.Helper()
	var list eventsv1.EventList
	if err := k8sClient.List(context.Background(), &list, client.InNamespace(obj.GetNamespace())); err != nil {
		t.Fatalf("listing events: %v", err)
	}
	var notes []string
	for _, e := range list.Items {
		if e.Regarding.Name == obj.GetName() && e.Reason == reason {
			notes = append(notes, e.Note)
		}
	}
	return notes
}

// closeCalls returns the close calls of a request the emulator received, in order.
func closeCalls(requestID string) []emulator.Call {
	var out []emulator.Call
	for _, c := range pamServer.Calls() {
		if c.Endpoint == emulator.EndpointCloseRequest && c.RequestID == requestID {
			out = append(out, c)
		}
	}
	return out
}
