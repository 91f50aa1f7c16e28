package controllers_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/cel-go/cel"
	. "github.com/onsi/gomega"
	lua "github.com/yuin/gopher-lua"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/emulator"
)

// TestGitOpsHealth puts real objects in each state on the API server and checks what GitOps
// tools make of them: kstatus (Flux's and kpt's library), the shipped Argo CD Lua health check
// run by gopher-lua (the interpreter Argo CD embeds), and the shipped Flux healthCheckExprs
// evaluated with cel-go.
func TestGitOpsHealth(t *testing.T) {
	luaScript, err := os.ReadFile(filepath.Join("..", "config", "argocd", "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	fluxExprs := loadFluxExprs(t)
	ns := newNamespace(t)
	withServer(t, ns)
	create(t, basicSecret(ns, "wrong", pamUser, "wrong-password"))
	wrong := basicServerSpec("wrong")
	create(t, &pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "wrong"}, Spec: wrong})
	past := metav1.NewTime(time.Now().Add(-time.Minute))

	cases := []struct {
		name   string
		el     *pamv1.PamElevation
		before func()
		// reached says the object is in the state under test.
		reached func(g Gomega, el *pamv1.PamElevation)
		kstatus status.Status
		argo    string
		flux    string
	}{
		{name: "active", el: elevation(ns, "active", seedRequest(pamUser, time.Hour)),
			reached: func(g Gomega, el *pamv1.PamElevation) {
				expectCondition(g, el.Status.Conditions, pamv1.ConditionReady, metav1.ConditionTrue, pamv1.ReasonActive)
			},
			kstatus: status.CurrentStatus, argo: "Healthy", flux: "current"},
		{name: "closed at expiry", el: elevation(ns, "expired", seedRequest(pamUser, time.Hour),
			func(el *pamv1.PamElevation) { el.Spec.TTL = &metav1.Duration{Duration: time.Second} }),
			reached: func(g Gomega, el *pamv1.PamElevation) {
				expectCondition(g, el.Status.Conditions, pamv1.ConditionClosed, metav1.ConditionTrue, pamv1.ReasonExpired)
			},
			kstatus: status.CurrentStatus, argo: "Healthy", flux: "current"},
		{name: "retrying a close", el: elevation(ns, "retrying", seedRequest(pamUser, time.Hour),
			func(el *pamv1.PamElevation) { el.Spec.ExpiresAt = &past }),
			before: func() {
				pamServer.InjectFault(emulator.Fault{Endpoint: emulator.EndpointCloseRequest, Status: 503})
			},
			reached: func(g Gomega, el *pamv1.PamElevation) {
				expectCondition(g, el.Status.Conditions, pamv1.ConditionReconciling, metav1.ConditionTrue, pamv1.ReasonPAMUnavailable)
			},
			kstatus: status.InProgressStatus, argo: "Progressing", flux: "inProgress"},
		{name: "credentials refused", el: elevation(ns, "unauthorized", seedRequest(pamUser, time.Hour),
			func(el *pamv1.PamElevation) { el.Spec.ServerRef.Name = "wrong" }),
			reached: refusedOrPaused,
			kstatus: status.FailedStatus, argo: "Degraded", flux: "failed"},
		{name: "request not found", el: elevation(ns, "not-found", randomGUID()),
			reached: func(g Gomega, el *pamv1.PamElevation) {
				expectCondition(g, el.Status.Conditions, pamv1.ConditionStalled, metav1.ConditionTrue, pamv1.ReasonRequestNotFound)
			},
			kstatus: status.FailedStatus, argo: "Degraded", flux: "failed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			if tc.before != nil {
				tc.before()
				t.Cleanup(pamServer.ClearFaults)
			}
			create(t, tc.el)
			waitFor(t, tc.el, tc.reached)

			obj := toUnstructured(t, tc.el)
			res, err := status.Compute(obj)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(res.Status).To(Equal(tc.kstatus), "kstatus: %s", res.Message)

			health, message := argoHealth(t, string(luaScript), obj.Object)
			g.Expect(health).To(Equal(tc.argo), "Argo CD: %s", message)

			g.Expect(fluxHealth(t, fluxExprs, obj.Object)).To(Equal(tc.flux))
		})
	}
}

func toUnstructured(t *testing.T, el *pamv1.PamElevation) *unstructured.Unstructured {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(el)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(pamv1.GroupVersion.WithKind("PamElevation"))
	return u
}

// argoHealth runs the health check as Argo CD does: the object as the global obj, the returned
// table's status and message.
func argoHealth(t *testing.T, script string, obj map[string]any) (string, string) {
	t.Helper()
	L := lua.NewState()
	defer L.Close()
	L.SetGlobal("obj", toLua(L, obj))
	fn, err := L.LoadString(script)
	if err != nil {
		t.Fatalf("health.lua does not load: %v", err)
	}
	L.Push(fn)
	if err := L.PCall(0, 1, nil); err != nil {
		t.Fatalf("health.lua failed: %v", err)
	}
	ret, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		t.Fatalf("health.lua returned %v, want a table", L.Get(-1))
	}
	return ret.RawGetString("status").String(), ret.RawGetString("message").String()
}

func toLua(L *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case map[string]any:
		tbl := L.NewTable()
		for k, x := range v {
			tbl.RawSetString(k, toLua(L, x))
		}
		return tbl
	case []any:
		tbl := L.NewTable()
		for _, x := range v {
			tbl.Append(toLua(L, x))
		}
		return tbl
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	}
	return lua.LNil
}

type fluxExprs struct {
	InProgress string `json:"inProgress"`
	Failed     string `json:"failed"`
	Current    string `json:"current"`
}

func loadFluxExprs(t *testing.T) fluxExprs {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "config", "flux", "healthcheck.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var list []fluxExprs
	if err := yaml.Unmarshal(data, &list); err != nil || len(list) != 1 {
		t.Fatalf("config/flux/healthcheck.yaml: %v", err)
	}
	return list[0]
}

// fluxHealth evaluates the expressions the way Flux does: the object's top-level fields as
// variables, inProgress first, then failed, then current.
func fluxHealth(t *testing.T, exprs fluxExprs, obj map[string]any) string {
	t.Helper()
	env, err := cel.NewEnv(
		cel.Variable("apiVersion", cel.DynType), cel.Variable("kind", cel.DynType),
		cel.Variable("metadata", cel.DynType), cel.Variable("spec", cel.DynType), cel.Variable("status", cel.DynType),
	)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct{ name, expr string }{
		{"inProgress", exprs.InProgress}, {"failed", exprs.Failed}, {"current", exprs.Current},
	} {
		ast, iss := env.Compile(step.expr)
		if iss.Err() != nil {
			t.Fatalf("%s does not compile: %v", step.name, iss.Err())
		}
		prg, err := env.Program(ast)
		if err != nil {
			t.Fatal(err)
		}
		out, _, err := prg.Eval(obj)
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if out.Value() == true {
			return step.name
		}
	}
	return "unknown"
}
