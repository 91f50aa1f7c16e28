package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/internal/ntlmssp"
	"github.com/pam-operator/pam-operator/internal/pam"
	"github.com/pam-operator/pam-operator/internal/pam/auth"
	"github.com/pam-operator/pam-operator/internal/pam/auth/ntlm"
	"github.com/pam-operator/pam-operator/pamapi"
)

const demoNamespace = "pam-demo"

// runDemo walks through the operator's main job with the real kubectl: a close on delete and a
// close at expiry. Every step checks its outcome, so the demo fails loudly if one did not happen.
func runDemo(env *localEnv) error {
	ctx := context.Background()
	step := func(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }
	run := func(stdin string, args ...string) (string, error) {
		fmt.Printf("$ kubectl %s\n", strings.Join(args, " "))
		out, err := env.kubectl(ctx, stdin, args...)
		fmt.Print(indent(out))
		return out, err
	}

	step("Jen asks MIM PAM for two elevations into the role Domain Admins (through the PAM REST API)")
	role := env.pam.AddRole(emulator.Role{DisplayName: "Domain Admins", TTL: 8 * time.Hour})
	clientAuth := auth.Basic(demoUser, demoPassword)
	if env.auth == "ntlm" {
		creds, err := ntlmssp.NewCredentials(demoUser, "", demoPassword)
		if err != nil {
			return err
		}
		clientAuth = ntlm.Wrap(creds)
	}
	pc, err := pam.NewClient(pam.Config{URL: env.pamURL, CABundle: []byte(env.caBundle), Auth: clientAuth})
	if err != nil {
		return err
	}
	longLived, err := pc.Create(ctx, pam.CreateOptions{RoleID: role.ID, TTL: 4 * time.Hour, Justification: "database maintenance"})
	if err != nil {
		return fmt.Errorf("requesting elevation: %w", err)
	}
	shortLived, err := pc.Create(ctx, pam.CreateOptions{RoleID: role.ID, TTL: 4 * time.Hour, Justification: "quick fix"})
	if err != nil {
		return fmt.Errorf("requesting elevation: %w", err)
	}
	fmt.Printf("    request %s: %s for %s\n", longLived.ID, longLived.Status, longLived.RequestedTTL)
	fmt.Printf("    request %s: %s for %s\n", shortLived.ID, shortLived.Status, shortLived.RequestedTTL)

	logPath := filepath.Join(env.stateDir, "manager.log")
	step("Start the operator (%s; its log goes to %s)", relative(env.root, env.manager), relative(env.root, logPath))
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	managerCtx, stopManager := context.WithCancel(ctx)
	manager := env.managerCommand(managerCtx, nil)
	manager.Stdout, manager.Stderr = logFile, logFile
	if err := manager.Start(); err != nil {
		stopManager()
		return fmt.Errorf("starting the manager: %w", err)
	}
	defer func() {
		stopManager()
		_ = manager.Wait()
	}()

	step("Tell the operator how to reach PAM, as Jen: a Secret and a PamServer")
	if _, err := run("", "create", "namespace", demoNamespace); err != nil {
		return err
	}
	if _, err := run(fmt.Sprintf(serverManifest, demoNamespace, demoUser, demoPassword, demoNamespace, env.pamURL, env.caBundle, env.auth), "apply", "-f", "-"); err != nil {
		return err
	}

	step("Track both requests with PamElevations: one closed on delete, one with a ttl of 15s")
	if _, err := run(fmt.Sprintf(elevationsManifest, demoNamespace, longLived.ID, demoNamespace, shortLived.ID), "apply", "-f", "-"); err != nil {
		return err
	}
	if _, err := run("", "-n", demoNamespace, "wait", "--for=condition=Ready", "pamelevation", "--all", "--timeout=60s"); err != nil {
		return err
	}
	if _, err := run("", "-n", demoNamespace, "get", "pamelevations"); err != nil {
		return err
	}

	step("Delete db-maintenance: the operator closes its request in PAM before the object goes")
	if _, err := run("", "-n", demoNamespace, "delete", "pamelevation", "db-maintenance", "--timeout=60s"); err != nil {
		return err
	}
	if err := expectClosedOnce(env.pam, longLived.ID); err != nil {
		return err
	}
	if out, err := env.kubectl(ctx, "", "-n", demoNamespace, "get", "pamelevation", "db-maintenance", "--ignore-not-found", "-o", "name"); err != nil || strings.TrimSpace(out) != "" {
		return fmt.Errorf("db-maintenance still exists after delete: %q %v", out, err)
	}
	fmt.Printf("    PAM shows request %s Closed after exactly one Close; the object is gone\n", longLived.ID)

	step("Wait for quick-fix's ttl: the operator closes its request at expiry")
	if _, err := run("", "-n", demoNamespace, "wait", "--for=condition=Closed", "pamelevation/quick-fix", "--timeout=60s"); err != nil {
		return err
	}
	reason, err := run("", "-n", demoNamespace, "get", "pamelevation", "quick-fix", "-o",
		`jsonpath=Closed={.status.conditions[?(@.type=="Closed")].status} reason={.status.conditions[?(@.type=="Closed")].reason}{"\n"}`)
	if err != nil {
		return err
	}
	if !strings.Contains(reason, "Closed=True reason=Expired") {
		return fmt.Errorf("quick-fix: want Closed=True reason=Expired, got %q", reason)
	}
	if err := expectClosedOnce(env.pam, shortLived.ID); err != nil {
		return err
	}
	if _, err := run("", "-n", demoNamespace, "get", "pamelevations"); err != nil {
		return err
	}

	if err := createWalkthrough(ctx, env, step, run); err != nil {
		return err
	}

	step("Done: closed on delete, at expiry and on request, each with exactly one call to PAM")
	return nil
}

// createWalkthrough is create mode: the operator asks PAM for the elevation, which waits for
// an approver; once approved it is Active; closed: true ends it and keeps the object as the
// record; deleting the object then calls PAM no more.
func createWalkthrough(ctx context.Context, env *localEnv, step func(string, ...any), run func(string, ...string) (string, error)) error {
	const approver = `PRIV\ann`
	env.pam.AddRole(emulator.Role{DisplayName: "SQL Admins", TTL: 2 * time.Hour, ApprovalEnabled: true, Approvers: []string{approver}})

	step("Create mode: ask for the role SQL Admins for 1h in a PamElevation; MIM wants an approver")
	if _, err := run(fmt.Sprintf(createManifest, demoNamespace), "apply", "-f", "-"); err != nil {
		return err
	}
	if err := waitForReason(ctx, env, "Ready", "PendingApproval"); err != nil {
		return err
	}
	if _, err := run("", "-n", demoNamespace, "get", "pamelevation", "sql-inc-4711"); err != nil {
		return err
	}
	id, err := env.kubectl(ctx, "", "-n", demoNamespace, "get", "pamelevation", "sql-inc-4711", "-o", "jsonpath={.status.requestID}")
	if err != nil {
		return err
	}
	id = strings.TrimSpace(id)

	step("Ann approves request %s in MIM; the elevation becomes Active and Ready", id)
	if err := env.pam.Approve(id, approver); err != nil {
		return err
	}
	if _, err := run("", "-n", demoNamespace, "wait", "--for=condition=Ready", "pamelevation/sql-inc-4711", "--timeout=60s"); err != nil {
		return err
	}
	if _, err := run("", "-n", demoNamespace, "get", "pamelevation", "sql-inc-4711"); err != nil {
		return err
	}

	step("The work is done early: set closed: true; the request is closed and the object stays as the record")
	if _, err := run("", "-n", demoNamespace, "patch", "pamelevation", "sql-inc-4711", "--type=merge", "-p", `{"spec":{"closed":true}}`); err != nil {
		return err
	}
	if err := waitForReason(ctx, env, "Closed", "CloseRequested"); err != nil {
		return err
	}
	if err := expectClosedOnce(env.pam, id); err != nil {
		return err
	}
	if _, err := run("", "-n", demoNamespace, "get", "pamelevation", "sql-inc-4711", "-o", "wide"); err != nil {
		return err
	}

	step("Delete the record: PAM is not called again")
	if _, err := run("", "-n", demoNamespace, "delete", "pamelevation", "sql-inc-4711", "--timeout=60s"); err != nil {
		return err
	}
	return expectClosedOnce(env.pam, id)
}

// waitForReason polls sql-inc-4711 until its condition has the reason, for at most a minute.
func waitForReason(ctx context.Context, env *localEnv, condType, reason string) error {
	fmt.Printf("    waiting for %s reason %s\n", condType, reason)
	jsonpath := fmt.Sprintf(`jsonpath={.status.conditions[?(@.type=="%s")].reason}`, condType)
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		out, err := env.kubectl(ctx, "", "-n", demoNamespace, "get", "pamelevation", "sql-inc-4711", "-o", jsonpath)
		if err == nil && strings.TrimSpace(out) == reason {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sql-inc-4711: %s reason is %q after a minute, want %s (%v)", condType, out, reason, err)
		}
	}
	return nil
}

func expectClosedOnce(pamServer *emulator.Server, id string) error {
	req, ok := pamServer.Request(id)
	if !ok || req.Status != pamapi.StatusClosed {
		return fmt.Errorf("request %s is %q in PAM, want Closed", id, req.Status)
	}
	if attempts, successes := pamServer.CloseCalls(id); attempts != 1 || successes != 1 {
		return fmt.Errorf("request %s: %d close calls, %d successful; want exactly one", id, attempts, successes)
	}
	return nil
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return "    " + strings.Join(lines, "\n    ") + "\n"
}

func stringsReader(s string) io.Reader { return strings.NewReader(s) }

func relative(root, path string) string {
	if rel, err := filepath.Rel(root, path); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return path
}

const serverManifest = `apiVersion: v1
kind: Secret
metadata:
  namespace: %s
  name: jen-pam-credentials
stringData:
  username: %q
  password: %q
---
apiVersion: pam.mim.dev/v1alpha1
kind: PamServer
metadata:
  namespace: %s
  name: mim
spec:
  url: %s
  caBundle: %q
  version: "1"
  auth:
    %s:
      secretRef:
        name: jen-pam-credentials
`

const createManifest = `apiVersion: pam.mim.dev/v1alpha1
kind: PamElevation
metadata:
  namespace: %s
  name: sql-inc-4711
spec:
  request:
    role: SQL Admins
    justification: "INC-4711: rotate the TDE keys"
    ttl: 1h
  serverRef:
    name: mim
`

const elevationsManifest = `apiVersion: pam.mim.dev/v1alpha1
kind: PamElevation
metadata:
  namespace: %s
  name: db-maintenance
spec:
  requestID: %s
  serverRef:
    name: mim
---
apiVersion: pam.mim.dev/v1alpha1
kind: PamElevation
metadata:
  namespace: %s
  name: quick-fix
spec:
  requestID: %s
  ttl: 15s
  serverRef:
    name: mim
`
