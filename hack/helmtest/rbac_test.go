package helmtest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// The chart grants exactly what config/rbac grants: each Role and ClusterRole of the kustomize
// install has a twin in the chart (its name prefixed with the release's) allowing the same
// (group, resource, verb) triples, and the chart has no other.
func TestRBACEqualsKustomize(t *testing.T) {
	want := map[string][]string{}
	for _, file := range []string{"role.yaml", "leader_election_role.yaml", "metrics_reader_role.yaml"} {
		data, err := os.ReadFile(filepath.Join(repoRoot, "config", "rbac", file))
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range decodeManifest(t, string(data)) {
			want[o.GetKind()+"/"+o.GetName()] = permissions(t, o.Object)
		}
	}

	got := map[string][]string{}
	for _, o := range mustRender(t, nil) {
		if o.GetKind() != "Role" && o.GetKind() != "ClusterRole" {
			continue
		}
		if o.GetKind() == "Role" && o.GetNamespace() != namespace {
			t.Errorf("Role %s is in %q, not the release's namespace", o.GetName(), o.GetNamespace())
		}
		got[o.GetKind()+"/"+strings.TrimPrefix(o.GetName(), releaseName+"-")] = permissions(t, o.Object)
	}
	if len(want) < 4 {
		t.Fatalf("read only %d roles from config/rbac: %v", len(want), want)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("chart RBAC differs from config/rbac (-kustomize +chart):\n%s", diff)
	}
}

// permissions expands the rules of a Role or ClusterRole into sorted, unique
// "group resource/subresource name verb" and "url verb" lines: two rule lists grant the same when
// their lines are equal, however the rules are grouped or ordered.
func permissions(t *testing.T, obj map[string]any) []string {
	t.Helper()
	var role rbacv1.ClusterRole // a Role's rules have the same shape
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, &role); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range role.Rules {
		names := r.ResourceNames
		if len(names) == 0 {
			names = []string{"*"}
		}
		for _, verb := range r.Verbs {
			for _, url := range r.NonResourceURLs {
				out = append(out, "url "+url+" "+verb)
			}
			for _, group := range r.APIGroups {
				for _, res := range r.Resources {
					for _, name := range names {
						out = append(out, strings.Join([]string{"api", group, res, name, verb}, " "))
					}
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
