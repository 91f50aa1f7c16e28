package helmtest

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/kube"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// TestInstallUpgradeUninstall installs the chart into a real API server, as `helm install`
// does but without waiting for Pods (nothing runs them here), then upgrades and uninstalls it.
func TestInstallUpgradeUninstall(t *testing.T) {
	ctx := t.Context()
	kubeconfig, c := startControlPlane(t)

	// The namespace enforces the restricted Pod Security level, as config/manager's does.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce":         "restricted",
		"pod-security.kubernetes.io/enforce-version": "latest",
	}}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}

	cfg := helmConfig(t, kubeconfig)
	installed := helmInstall(ctx, t, cfg, nil)
	if len(installed) == 0 {
		t.Fatal("the release has no objects")
	}
	for _, want := range installed {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(want.GroupVersionKind())
		if err := c.Get(ctx, client.ObjectKey{Namespace: want.GetNamespace(), Name: want.GetName()}, got); err != nil {
			t.Errorf("%s %s/%s was not created: %v", want.GetKind(), want.GetNamespace(), want.GetName(), err)
		}
	}

	t.Run("the manager's Pod is admitted under restricted Pod Security", func(t *testing.T) {
		pod := podFromDeployment(t, find(t, installed, "Deployment", "pam-operator-controller-manager"), "manager-admission")
		if err := c.Create(ctx, pod); err != nil {
			t.Fatalf("the Pod of the rendered template was refused: %v", err)
		}
		// The same Pod, allowed to escalate, is refused: the namespace does enforce the level.
		escalating := podFromDeployment(t, find(t, installed, "Deployment", "pam-operator-controller-manager"), "escalating")
		escalating.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = ptr.To(true)
		err := c.Create(ctx, escalating)
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "PodSecurity") {
			t.Errorf("a Pod allowed to escalate privileges was not refused by Pod Security: %v", err)
		}
	})

	t.Run("the bindings give the manager's ServiceAccount its roles, and no more", func(t *testing.T) {
		sa := "system:serviceaccount:" + namespace + ":pam-operator-controller-manager"
		for _, tc := range []struct {
			attrs authorizationv1.ResourceAttributes
			want  bool
		}{
			{authorizationv1.ResourceAttributes{Group: "pam.mim.dev", Resource: "pamelevations", Verb: "patch"}, true},
			{authorizationv1.ResourceAttributes{Group: "pam.mim.dev", Resource: "clusterpamservers", Subresource: "status", Verb: "patch"}, true},
			{authorizationv1.ResourceAttributes{Namespace: namespace, Group: "coordination.k8s.io", Resource: "leases", Verb: "update"}, true},
			{authorizationv1.ResourceAttributes{Namespace: namespace, Resource: "secrets", Verb: "create"}, true},
			// The escrow writes Secrets in the operator's namespace only.
			{authorizationv1.ResourceAttributes{Namespace: "default", Resource: "secrets", Verb: "create"}, false},
			{authorizationv1.ResourceAttributes{Namespace: "default", Group: "coordination.k8s.io", Resource: "leases", Verb: "update"}, false},
		} {
			review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: sa, Groups: []string{"system:serviceaccounts"}, ResourceAttributes: &tc.attrs,
			}}
			if err := c.Create(ctx, review); err != nil {
				t.Fatal(err)
			}
			if review.Status.Allowed != tc.want {
				t.Errorf("%s may %s %s/%s in %q: %t, want %t", sa, tc.attrs.Verb, tc.attrs.Resource, tc.attrs.Subresource, tc.attrs.Namespace, review.Status.Allowed, tc.want)
			}
		}
	})

	t.Run("upgrade changes the Deployment and the CRDs", func(t *testing.T) {
		upgrade := action.NewUpgrade(cfg)
		upgrade.Namespace = namespace
		upgrade.WaitStrategy = kube.HookOnlyStrategy
		upgrade.Timeout = 2 * time.Minute
		vals := map[string]any{
			"replicaCount": 3,
			"config":       map[string]any{"pamSyncInterval": "1m"},
			"commonLabels": map[string]any{"example.com/upgraded": "true"},
		}
		if _, err := upgrade.RunWithContext(ctx, releaseName, loadChart(t), vals); err != nil {
			t.Fatalf("helm upgrade: %v", err)
		}
		var deploy appsv1.Deployment
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "pam-operator-controller-manager"}, &deploy); err != nil {
			t.Fatal(err)
		}
		if got := ptr.Deref(deploy.Spec.Replicas, 0); got != 3 {
			t.Errorf("replicas after upgrade = %d, want 3", got)
		}
		if args := deploy.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--pam-sync-interval=1m") {
			t.Errorf("args after upgrade %v lack --pam-sync-interval=1m", args)
		}
		// The CRDs are templates: an upgrade updates them with the manager that needs them.
		for _, crd := range ofKind(installed, "CustomResourceDefinition") {
			got := &unstructured.Unstructured{}
			got.SetGroupVersionKind(crd.GroupVersionKind())
			if err := c.Get(ctx, client.ObjectKey{Name: crd.GetName()}, got); err != nil {
				t.Fatal(err)
			}
			if got.GetLabels()["example.com/upgraded"] != "true" {
				t.Errorf("CRD %s was not updated by the upgrade: labels %v", crd.GetName(), got.GetLabels())
			}
		}
	})

	t.Run("uninstall removes the operator and keeps the CRDs", func(t *testing.T) {
		uninstall := action.NewUninstall(cfg)
		uninstall.WaitStrategy = kube.HookOnlyStrategy
		uninstall.Timeout = 2 * time.Minute
		if _, err := uninstall.Run(releaseName); err != nil {
			t.Fatalf("helm uninstall: %v", err)
		}
		var deploy appsv1.Deployment
		err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "pam-operator-controller-manager"}, &deploy)
		if !apierrors.IsNotFound(err) {
			t.Errorf("the Deployment is still there after uninstall: %v", err)
		}
		for _, crd := range ofKind(installed, "CustomResourceDefinition") {
			got := &unstructured.Unstructured{}
			got.SetGroupVersionKind(crd.GroupVersionKind())
			if err := c.Get(ctx, client.ObjectKey{Name: crd.GetName()}, got); err != nil {
				t.Errorf("CRD %s was deleted by uninstall, and every elevation with it: %v", crd.GetName(), err)
			}
		}
	})
}

// TestEveryToggleOnTheAPIServer installs the chart with every toggle on, so that the API server
// validates what only it can (NetworkPolicy, PodDisruptionBudget and Pod specs), and the Pod of
// that template is admitted under restricted Pod Security too. The Prometheus Operator's kinds
// are left out: their CRDs are not the chart's to install.
func TestEveryToggleOnTheAPIServer(t *testing.T) {
	ctx := t.Context()
	kubeconfig, c := startControlPlane(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted",
	}}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}

	vals := readValues(t, "all-toggles.yaml")
	metrics := vals["metrics"].(map[string]any)
	metrics["serviceMonitor"].(map[string]any)["enabled"] = false
	metrics["prometheusRule"].(map[string]any)["enabled"] = false
	installed := helmInstall(ctx, t, helmConfig(t, kubeconfig), vals)
	for _, kind := range []string{"NetworkPolicy", "PodDisruptionBudget", "Deployment", "CustomResourceDefinition"} {
		if len(ofKind(installed, kind)) == 0 {
			t.Errorf("no %s installed", kind)
		}
	}
	pod := podFromDeployment(t, find(t, installed, "Deployment", "pam-operator-controller-manager"), "manager-admission")
	if err := c.Create(ctx, pod); err != nil {
		t.Errorf("the Pod of the template with every toggle on was refused: %v", err)
	}
}

// startControlPlane starts kube-apiserver and etcd from ./bin (no CRDs: the chart installs
// them) and returns an administrator's kubeconfig file and client.
func startControlPlane(t *testing.T) (string, client.Client) {
	t.Helper()
	bin, err := filepath.Abs(filepath.Join(repoRoot, "bin"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(bin, "kube-apiserver")); err != nil {
		t.Fatalf("bin/kube-apiserver is missing: run 'make control-plane' (make test-chart does): %v", err)
	}
	env := &envtest.Environment{BinaryAssetsDirectory: bin}
	if _, err := env.Start(); err != nil {
		t.Fatalf("starting the control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	admin, err := env.AddUser(envtest.User{Name: "helm-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(admin.Config(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return path, c
}

// helmConfig is Helm's action configuration for the cluster of kubeconfig, releases stored in
// Secrets as the helm command stores them.
func helmConfig(t *testing.T, kubeconfig string) *action.Configuration {
	t.Helper()
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = ptr.To(kubeconfig)
	flags.Namespace = ptr.To(namespace)
	cfg := action.NewConfiguration()
	if err := cfg.Init(flags, namespace, "secret"); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// podFromDeployment is the Pod the Deployment's ReplicaSet would create (no controller runs
// here to create it).
func podFromDeployment(t *testing.T, obj *unstructured.Unstructured, name string) *corev1.Pod {
	t.Helper()
	var deploy appsv1.Deployment
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &deploy); err != nil {
		t.Fatal(err)
	}
	tmpl := deploy.Spec.Template
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: deploy.Namespace, Labels: tmpl.Labels, Annotations: tmpl.Annotations},
		Spec:       *tmpl.Spec.DeepCopy(),
	}
}

// helmInstall installs the chart from the tree with vals as the release, without waiting for
// Pods (nothing runs them here), and returns the objects it installed.
func helmInstall(ctx context.Context, t *testing.T, cfg *action.Configuration, vals map[string]any) []*unstructured.Unstructured {
	t.Helper()
	install := action.NewInstall(cfg)
	install.ReleaseName = releaseName
	install.Namespace = namespace
	install.WaitStrategy = kube.HookOnlyStrategy
	install.Timeout = 2 * time.Minute
	rel, err := install.RunWithContext(ctx, loadChart(t), vals)
	if err != nil {
		t.Fatalf("helm install: %v", err)
	}
	return decodeManifest(t, manifestOf(t, rel))
}
