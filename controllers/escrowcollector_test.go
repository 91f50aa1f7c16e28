package controllers_test

import (
	"context"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/controllers"
	"github.com/pam-operator/pam-operator/internal/credentials"
)

// crashEscrow is an escrow a crashed operator left behind for a server deleted while it was
// down, and crashBystander a Secret beside it that is no escrow: the suite creates both before
// its manager starts.
var crashEscrow, crashBystander *corev1.Secret

// leaveEscrowOfACrash creates crashEscrow and crashBystander.
func leaveEscrowOfACrash(ctx context.Context) error {
	gone := &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: "deleted-while-down", Name: "pam"}}
	crashEscrow = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: clusterResourceNamespace, Name: credentials.EscrowName(gone),
		Labels: map[string]string{"app.kubernetes.io/managed-by": "pam-operator", "app.kubernetes.io/component": "credential-escrow"},
		Annotations: map[string]string{"pam.mim.dev/server": pamv1.KeyOf(gone),
			"pam.mim.dev/server-uid": "6f1d2c3b-0000-4000-8000-00000000c4a5"}},
		Data: map[string][]byte{"secret.username": []byte("crash-user"), "secret.password": []byte("crash-canary-1e07")}}
	crashBystander = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: clusterResourceNamespace, Name: "bystander-not-an-escrow"},
		Data: map[string][]byte{"token": []byte("bystander")}}
	for _, obj := range []client.Object{crashEscrow, crashBystander} {
		if err := k8sClient.Create(ctx, obj); err != nil {
			return err
		}
	}
	return nil
}

// TestEscrowLeftByACrashIsCollectedAtStart: the manager's start deletes an escrow nothing can
// need, and leaves the other Secrets of its namespace alone.
func TestEscrowLeftByACrashIsCollectedAtStart(t *testing.T) {
	waitGone(t, crashEscrow)
	err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(crashBystander), &corev1.Secret{})
	NewWithT(t).Expect(err).NotTo(HaveOccurred(), "a Secret without the escrow labels stays")
}

// TestEscrowIsNeededOnlyByItsServerInUse: the collector's judgement, against the manager's cache
// and the API server: an escrow is needed while its server exists as the object it was written
// for and an elevation needs it.
func TestEscrowIsNeededOnlyByItsServerInUse(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	el, _ := trackActive(t, "needs-escrow")
	server := &pamv1.PamServer{}
	g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: el.Namespace, Name: "pam"}, server)).To(Succeed())
	key := pamv1.KeyOf(server)
	needed := func(key string, uid types.UID) bool {
		ok, err := controllers.EscrowNeeded(ctx, k8sClient, managerCache, key, uid)
		g.Expect(err).NotTo(HaveOccurred())
		return ok
	}
	g.Expect(needed(key, server.UID)).To(BeTrue(), "its server, in use")
	g.Expect(needed(key, "another-uid")).To(BeFalse(), "written for another object of the name")
	g.Expect(needed("PamServer/"+el.Namespace+"/missing", "")).To(BeFalse(), "its server is gone")
	g.Expect(needed("ClusterPamServer/"+el.Namespace+"/pam", "")).To(BeFalse(), "not a server's key")
	g.Expect(needed("", "")).To(BeFalse(), "no server named")

	deleteObj(t, el)
	waitGone(t, el)
	g.Eventually(func() bool { return needed(key, server.UID) }).WithTimeout(waitTimeout).WithPolling(pollEvery).
		Should(BeFalse(), "no elevation needs it")
}
