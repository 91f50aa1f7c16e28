package controllers_test

import (
	"encoding/json"
	"testing"
	"unsafe"

	. "github.com/onsi/gomega"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/controllers"
)

// The cache keeps one copy of what elevations share, and none of what the controllers never read.
func TestStripForCacheSharesCommonStrings(t *testing.T) {
	g := NewWithT(t)
	decode := func(name string) *pamv1.PamElevation {
		raw := `{"metadata":{"name":"` + name + `","namespace":"team-a","finalizers":["pam.mim.dev/close"],
			"managedFields":[{"manager":"kubectl","operation":"Update"}],
			"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{}","team":"a"}},
			"spec":{"serverRef":{"name":"pam"},"requestID":"5ec10e61-cdd1-404e-a18e-740467d87dbf"},
			"status":{"requestStatus":"Active","conditions":[{"type":"Ready","status":"True","reason":"Active",
			"message":"The request is open in PAM","lastTransitionTime":"2026-11-29T10:00:00Z"}]}}`
		el := &pamv1.PamElevation{}
		g.Expect(json.Unmarshal([]byte(raw), el)).To(Succeed())
		stripped, err := controllers.StripForCache(el)
		g.Expect(err).NotTo(HaveOccurred())
		return stripped.(*pamv1.PamElevation)
	}
	a, b := decode("a"), decode("b")

	same := func(x, y string) bool { return unsafe.StringData(x) == unsafe.StringData(y) }
	g.Expect(same(a.Namespace, b.Namespace)).To(BeTrue(), "namespace")
	g.Expect(same(a.Finalizers[0], b.Finalizers[0])).To(BeTrue(), "finalizer")
	g.Expect(same(a.Spec.ServerRef.Name, b.Spec.ServerRef.Name)).To(BeTrue(), "server")
	g.Expect(same(a.Status.Conditions[0].Message, b.Status.Conditions[0].Message)).To(BeTrue(), "condition message")
	g.Expect(same(a.Spec.RequestID, b.Spec.RequestID)).To(BeFalse(), "a request id is the elevation's own")
	g.Expect(a.ManagedFields).To(BeNil())
	g.Expect(a.Annotations).To(Equal(map[string]string{"team": "a"}))
}
