package helmtest

import (
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

func TestLint(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values map[string]any
	}{
		{"default values", nil},
		{"every toggle on", readValues(t, "all-toggles.yaml")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			linter := lint.RunAll(chartDir, tc.values, namespace)
			for _, m := range linter.Messages {
				// Info messages are advice (an icon); warnings and errors are defects.
				if m.Severity >= support.WarningSev {
					t.Errorf("helm lint: %v", m)
				}
			}
		})
	}
}

func TestDefaultsAreHighlyAvailable(t *testing.T) {
	objs := mustRender(t, nil)
	deploy := find(t, objs, "Deployment", "pam-operator-controller-manager")

	if got, _, _ := unstructured.NestedInt64(deploy.Object, "spec", "replicas"); got != 2 {
		t.Errorf("replicas = %d, want 2: a drained node must not pause revocations", got)
	}
	args := containerArgs(t, deploy)
	if !slices.Contains(args, "--leader-elect=true") {
		t.Errorf("args %v lack --leader-elect=true: two replicas would both call PAM", args)
	}

	pdb := find(t, objs, "PodDisruptionBudget", "pam-operator-controller-manager")
	if got, _, _ := unstructured.NestedInt64(pdb.Object, "spec", "minAvailable"); got != 1 {
		t.Errorf("PodDisruptionBudget minAvailable = %d, want 1", got)
	}
	podLabels, _, _ := unstructured.NestedStringMap(deploy.Object, "spec", "template", "metadata", "labels")
	pdbSelector, _, _ := unstructured.NestedStringMap(pdb.Object, "spec", "selector", "matchLabels")
	if !selects(pdbSelector, podLabels) {
		t.Errorf("PodDisruptionBudget selector %v does not select the Pods %v", pdbSelector, podLabels)
	}

	spread, _, _ := unstructured.NestedSlice(deploy.Object, "spec", "template", "spec", "topologySpreadConstraints")
	var keys []string
	for _, c := range spread {
		c := c.(map[string]any)
		keys = append(keys, c["topologyKey"].(string))
		sel, _, _ := unstructured.NestedStringMap(c, "labelSelector", "matchLabels")
		if !selects(sel, podLabels) {
			t.Errorf("topology spread on %s selects %v, not the Pods %v", c["topologyKey"], sel, podLabels)
		}
	}
	if diff := cmp.Diff([]string{"kubernetes.io/hostname", "topology.kubernetes.io/zone"}, keys); diff != "" {
		t.Errorf("topology spread keys (-want +got):\n%s", diff)
	}

	svc := find(t, objs, "Service", "pam-operator-controller-manager-metrics")
	svcSelector, _, _ := unstructured.NestedStringMap(svc.Object, "spec", "selector")
	if !selects(svcSelector, podLabels) {
		t.Errorf("metrics Service selector %v does not select the Pods %v", svcSelector, podLabels)
	}
	find(t, objs, "NetworkPolicy", "pam-operator-allow-metrics-traffic")

	for _, kind := range []string{"ServiceMonitor", "PrometheusRule"} {
		if got := ofKind(objs, kind); len(got) != 0 {
			t.Errorf("a %s is rendered by default; the Prometheus Operator's CRDs may be missing", kind)
		}
	}
	if got := ofKind(objs, "NetworkPolicy"); len(got) != 1 {
		t.Errorf("%d NetworkPolicies by default, want only the metrics ingress one: egress needs the cluster's addresses", len(got))
	}
	crds := ofKind(objs, "CustomResourceDefinition")
	if len(crds) != 3 {
		t.Fatalf("%d CRDs rendered, want 3", len(crds))
	}
	for _, crd := range crds {
		if got := crd.GetAnnotations()["helm.sh/resource-policy"]; got != "keep" {
			t.Errorf("CRD %s: helm.sh/resource-policy = %q, want keep: uninstalling must not delete every elevation", crd.GetName(), got)
		}
	}
}

// The Pod the chart runs is the one kustomize runs: same security context and resources.
func TestPodMatchesKustomizeManager(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "config", "manager", "manager.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := find(t, decodeManifest(t, string(data)), "Deployment", "controller-manager")
	got := find(t, mustRender(t, nil), "Deployment", "pam-operator-controller-manager")

	for _, path := range [][]string{
		{"spec", "template", "spec", "securityContext"},
		{"spec", "template", "spec", "terminationGracePeriodSeconds"},
		{"spec", "template", "spec", "containers", "0", "securityContext"},
		{"spec", "template", "spec", "containers", "0", "resources"},
		{"spec", "template", "spec", "containers", "0", "livenessProbe"},
		{"spec", "template", "spec", "containers", "0", "readinessProbe"},
	} {
		if diff := cmp.Diff(field(t, want, path), field(t, got, path)); diff != "" {
			t.Errorf("%s (-kustomize +chart):\n%s", strings.Join(path, "."), diff)
		}
	}
	env := field(t, got, []string{"spec", "template", "spec", "containers", "0", "env"}).([]any)
	for _, name := range []string{"POD_NAMESPACE", "GOMEMLIMIT"} {
		if !slices.ContainsFunc(env, func(e any) bool { return e.(map[string]any)["name"] == name }) {
			t.Errorf("env %v lacks %s", env, name)
		}
	}
}

func TestEveryToggleOn(t *testing.T) {
	objs := mustRender(t, readValues(t, "all-toggles.yaml"))
	deploy := find(t, objs, "Deployment", "pam-operator-controller-manager")
	args := containerArgs(t, deploy)
	for _, want := range []string{
		"--cluster-resource-namespace=pam-credentials",
		"--pam-sync-interval=2m",
		"--max-retry-delay=30s",
		"--allowed-pam-hosts=pam.corp.example,*.dc.corp.example,198.51.100.0/24",
		"--namespaced-servers=false",
		"--auth-failure-backoff=30m",
		"--clock-skew-margin=2m",
		"--max-concurrent-reconciles=16",
		"--kube-api-qps=20.5",
		"--kube-api-burst=40",
		"--pprof-bind-address=127.0.0.1:6060",
		"--leader-election-lease-duration=30s",
		"--leader-election-renew-deadline=20s",
		"--leader-election-retry-period=5s",
		"--zap-log-level=debug",
		"--zap-encoder=console",
		"--zap-stacktrace-level=panic",
		"--zap-time-encoding=iso8601",
		"--metrics-cert-path=/etc/pam-operator/metrics-certs",
		"--enable-http2=true",
		"--zap-devel=false",
	} {
		if !slices.Contains(args, want) {
			t.Errorf("args lack %s; got %v", want, args)
		}
	}
	image := field(t, deploy, []string{"spec", "template", "spec", "containers", "0", "image"})
	if want := "registry.example/pam-operator@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"; image != want {
		t.Errorf("image = %v, want %s", image, want)
	}
	env := map[string]any{}
	for _, e := range field(t, deploy, []string{"spec", "template", "spec", "containers", "0", "env"}).([]any) {
		e := e.(map[string]any)
		env[e["name"].(string)] = e["value"]
	}
	for name, want := range map[string]string{"GOGC": "50", "GOMEMLIMIT": "200MiB", "HTTPS_PROXY": "http://proxy.corp.example:3128"} {
		if env[name] != want {
			t.Errorf("env %s = %v, want %s", name, env[name], want)
		}
	}
	if got, _, _ := unstructured.NestedInt64(deploy.Object, "spec", "replicas"); got != 3 {
		t.Errorf("replicas = %d, want 3", got)
	}

	find(t, objs, "ServiceMonitor", "pam-operator-controller-manager-metrics")
	find(t, objs, "PrometheusRule", "pam-operator")
	find(t, objs, "NetworkPolicy", "pam-operator-allow-metrics-traffic")
	find(t, objs, "NetworkPolicy", "pam-operator-egress")
	for _, crd := range ofKind(objs, "CustomResourceDefinition") {
		if _, kept := crd.GetAnnotations()["helm.sh/resource-policy"]; kept {
			t.Errorf("CRD %s is kept on uninstall although crds.keep is false", crd.GetName())
		}
	}
	for _, o := range objs {
		if o.GetLabels()["team"] != "platform" {
			t.Errorf("%s/%s lacks commonLabels", o.GetKind(), o.GetName())
		}
	}

	noCRDs := readValues(t, "all-toggles.yaml")
	noCRDs["crds"] = map[string]any{"enabled": false}
	if got := ofKind(mustRender(t, noCRDs), "CustomResourceDefinition"); len(got) != 0 {
		t.Errorf("%d CRDs rendered with crds.enabled false", len(got))
	}
}

// The CRDs and alert rules the chart installs are the generated ones, unchanged but for the
// chart's labels and annotations.
func TestGeneratedFilesMatchTheirSources(t *testing.T) {
	vals := map[string]any{"metrics": map[string]any{"prometheusRule": map[string]any{"enabled": true}}}
	objs := mustRender(t, vals)

	bases, err := filepath.Glob(filepath.Join(repoRoot, "config", "crd", "bases", "*.yaml"))
	if err != nil || len(bases) == 0 {
		t.Fatalf("no CRDs in config/crd/bases: %v", err)
	}
	for _, path := range bases {
		want := readObject(t, path)
		got := find(t, objs, "CustomResourceDefinition", want.GetName())
		if diff := cmp.Diff(want.Object["spec"], got.Object["spec"]); diff != "" {
			t.Errorf("CRD %s differs from %s (-base +chart):\n%s", want.GetName(), path, diff)
		}
	}
	if got := len(ofKind(objs, "CustomResourceDefinition")); got != len(bases) {
		t.Errorf("%d CRDs rendered, %d in config/crd/bases", got, len(bases))
	}

	rules := readObject(t, filepath.Join(repoRoot, "config", "prometheus", "rules.yaml"))
	got := find(t, objs, "PrometheusRule", "pam-operator")
	if diff := cmp.Diff(rules.Object["spec"], got.Object["spec"]); diff != "" {
		t.Errorf("PrometheusRule differs from config/prometheus/rules.yaml (-kustomize +chart):\n%s", diff)
	}
}

// Every flag the manager defines is set by the chart, so none is out of a user's reach.
func TestEveryManagerFlagIsAValue(t *testing.T) {
	defined := managerFlags(t)
	zapFlags := flag.NewFlagSet("zap", flag.ContinueOnError)
	(&zap.Options{}).BindFlags(zapFlags)
	zapFlags.VisitAll(func(f *flag.Flag) { defined = append(defined, f.Name) })
	// zap-devel is a preset of the level, encoder and stacktrace flags the chart sets one by one;
	// version prints the version and exits.
	notValues := []string{"zap-devel", "version"}

	set := map[string]bool{}
	for _, vals := range []map[string]any{nil, readValues(t, "all-toggles.yaml")} {
		for _, a := range containerArgs(t, find(t, mustRender(t, vals), "Deployment", "pam-operator-controller-manager")) {
			name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			set[name] = true
		}
	}
	for _, name := range defined {
		if !set[name] && !slices.Contains(notValues, name) {
			t.Errorf("the manager's --%s is not set by any value of the chart", name)
		}
	}
	if len(defined) < 20 {
		t.Errorf("found only %d flags in main.go: %v; has the way flags are defined changed?", len(defined), defined)
	}
}

// managerFlags reads the names of the flags main.go defines on the standard flag package.
func managerFlags(t *testing.T) []string {
	t.Helper()
	file, err := parser.ParseFile(token.NewFileSet(), filepath.Join(repoRoot, "main.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	ast.Inspect(file, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		if pkg, ok := sel.X.(*ast.Ident); !ok || pkg.Name != "flag" || sel.Sel.Name == "Parse" {
			return true
		}
		// flag.XxxVar(&v, "name", ...) or flag.Xxx("name", ...).
		for _, arg := range call.Args {
			if lit, ok := arg.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				name, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				names = append(names, name)
				break
			}
		}
		return true
	})
	return names
}

func TestSchemaRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		file, field string
	}{
		{"bad-type.yaml", "replicaCount"},
		{"bad-negative-replicas.yaml", "replicaCount"},
		{"bad-unknown-key.yaml", "replicas"},
		{"bad-nested-unknown-key.yaml", "enable"},
		{"bad-log-format.yaml", "format"},
		{"bad-duration.yaml", "pamSyncInterval"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			_, err := render(t, readValues(t, tc.file))
			if err == nil {
				t.Fatalf("%s was accepted", tc.file)
			}
			if !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("refused, but not by the schema on %s: %v", tc.field, err)
			}
		})
	}
}

// What the schema cannot say, the templates refuse.
func TestTemplatesRefuseUnsafeCombinations(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values map[string]any
		want   string
	}{
		{
			name:   "two replicas without leader election would both call PAM",
			values: map[string]any{"leaderElection": map[string]any{"enabled": false}},
			want:   "leaderElection.enabled must be true",
		},
		{
			name:   "an egress policy without rules would cut the manager off",
			values: map[string]any{"networkPolicy": map[string]any{"egress": map[string]any{"enabled": true}}},
			want:   "networkPolicy.egress.rules",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render(t, tc.values)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want one saying %q", err, tc.want)
			}
		})
	}
	single := map[string]any{"replicaCount": 1, "leaderElection": map[string]any{"enabled": false}}
	if _, err := render(t, single); err != nil {
		t.Errorf("one replica without leader election was refused: %v", err)
	}
}

// containerArgs returns the manager container's args.
func containerArgs(t *testing.T, deploy *unstructured.Unstructured) []string {
	t.Helper()
	var args []string
	for _, a := range field(t, deploy, []string{"spec", "template", "spec", "containers", "0", "args"}).([]any) {
		args = append(args, a.(string))
	}
	return args
}

// field reads a path of map keys and list indexes.
func field(t *testing.T, obj *unstructured.Unstructured, path []string) any {
	t.Helper()
	var cur any = obj.Object
	for _, p := range path {
		switch c := cur.(type) {
		case map[string]any:
			cur = c[p]
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i >= len(c) {
				t.Fatalf("%s/%s: no %s in %v", obj.GetKind(), obj.GetName(), strings.Join(path, "."), path)
			}
			cur = c[i]
		default:
			t.Fatalf("%s/%s: no %s", obj.GetKind(), obj.GetName(), strings.Join(path, "."))
		}
	}
	return cur
}

// selects tells whether a matchLabels selector selects an object with labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// readObject reads a file of one object.
func readObject(t *testing.T, path string) *unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs := decodeManifest(t, string(data))
	if len(objs) != 1 {
		t.Fatalf("%s holds %d objects, want 1", path, len(objs))
	}
	return objs[0]
}
