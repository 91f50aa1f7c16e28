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

	step("Done: closed on delete, and closed at expiry, each with exactly one call to PAM")
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
