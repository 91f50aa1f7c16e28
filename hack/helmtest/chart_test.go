package helmtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	kubefake "helm.sh/helm/v4/pkg/kube/fake"
	release "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage"
	"helm.sh/helm/v4/pkg/storage/driver"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

const (
	// repoRoot is the repository, seen from this package's directory (where go test runs).
	repoRoot    = "../.."
	releaseName = "pam-operator"
	namespace   = "pam-system"
)

var chartDir = filepath.Join(repoRoot, "charts", "pam-operator")

// loadChart loads the chart from the tree: no repository, no network.
func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("loading the chart: %v", err)
	}
	return c
}

// readValues reads a values file as `helm install -f` does.
func readValues(t *testing.T, name string) map[string]any {
	t.Helper()
	vals, err := common.ReadValuesFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("reading %s: %v", name, err)
	}
	return vals
}

// render runs a client-side dry-run install (what `helm template` does), with the schema
// checked, and returns the objects of its manifest.
func render(t *testing.T, vals map[string]any) ([]*unstructured.Unstructured, error) {
	t.Helper()
	cfg := action.NewConfiguration()
	cfg.Releases = storage.Init(driver.NewMemory())
	cfg.KubeClient = &kubefake.PrintingKubeClient{Out: io.Discard}
	cfg.Capabilities = common.DefaultCapabilities
	install := action.NewInstall(cfg)
	install.DryRunStrategy = action.DryRunClient
	install.ReleaseName = releaseName
	install.Namespace = namespace
	install.Replace = true
	install.KubeVersion = kubeVersion(t)
	rel, err := install.Run(loadChart(t), vals)
	if err != nil {
		return nil, err
	}
	r, ok := rel.(*release.Release)
	if !ok {
		t.Fatalf("install returned a %T, not a v1 release", rel)
	}
	return decodeManifest(t, r.Manifest), nil
}

// mustRender is render for values that must be accepted.
func mustRender(t *testing.T, vals map[string]any) []*unstructured.Unstructured {
	t.Helper()
	objs, err := render(t, vals)
	if err != nil {
		t.Fatalf("rendering the chart: %v", err)
	}
	return objs
}

// decodeManifest splits a multi-document manifest into objects, integers kept as int64.
func decodeManifest(t *testing.T, manifest string) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096)
	for {
		var doc json.RawMessage
		if err := dec.Decode(&doc); err != nil {
			if errors.Is(err, io.EOF) {
				return objs
			}
			t.Fatalf("decoding the manifest: %v\n%s", err, manifest)
		}
		if trimmed := bytes.TrimSpace(doc); len(trimmed) == 0 || string(trimmed) == "null" {
			continue // an empty document, as a template switched off leaves
		}
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(doc); err != nil {
			t.Fatalf("decoding an object of the manifest: %v\n%s", err, doc)
		}
		objs = append(objs, obj)
	}
}

// find returns the one object of kind named name, failing the test when there is none.
func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %q rendered; got %s", kind, name, describe(objs))
	return nil
}

// ofKind returns the objects of kind.
func ofKind(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

func describe(objs []*unstructured.Unstructured) string {
	var b bytes.Buffer
	for _, o := range objs {
		b.WriteString(o.GetKind() + "/" + o.GetName() + " ")
	}
	return b.String()
}

// manifestOf is the manifest of a release Helm returned.
func manifestOf(t *testing.T, rel any) string {
	t.Helper()
	r, ok := rel.(*release.Release)
	if !ok {
		t.Fatalf("Helm returned a %T, not a v1 release", rel)
	}
	return r.Manifest
}

// kubeVersion is the Kubernetes of the local control plane, KUBE_VERSION in the Makefile: without
// it the SDK renders for its built-in default, older than the chart supports.
func kubeVersion(t *testing.T) *common.KubeVersion {
	t.Helper()
	makefile, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(makefile), "\n") {
		if v, ok := strings.CutPrefix(line, "KUBE_VERSION := "); ok {
			kv, err := common.ParseKubeVersion(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return kv
		}
	}
	t.Fatal("the Makefile sets no KUBE_VERSION")
	return nil
}
