package controllers_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// renderInstall builds config/default with the kustomize in ./bin, as make build-installer does.
func renderInstall(t *testing.T) []byte {
	t.Helper()
	out, err := exec.Command(filepath.Join("..", "bin", "kustomize"), "build", filepath.Join("..", "config", "default")).Output()
	if err != nil {
		t.Fatalf("kustomize build config/default: %v (run make test, which builds bin/kustomize)", err)
	}
	return out
}

func TestInstallManifestAppliesServerSide(t *testing.T) {
	install := renderInstall(t)
	cmd := exec.Command(filepath.Join("..", "bin", "kubectl"), "apply", "--server-side", "--force-conflicts", "-f", "-")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfigPath)
	cmd.Stdin = bytes.NewReader(install)
	out, err := cmd.CombinedOutput()
	NewWithT(t).Expect(err).NotTo(HaveOccurred(), "kubectl apply --server-side:\n%s", out)
	for _, want := range []string{
		"customresourcedefinition.apiextensions.k8s.io/pamelevations.pam.mim.dev serverside-applied",
		"deployment.apps/pam-operator-controller-manager serverside-applied",
		"clusterrole.rbac.authorization.k8s.io/pam-operator-manager-role serverside-applied",
		"networkpolicy.networking.k8s.io/pam-operator-allow-metrics-traffic serverside-applied",
	} {
		NewWithT(t).Expect(string(out)).To(ContainSubstring(want))
	}
}

// TestManagerPodPassesRestrictedPodSecurity creates a Pod from the shipped Deployment's template
// in a namespace that enforces the restricted profile, on the real API server's Pod Security
// admission. A privileged Pod in the same namespace is refused, so the check is live.
func TestManagerPodPassesRestrictedPodSecurity(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	var deployment *appsv1.Deployment
	for _, doc := range strings.Split(string(renderInstall(t)), "\n---\n") {
		if strings.Contains(doc, "kind: Deployment") {
			deployment = &appsv1.Deployment{}
			g.Expect(yaml.Unmarshal([]byte(doc), deployment)).To(Succeed())
		}
	}
	g.Expect(deployment).NotTo(BeNil(), "config/default has no Deployment")

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "restricted-",
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}}
	g.Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	g.Expect(k8sClient.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
		Namespace: ns.Name, Name: deployment.Spec.Template.Spec.ServiceAccountName}})).To(Succeed())

	pod := expectHardenedPod(g, ns.Name, "manager", deployment.Spec.Template.Spec)

	privileged := pod.DeepCopy()
	privileged.Name = "privileged"
	privileged.ResourceVersion = ""
	privileged.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
	err := k8sClient.Create(ctx, privileged)
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "want the restricted profile to refuse a privileged Pod, got %v", err)
	g.Expect(err.Error()).To(ContainSubstring("restricted"))
}

// TestEgressPolicySampleIsValid: the sample egress NetworkPolicy is accepted by the API server's
// validation as shipped. (Nothing here enforces NetworkPolicies; a CNI does.)
func TestEgressPolicySampleIsValid(t *testing.T) {
	g := NewWithT(t)
	data, err := os.ReadFile(filepath.Join("..", "config", "network-policy", "egress-sample.yaml"))
	g.Expect(err).NotTo(HaveOccurred())
	policy := &networkingv1.NetworkPolicy{}
	g.Expect(yaml.UnmarshalStrict(data, policy)).To(Succeed())
	g.Expect(policy.Spec.PolicyTypes).To(ConsistOf(networkingv1.PolicyTypeEgress))
	policy.Namespace = newNamespace(t)
	g.Expect(k8sClient.Create(context.Background(), policy)).To(Succeed())
}

// expectHardenedPod creates a Pod from spec in ns, which enforces the restricted Pod Security
// profile — nothing here runs Pods, but admission judges the template — and checks what a
// hardened container carries besides: a read-only root, resources, and probes.
func expectHardenedPod(g Gomega, ns, name string, spec corev1.PodSpec) *corev1.Pod {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
	g.Expect(k8sClient.Create(context.Background(), pod)).To(Succeed())
	c := pod.Spec.Containers[0]
	g.Expect(c.SecurityContext.ReadOnlyRootFilesystem).To(Equal(ptr.To(true)))
	g.Expect(c.Resources.Limits).NotTo(BeEmpty())
	g.Expect(c.Resources.Requests).NotTo(BeEmpty())
	g.Expect(c.LivenessProbe).NotTo(BeNil())
	g.Expect(c.ReadinessProbe).NotTo(BeNil())
	return pod
}
