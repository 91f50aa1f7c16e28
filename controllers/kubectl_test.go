package controllers_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/emulator"
)

// kubectl runs the real kubectl in ./bin against the suite's API server.
func kubectl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join("..", "bin", "kubectl"), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfigPath)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// tableColumns reads kubectl's table output into one map per row, by column title. kubectl
// aligns every value under the start of its title, so a title's offset is where its values
// begin (titles such as "REQUEST ID" hold spaces, values none).
func tableColumns(g Gomega, out string, titles []string) []map[string]string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	g.Expect(len(lines)).To(BeNumerically(">=", 2), "no rows:\n%s", out)
	header := lines[0]
	g.Expect(strings.Fields(header)).To(Equal(strings.Fields(strings.Join(titles, " "))), "the columns:\n%s", out)
	offsets := make([]int, len(titles))
	for i, title := range titles {
		offsets[i] = strings.Index(header, title)
	}
	var rows []map[string]string
	for _, line := range lines[1:] {
		row := map[string]string{}
		for i, title := range titles {
			end := len(line)
			if i+1 < len(titles) {
				end = min(offsets[i+1], len(line))
			}
			row[title] = strings.TrimSpace(line[min(offsets[i], len(line)):end])
		}
		rows = append(rows, row)
	}
	return rows
}

// TestKubectlGetWaitAndPatch is what a person at a terminal does with a create-mode elevation:
// kubectl wait until it is Ready, kubectl get it (the REQUEST ID column shows the request the
// operator made), list everything of the pam category, close it early with kubectl patch and
// kubectl wait until it is Closed.
func TestKubectlGetWaitAndPatch(t *testing.T) {
	g := NewWithT(t)
	ns, emu, _ := createModePAM(t, nil, emulator.Role{DisplayName: "SQL Admins", TTL: time.Hour})
	el := requesting(ns, "sql", "SQL Admins", func(el *pamv1.PamElevation) {
		el.Spec.TTL = &metav1.Duration{Duration: time.Hour}
	})
	create(t, el)
	timeout := "--timeout=" + waitTimeout.String()

	out, err := kubectl(t, "wait", "-n", ns, "--for=condition=Ready", "pamel/sql", timeout)
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(ContainSubstring("pamelevation.pam.mim.dev/sql condition met"))

	out, err = kubectl(t, "get", "pamel", "-n", ns)
	g.Expect(err).NotTo(HaveOccurred(), out)
	rows := tableColumns(g, out, []string{"NAME", "REQUEST ID", "SERVER", "STATUS", "EXPIRES", "READY", "AGE"})
	g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(el), el)).To(Succeed())
	made := requestsOf(emu, el)
	g.Expect(made).To(HaveLen(1))
	g.Expect(el.Status.ExpiresAt).NotTo(BeNil(), "status.expiresAt is written with the pass that made the request")
	g.Expect(rows).To(HaveLen(1))
	g.Expect(rows[0]).To(Equal(map[string]string{
		"NAME":       "sql",
		"REQUEST ID": strings.ToLower(made[0].ID),
		"SERVER":     "pam",
		"STATUS":     "Active",
		"EXPIRES":    el.Status.ExpiresAt.UTC().Format(time.RFC3339),
		"READY":      "True",
		"AGE":        rows[0]["AGE"],
	}))
	g.Expect(rows[0]["AGE"]).To(MatchRegexp(`^\d+[smhd]`))

	// Every kind is in the pam category; a ClusterPamServer is listed from any namespace.
	cluster := &pamv1.ClusterPamServer{ObjectMeta: metav1.ObjectMeta{GenerateName: "kubectl-"},
		Spec: pamv1.ClusterPamServerSpec{PamServerSpec: basicServerSpec("pam-credentials")}}
	create(t, cluster)
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), cluster) })
	out, err = kubectl(t, "get", "pam", "-n", ns, "-o", "name")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(strings.Fields(out)).To(ContainElements(
		"pamelevation.pam.mim.dev/sql",
		"pamserver.pam.mim.dev/pam",
		"clusterpamserver.pam.mim.dev/"+cluster.Name,
	))

	out, err = kubectl(t, "patch", "-n", ns, "pamel/sql", "--type=merge", "-p", `{"spec":{"closed":true}}`)
	g.Expect(err).NotTo(HaveOccurred(), out)
	out, err = kubectl(t, "wait", "-n", ns, "--for=condition=Closed", "pamel/sql", timeout)
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(ContainSubstring("pamelevation.pam.mim.dev/sql condition met"))
	out, err = kubectl(t, "get", "pamel", "-n", ns)
	g.Expect(err).NotTo(HaveOccurred(), out)
	closed := tableColumns(g, out, []string{"NAME", "REQUEST ID", "SERVER", "STATUS", "EXPIRES", "READY", "AGE"})
	g.Expect(closed[0]["STATUS"]).To(Equal("Closed"), "the Closed condition comes with PAM's status read back")
	g.Expect(closed[0]["REQUEST ID"]).To(Equal(rows[0]["REQUEST ID"]))
}

// TestKubectlExplainShowsFieldDocs: kubectl explain, reading the API server's OpenAPI, shows
// every field of the create-mode request and of a server's request policy with its doc comment,
// as the CRDs in config/crd/bases carry it.
func TestKubectlExplainShowsFieldDocs(t *testing.T) {
	space := regexp.MustCompile(`\s+`)
	for _, tc := range []struct {
		crd, kind, path string
	}{
		{"pam.mim.dev_pamelevations.yaml", "pamelevation", "spec.request"},
		{"pam.mim.dev_pamservers.yaml", "pamserver", "spec.requestPolicy"},
		{"pam.mim.dev_clusterpamservers.yaml", "clusterpamserver", "spec.requestPolicy"},
	} {
		t.Run(tc.kind+"."+tc.path, func(t *testing.T) {
			g := NewWithT(t)
			schema := crdSchema(t, tc.crd, tc.path)
			g.Expect(schema.Properties).NotTo(BeEmpty())
			// The API server publishes a CRD's OpenAPI a moment after it is established.
			var out string
			g.Eventually(func() error {
				var err error
				out, err = kubectl(t, "explain", tc.kind+"."+tc.path)
				return err
			}).WithTimeout(waitTimeout).WithPolling(pollEvery).Should(Succeed(), out)
			flat := space.ReplaceAllString(out, " ")
			g.Expect(flat).To(ContainSubstring(space.ReplaceAllString(schema.Description, " ")))
			for name, field := range schema.Properties {
				g.Expect(field.Description).NotTo(BeEmpty(), "%s.%s has no doc comment", tc.path, name)
				g.Expect(out).To(MatchRegexp(`(?m)^\s+`+regexp.QuoteMeta(name)+`\s+<`), "field %s", name)
				g.Expect(flat).To(ContainSubstring(space.ReplaceAllString(field.Description, " ")), "the doc of %s", name)
			}
		})
	}
}

// openAPISchema is the part of a CRD's schema kubectl explain prints.
type openAPISchema struct {
	Description string                   `json:"description"`
	Properties  map[string]openAPISchema `json:"properties"`
}

// crdSchema returns the schema at path (dot-separated) in the CRD file's first version.
func crdSchema(t *testing.T, file, path string) openAPISchema {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "config", "crd", "bases", file))
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Schema struct {
					OpenAPIV3Schema openAPISchema `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(data, &crd); err != nil || len(crd.Spec.Versions) == 0 {
		t.Fatalf("%s: %v", file, err)
	}
	schema := crd.Spec.Versions[0].Schema.OpenAPIV3Schema
	for _, name := range strings.Split(path, ".") {
		next, ok := schema.Properties[name]
		if !ok {
			t.Fatalf("%s has no field %s", file, path)
		}
		schema = next
	}
	return schema
}
