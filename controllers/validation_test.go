package controllers_test

import (
	"context"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
)

// fromYAML decodes a manifest into an unstructured object, so the API server sees exactly what a
// user would send, including fields the Go types could not express.
func fromYAML(t *testing.T, namespace, manifest string) *unstructured.Unstructured {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &obj.Object); err != nil {
		t.Fatalf("bad test manifest: %v", err)
	}
	if obj.GetKind() != "ClusterPamServer" {
		obj.SetNamespace(namespace)
	}
	return obj
}

func TestAdmissionRejectsInvalidObjects(t *testing.T) {
	ns := newNamespace(t)
	const elevationHead = "apiVersion: pam.mim.dev/v1alpha1\nkind: PamElevation\nmetadata: {generateName: bad-}\n"
	const serverHead = "apiVersion: pam.mim.dev/v1alpha1\nkind: PamServer\nmetadata: {generateName: bad-}\n"
	const clusterHead = "apiVersion: pam.mim.dev/v1alpha1\nkind: ClusterPamServer\nmetadata: {generateName: bad-}\n"
	const guid = "5ec10e61-cdd1-404e-a18e-740467d87dbf"
	cases := []struct {
		name     string
		manifest string
		// wantIn are fragments the API server's message must contain: the field and the rule.
		wantIn []string
	}{
		{"neither requestID nor request", elevationHead + "spec: {serverRef: {name: pam}}",
			[]string{"set exactly one of requestID (adopt an existing request) and request (create one)"}},
		{"both requestID and request", elevationHead + "spec: {requestID: " + guid + ", request: {role: SQL Admins, justification: INC-4711}, serverRef: {name: pam}}",
			[]string{"set exactly one of requestID (adopt an existing request) and request (create one)"}},
		{"request with role and roleID", elevationHead + "spec: {request: {role: SQL Admins, roleID: " + guid + ", justification: INC-4711}, serverRef: {name: pam}}",
			[]string{"spec.request", "set exactly one of role"}},
		{"request with neither role nor roleID", elevationHead + "spec: {request: {justification: INC-4711}, serverRef: {name: pam}}",
			[]string{"spec.request", "set exactly one of role"}},
		{"request without justification", elevationHead + "spec: {request: {role: SQL Admins}, serverRef: {name: pam}}",
			[]string{"spec.request.justification", "Required"}},
		{"request with an empty justification", elevationHead + "spec: {request: {role: SQL Admins, justification: ''}, serverRef: {name: pam}}",
			[]string{"spec.request.justification"}},
		{"request with a blank justification", elevationHead + "spec: {request: {role: SQL Admins, justification: '   '}, serverRef: {name: pam}}",
			[]string{"spec.request.justification", "justification must not be blank"}},
		{"request ttl zero", elevationHead + "spec: {request: {role: SQL Admins, justification: x, ttl: 0s}, serverRef: {name: pam}}",
			[]string{"spec.request.ttl", "ttl must be at least 1s"}},
		{"request ttl below a second", elevationHead + "spec: {request: {role: SQL Admins, justification: x, ttl: 500ms}, serverRef: {name: pam}}",
			[]string{"spec.request.ttl", "ttl must be at least 1s"}},
		{"request ttl negative", elevationHead + "spec: {request: {role: SQL Admins, justification: x, ttl: -1h}, serverRef: {name: pam}}",
			[]string{"spec.request.ttl"}},
		{"request roleID not a GUID", elevationHead + "spec: {request: {roleID: sql-admins, justification: x}, serverRef: {name: pam}}",
			[]string{"spec.request.roleID", "roleID must be a GUID"}},
		{"request role empty", elevationHead + "spec: {request: {role: '', justification: x}, serverRef: {name: pam}}",
			[]string{"spec.request.role"}},
		{"requestID not a GUID", elevationHead + "spec: {requestID: not-a-guid, serverRef: {name: pam}}",
			[]string{"spec.requestID", "requestID must be a GUID"}},
		{"requestID with braces", elevationHead + "spec: {requestID: '{" + guid + "}', serverRef: {name: pam}}",
			[]string{"spec.requestID", "may not be more than 36"}},
		{"requestID with a bad character", elevationHead + "spec: {requestID: 5ec10e61-cdd1-404e-a18e-740467d87dbg, serverRef: {name: pam}}",
			[]string{"spec.requestID", "requestID must be a GUID"}},
		{"requestID without dashes", elevationHead + "spec: {requestID: 5ec10e61cdd1404ea18e740467d87dbf, serverRef: {name: pam}}",
			[]string{"spec.requestID", "requestID must be a GUID"}},
		{"serverRef missing", elevationHead + "spec: {requestID: " + guid + "}",
			[]string{"spec.serverRef", "Required"}},
		{"serverRef name empty", elevationHead + "spec: {requestID: " + guid + ", serverRef: {name: ''}}",
			[]string{"spec.serverRef.name"}},
		{"serverRef kind unknown", elevationHead + "spec: {requestID: " + guid + ", serverRef: {kind: Issuer, name: pam}}",
			[]string{"spec.serverRef.kind", "Unsupported value", "PamServer", "ClusterPamServer"}},
		{"both expiresAt and ttl", elevationHead + "spec: {requestID: " + guid + ", serverRef: {name: pam}, expiresAt: '2030-01-01T00:00:00Z', ttl: 1h}",
			[]string{"set at most one of expiresAt and ttl"}},
		{"ttl zero", elevationHead + "spec: {requestID: " + guid + ", serverRef: {name: pam}, ttl: 0s}",
			[]string{"spec.ttl", "ttl must be positive"}},
		{"ttl not a duration", elevationHead + "spec: {requestID: " + guid + ", serverRef: {name: pam}, ttl: one hour}",
			[]string{"spec.ttl", "should match"}},
		{"ttl negative", elevationHead + "spec: {requestID: " + guid + ", serverRef: {name: pam}, ttl: -5m}",
			[]string{"spec.ttl"}},
		{"expiresAt not a time", elevationHead + "spec: {requestID: " + guid + ", serverRef: {name: pam}, expiresAt: tomorrow}",
			[]string{"spec.expiresAt"}},
		{"deletionPolicy unknown", elevationHead + "spec: {requestID: " + guid + ", serverRef: {name: pam}, deletionPolicy: Delete}",
			[]string{"spec.deletionPolicy", "Unsupported value", "Close", "Orphan"}},
		{"url missing", serverHead + "spec: {}",
			[]string{"spec.url", "Required"}},
		{"url relative", serverHead + "spec: {url: /api}",
			[]string{"spec.url", "absolute http or https URL"}},
		{"url ftp", serverHead + "spec: {url: 'ftp://pam.example.com'}",
			[]string{"spec.url", "absolute http or https URL"}},
		{"url with user information", serverHead + "spec: {url: 'https://jen:secret@pam.example.com'}",
			[]string{"spec.url", "must not contain user information"}},
		{"url with query", serverHead + "spec: {url: 'https://pam.example.com/?v=1'}",
			[]string{"spec.url", "must not contain a query"}},
		{"timeout zero", serverHead + "spec: {url: 'https://pam.example.com', timeout: 0s}",
			[]string{"spec.timeout", "timeout must be positive"}},
		{"timeout not a duration", serverHead + "spec: {url: 'https://pam.example.com', timeout: soon}",
			[]string{"spec.timeout", "should match"}},
		{"timeout over 2m", serverHead + "spec: {url: 'https://pam.example.com', timeout: 2m1s}",
			[]string{"spec.timeout", "timeout must be at most 2m"}},
		{"more than 32 concurrent calls", serverHead + "spec: {url: 'https://pam.example.com', rateLimit: {maxConcurrentCalls: 33}}",
			[]string{"spec.rateLimit.maxConcurrentCalls", "less than or equal to 32"}},
		{"version not a number", serverHead + "spec: {url: 'https://pam.example.com', version: latest}",
			[]string{"spec.version", "should match"}},
		{"basic without secret name", serverHead + "spec: {url: 'https://pam.example.com', auth: {basic: {secretRef: {}}}}",
			[]string{"spec.auth.basic.secretRef.name", "Required"}},
		{"cluster server url relative", clusterHead + "spec: {url: pam}",
			[]string{"spec.url", "absolute http or https URL"}},
		{"cluster server timeout zero", clusterHead + "spec: {url: 'https://pam.example.com', timeout: 0s}",
			[]string{"spec.timeout", "timeout must be positive"}},
		{"spec missing", elevationHead, []string{"spec", "Required"}},
		{"two auth methods", serverHead + "spec: {url: 'https://pam.example.com', auth: {basic: {secretRef: {name: a}}, ntlm: {secretRef: {name: a}}}}",
			[]string{"spec.auth", "must have at most 1 item"}},
		{"ntlm without secret name", serverHead + "spec: {url: 'https://pam.example.com', auth: {ntlm: {secretRef: {}}}}",
			[]string{"spec.auth.ntlm.secretRef.name", "Required"}},
		{"kerberos without krb5 configuration", serverHead + "spec: {url: 'https://pam.example.com', auth: {kerberos: {secretRef: {name: k}, realm: CORP.EXAMPLE.COM}}}",
			[]string{"spec.auth.kerberos", "set either krb5ConfigMapRef or kdcs"}},
		{"kerberos with both krb5 configurations", serverHead + "spec: {url: 'https://pam.example.com', auth: {kerberos: {secretRef: {name: k}, realm: CORP.EXAMPLE.COM, kdcs: [dc1], krb5ConfigMapRef: {name: krb5}}}}",
			[]string{"spec.auth.kerberos", "set either krb5ConfigMapRef or kdcs"}},
		{"kerberos kdcs without realm", serverHead + "spec: {url: 'https://pam.example.com', auth: {kerberos: {secretRef: {name: k}, kdcs: [dc1]}}}",
			[]string{"spec.auth.kerberos", "kdcs need a realm"}},
		{"kerberos SPN without service class", serverHead + "spec: {url: 'https://pam.example.com', auth: {kerberos: {secretRef: {name: k}, realm: CORP.EXAMPLE.COM, kdcs: [dc1], servicePrincipalName: pam.example.com}}}",
			[]string{"spec.auth.kerberos.servicePrincipalName", "should match"}},
		{"kerberos kdc with a URL", serverHead + "spec: {url: 'https://pam.example.com', auth: {kerberos: {secretRef: {name: k}, realm: CORP.EXAMPLE.COM, kdcs: ['tcp://dc1/']}}}",
			[]string{"spec.auth.kerberos.kdcs[0]", "should match"}},
		{"allowedNamespaces with a bad operator", clusterHead + "spec: {url: 'https://pam.example.com', allowedNamespaces: {matchExpressions: [{key: team, operator: Near}]}}",
			[]string{"spec.allowedNamespaces", "operator must be In, NotIn, Exists or DoesNotExist"}},
		{"allowedNamespaces In without values", clusterHead + "spec: {url: 'https://pam.example.com', allowedNamespaces: {matchExpressions: [{key: team, operator: In}]}}",
			[]string{"spec.allowedNamespaces", "In and NotIn need values"}},
		{"requestID empty", elevationHead + "spec: {requestID: '', serverRef: {name: pam}}",
			[]string{"spec.requestID", "requestID must be a GUID"}},
		{"requestID too short", elevationHead + "spec: {requestID: 5ec10e61-cdd1-404e-a18e-740467d87db, serverRef: {name: pam}}",
			[]string{"spec.requestID", "requestID must be a GUID"}},
		{"requestID with spaces", elevationHead + "spec: {requestID: ' 5ec10e61-cdd1-404e-a18e-740467d87db', serverRef: {name: pam}}",
			[]string{"spec.requestID", "requestID must be a GUID"}},
		{"requestID as a URN", elevationHead + "spec: {requestID: 'urn:uuid:" + guid + "', serverRef: {name: pam}}",
			[]string{"spec.requestID", "may not be more than 36"}},
		{"requestID as an OData literal", elevationHead + "spec: {requestID: \"guid'" + guid + "'\", serverRef: {name: pam}}",
			[]string{"spec.requestID", "may not be more than 36"}},
		{"requestID a number", elevationHead + "spec: {requestID: 42, serverRef: {name: pam}}",
			[]string{"spec.requestID", "must be of type string"}},
		{"ttl in days", elevationHead + "spec: {requestID: " + guid + ", serverRef: {name: pam}, ttl: 1d}",
			[]string{"spec.ttl", "should match"}},
		{"ttl empty", elevationHead + "spec: {requestID: " + guid + ", serverRef: {name: pam}, ttl: ''}",
			[]string{"spec.ttl", "should match"}},
		{"expiresAt a date without time", elevationHead + "spec: {requestID: " + guid + ", serverRef: {name: pam}, expiresAt: '2030-01-01'}",
			[]string{"spec.expiresAt", "date-time"}},
		{"expiresAt a number", elevationHead + "spec: {requestID: " + guid + ", serverRef: {name: pam}, expiresAt: 1893456000}",
			[]string{"spec.expiresAt", "must be of type date-time"}},
		{"deletionPolicy in lower case", elevationHead + "spec: {requestID: " + guid + ", serverRef: {name: pam}, deletionPolicy: close}",
			[]string{"spec.deletionPolicy", "Unsupported value"}},
		{"serverRef kind in lower case", elevationHead + "spec: {requestID: " + guid + ", serverRef: {kind: pamserver, name: pam}}",
			[]string{"spec.serverRef.kind", "Unsupported value"}},
		{"serverRef name not a DNS name", elevationHead + "spec: {requestID: " + guid + ", serverRef: {name: My_Server}}",
			[]string{"spec.serverRef.name", "should match"}},
		{"serverRef name too long", elevationHead + "spec: {requestID: " + guid + ", serverRef: {name: " + strings.Repeat("a", 254) + "}}",
			[]string{"spec.serverRef.name", "Too long"}},
		{"no name", "apiVersion: pam.mim.dev/v1alpha1\nkind: PamElevation\nmetadata: {}\nspec: {requestID: " + guid + ", serverRef: {name: pam}}",
			[]string{"name or generateName is required"}},
		{"url empty", serverHead + "spec: {url: ''}",
			[]string{"spec.url"}},
		{"url without host", serverHead + "spec: {url: 'https://'}",
			[]string{"spec.url", "absolute http or https URL"}},
		{"url with fragment", serverHead + "spec: {url: 'https://pam.example.com/#top'}",
			[]string{"spec.url", "must not contain a query or fragment"}},
		{"url javascript", serverHead + "spec: {url: 'javascript:alert(1)'}",
			[]string{"spec.url", "absolute http or https URL"}},
		{"url too long", serverHead + "spec: {url: 'https://pam.example.com/" + strings.Repeat("a", 2048) + "'}",
			[]string{"spec.url", "Too long"}},
		{"version with a v", serverHead + "spec: {url: 'https://pam.example.com', version: v1}",
			[]string{"spec.version", "should match"}},
		{"version semver", serverHead + "spec: {url: 'https://pam.example.com', version: 1.0.0}",
			[]string{"spec.version", "should match"}},
		{"timeout negative", serverHead + "spec: {url: 'https://pam.example.com', timeout: -1s}",
			[]string{"spec.timeout", "should match"}},
		{"basic secret name empty", serverHead + "spec: {url: 'https://pam.example.com', auth: {basic: {secretRef: {name: ''}}}}",
			[]string{"spec.auth.basic.secretRef.name"}},
		{"basic without secretRef", serverHead + "spec: {url: 'https://pam.example.com', auth: {basic: {}}}",
			[]string{"spec.auth.basic.secretRef", "Required"}},
		{"basic over plain http", serverHead + "spec: {url: 'http://pam.example.com', auth: {basic: {secretRef: {name: pam}}}}",
			[]string{"url must be https"}},
		{"basic over plain HTTP in capitals", serverHead + "spec: {url: 'HTTP://pam.example.com', auth: {basic: {secretRef: {name: pam}}}}",
			[]string{"url must be https"}},
		{"basic over plain http, cluster-scoped", clusterHead +
			"spec: {url: 'http://pam.example.com', allowedNamespaces: {}, auth: {basic: {secretRef: {name: pam}}}}", []string{"url must be https"}},
	}
	if len(cases) < 40 {
		t.Fatalf("the table must cover at least 40 invalid manifests, has %d", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			err := k8sClient.Create(context.Background(), fromYAML(t, ns, tc.manifest))
			g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
			for _, want := range tc.wantIn {
				g.Expect(err.Error()).To(ContainSubstring(want))
			}
		})
	}
}

func TestStrictDecodingRejectsUnknownFields(t *testing.T) {
	ns := newNamespace(t)
	cases := []struct{ name, manifest, field string }{
		{"misspelt field", "apiVersion: pam.mim.dev/v1alpha1\nkind: PamElevation\nmetadata: {generateName: bad-}\n" +
			"spec: {requestId: 5ec10e61-cdd1-404e-a18e-740467d87dbf, requestID: 5ec10e61-cdd1-404e-a18e-740467d87dbf, serverRef: {name: pam}}", "spec.requestId"},
		{"unknown auth method", "apiVersion: pam.mim.dev/v1alpha1\nkind: PamServer\nmetadata: {generateName: bad-}\n" +
			"spec: {url: 'https://pam.example.com', auth: {digest: {secretRef: {name: x}}}}", "spec.auth.digest"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := k8sClient.Create(context.Background(), fromYAML(t, ns, tc.manifest), client.FieldValidation("Strict"))
			NewWithT(t).Expect(err).To(MatchError(ContainSubstring(`unknown field "` + tc.field + `"`)))
		})
	}
}

func TestAdmissionAcceptsEdgeCases(t *testing.T) {
	ns := newNamespace(t)
	const guid = "5ec10e61-cdd1-404e-a18e-740467d87dbf"
	cases := []struct{ name, kind, spec string }{
		{"upper-case GUID (sent to PAM in lower case)", "PamElevation", "{requestID: 5EC10E61-CDD1-404E-A18E-740467D87DBF, serverRef: {name: pam}}"},
		{"mixed-case GUID", "PamElevation", "{requestID: 5ec10E61-cdd1-404E-a18e-740467D87DBF, serverRef: {name: pam}}"},
		{"fractional ttl", "PamElevation", "{requestID: " + guid + ", serverRef: {name: pam}, ttl: 1.5h}"},
		{"expiresAt with an offset", "PamElevation", "{requestID: " + guid + ", serverRef: {name: pam}, expiresAt: '2030-01-01T10:00:00+02:00'}"},
		{"expiresAt in the past (closed at once)", "PamElevation", "{requestID: " + guid + ", serverRef: {name: pam}, expiresAt: '2020-01-01T00:00:00Z', deletionPolicy: Orphan}"},
		{"create mode by role name", "PamElevation", "{request: {role: SQL Admins, justification: 'INC-4711: rotate the keys'}, serverRef: {name: pam}}"},
		{"create mode by role id, with ttl, startAt and closed", "PamElevation", "{request: {roleID: " + guid + ", justification: x, ttl: 2h, startAt: '2030-01-01T08:00:00Z'}, serverRef: {name: pam}, closed: true}"},
		{"ClusterPamServer reference", "PamElevation", "{requestID: " + guid + ", serverRef: {kind: ClusterPamServer, name: mim.example}}"},
		{"http with a port", "PamServer", "{url: 'http://127.0.0.1:8086'}"},
		{"ntlm over http (it never sends the password)", "PamServer", "{url: 'http://pam.example.com', auth: {ntlm: {secretRef: {name: pam-ntlm}}}}"},
		{"https with a path prefix and trailing slash", "PamServer", "{url: 'https://pam.example.com/mim/pam/'}"},
		{"empty auth means none", "PamServer", "{url: 'https://pam.example.com', auth: {}}"},
		{"version 1", "PamServer", "{url: 'https://pam.example.com', version: '1'}"},
		{"ntlm", "PamServer", "{url: 'https://pam.example.com', auth: {ntlm: {secretRef: {name: pam-ntlm}}}}"},
		{"kerberos with kdcs", "PamServer", "{url: 'https://pam.example.com', auth: {kerberos: {secretRef: {name: k}, realm: CORP.EXAMPLE.COM, kdcs: ['dc1.corp.example.com', '10.0.0.5:88', '[fd00::5]:88'], servicePrincipalName: HTTP/pam.corp.example.com}}}"},
		{"kerberos with a krb5.conf ConfigMap", "PamServer", "{url: 'https://pam.example.com', auth: {kerberos: {secretRef: {name: k}, krb5ConfigMapRef: {name: krb5}}}}"},
		{"cluster server with allowedNamespaces", "ClusterPamServer", "{url: 'https://pam.example.com', allowedNamespaces: {matchLabels: {team: a}}}"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			manifest := "apiVersion: pam.mim.dev/v1alpha1\nkind: " + tc.kind + "\nmetadata: {generateName: ok-}\nspec: " + tc.spec
			NewWithT(t).Expect(k8sClient.Create(context.Background(), fromYAML(t, ns, manifest), client.FieldValidation("Strict"))).To(Succeed())
		})
	}
}

func TestAdmissionAcceptsAndDefaults(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	el := fromYAML(t, ns, `apiVersion: pam.mim.dev/v1alpha1
kind: PamElevation
metadata: {name: upper-case-guid}
spec: {requestID: 5EC10E61-CDD1-404E-A18E-740467D87DBF, serverRef: {name: pam}, ttl: 1h30m}`)
	g.Expect(k8sClient.Create(context.Background(), el)).To(Succeed())
	typed := &pamv1.PamElevation{}
	g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(el), typed)).To(Succeed())
	g.Expect(typed.Spec.DeletionPolicy).To(Equal(pamv1.DeletionPolicyClose))
	g.Expect(typed.Spec.ServerRef.Kind).To(Equal(pamv1.ServerKindPamServer))

	server := fromYAML(t, ns, `apiVersion: pam.mim.dev/v1alpha1
kind: PamServer
metadata: {name: prefixed}
spec: {url: 'https://pam.example.com:8086/mim/'}`)
	g.Expect(k8sClient.Create(context.Background(), server)).To(Succeed())
	typedServer := &pamv1.PamServer{}
	g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(server), typedServer)).To(Succeed())
	g.Expect(typedServer.Spec.Timeout.Duration.String()).To(Equal("30s"))
}

func TestRequestIDIsImmutable(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	el := elevation(ns, "immutable", randomGUID(), func(el *pamv1.PamElevation) { el.Spec.DeletionPolicy = pamv1.DeletionPolicyOrphan })
	create(t, el)

	patch := client.MergeFrom(el.DeepCopy())
	el.Spec.RequestID = randomGUID()
	err := k8sClient.Patch(context.Background(), el, patch)
	g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
	g.Expect(err.Error()).To(ContainSubstring("requestID is immutable"))
}

// TestSpecTransitionsAreRefused: what identifies the request cannot change once set, and a close
// asked for cannot be taken back.
func TestSpecTransitionsAreRefused(t *testing.T) {
	ns := newNamespace(t)
	t.Cleanup(func() { deleteAllElevations(t, ns) })
	orphan := func(el *pamv1.PamElevation) {
		el.Spec.DeletionPolicy = pamv1.DeletionPolicyOrphan
		el.Spec.ServerRef.Name = "no-such-server" // stalls at ServerNotFound: PAM is never called
	}
	createMode := func(el *pamv1.PamElevation) {
		orphan(el)
		el.Spec.RequestID = ""
		el.Spec.Request = &pamv1.ElevationRequest{Role: "SQL Admins", Justification: "INC-4711"}
	}
	cases := []struct {
		name   string
		mutate func(*pamv1.PamElevation)
		change func(*pamv1.PamElevation)
		want   string
	}{
		{"the request changed", createMode, func(el *pamv1.PamElevation) { el.Spec.Request.Justification = "INC-4712" },
			"request is immutable"},
		{"the request removed for a requestID", createMode, func(el *pamv1.PamElevation) {
			el.Spec.Request, el.Spec.RequestID = nil, randomGUID()
		}, "requestID and request cannot be added or removed"},
		{"a request added to an adopting object", orphan, func(el *pamv1.PamElevation) {
			el.Spec.RequestID, el.Spec.Request = "", &pamv1.ElevationRequest{Role: "SQL Admins", Justification: "x"}
		}, "requestID and request cannot be added or removed"},
		{"closed set back to false", func(el *pamv1.PamElevation) { orphan(el); el.Spec.Closed = true },
			func(el *pamv1.PamElevation) { el.Spec.Closed = false }, "closed cannot be undone"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			el := elevation(ns, "", randomGUID(), tc.mutate)
			el.GenerateName = "transition-"
			create(t, el)
			// A JSON merge patch of the whole spec: a field set to its zero value is sent as null,
			// which is how a user removes it.
			patch := client.MergeFrom(el.DeepCopy())
			tc.change(el)
			err := k8sClient.Patch(context.Background(), el, patch)
			g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
			g.Expect(err.Error()).To(ContainSubstring(tc.want))
		})
	}
	t.Run("closed removed after true", func(t *testing.T) {
		g := NewWithT(t)
		el := elevation(ns, "closed-removed", randomGUID(), func(el *pamv1.PamElevation) { orphan(el); el.Spec.Closed = true })
		create(t, el)
		err := k8sClient.Patch(context.Background(), el, client.RawPatch(types.JSONPatchType, []byte(`[{"op":"remove","path":"/spec/closed"}]`)))
		g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
		g.Expect(err.Error()).To(ContainSubstring("closed cannot be undone"))
	})
}
