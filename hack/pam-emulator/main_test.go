package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/internal/ntlmssp"
	"github.com/pam-operator/pam-operator/internal/pam"
	"github.com/pam-operator/pam-operator/internal/pam/auth/kerberos"
	"github.com/pam-operator/pam-operator/internal/pam/auth/ntlm"
	"github.com/pam-operator/pam-operator/internal/testing/kdc"
	"github.com/pam-operator/pam-operator/pamapi"
)

func TestParseFault(t *testing.T) {
	cases := []struct {
		reason, spec string
		want         emulator.Fault
		inError      string
	}{
		{reason: "a status until stopped", spec: "close-request:503", want: emulator.Fault{Endpoint: emulator.EndpointCloseRequest, Status: 503}},
		{reason: "a status for N calls", spec: "list-requests:500:3", want: emulator.Fault{Endpoint: emulator.EndpointListRequests, Status: 500, Times: 3}},
		{reason: "a status with Retry-After, positionally", spec: "close-request:429:5:2",
			want: emulator.Fault{Endpoint: emulator.EndpointCloseRequest, Status: 429, RetryAfter: "5", Times: 2}},
		{reason: "a status with Retry-After, by name", spec: "close-request:503:retry-after=7",
			want: emulator.Fault{Endpoint: emulator.EndpointCloseRequest, Status: 503, RetryAfter: "7"}},
		{reason: "every option by name", spec: "approve:500:times=4:fraction=0.25:retry-after=1",
			want: emulator.Fault{Endpoint: emulator.EndpointApprove, Status: 500, Times: 4, Fraction: 0.25, RetryAfter: "1"}},
		{reason: "drop on any endpoint", spec: "any:drop:1", want: emulator.Fault{Drop: true, Times: 1}},
		{reason: "a lost answer", spec: "close-request:lose-response", want: emulator.Fault{Endpoint: emulator.EndpointCloseRequest, LoseResponse: true}},
		{reason: "a create answered with a body cut in half", spec: "create-request:malformed-body:1",
			want: emulator.Fault{Endpoint: emulator.EndpointCreateRequest, MalformedBody: true, Times: 1}},
		{reason: "a delay", spec: "list-requests:delay=2s:4", want: emulator.Fault{Endpoint: emulator.EndpointListRequests, Delay: 2 * time.Second, Times: 4}},
		{reason: "no status", spec: "close-request", inError: "want endpoint:what"},
		{reason: "an unknown endpoint, a typo that would never fire", spec: "close-requests:503", inError: "unknown endpoint"},
		{reason: "not a status", spec: "close-request:abc", inError: "not an HTTP status"},
		{reason: "a status out of range", spec: "close-request:99", inError: "not an HTTP status"},
		{reason: "a bad delay", spec: "close-request:delay=soon", inError: "not a positive duration"},
		{reason: "Retry-After without a status", spec: "close-request:drop:retry-after=1", inError: "goes with a status"},
		{reason: "a fraction above 1", spec: "close-request:503:fraction=2", inError: "between 0 and 1"},
		{reason: "an unknown option", spec: "close-request:503:colour=red", inError: "unknown option"},
		{reason: "times not a number", spec: "close-request:drop:x", inError: "times must be a number"},
		{reason: "too many parts", spec: "close-request:503:1:2:3", inError: "too many parts"},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			got, err := parseFault(tc.spec)
			if tc.inError != "" {
				g.Expect(err).To(MatchError(ContainSubstring(tc.inError)))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got).To(Equal(tc.want))
		})
	}
}

func TestParseRoleAndSeed(t *testing.T) {
	cases := []struct {
		reason, spec string
		users        []string
		want         emulator.Role
		ok           bool
	}{
		{"a name only", "Ops", nil, emulator.Role{DisplayName: "Ops"}, true},
		{"a TTL", "Ops:3600", nil, emulator.Role{DisplayName: "Ops", TTL: time.Hour}, true},
		{"approval: every account approves", "Admins:60:approval", []string{"a", "b"},
			emulator.Role{DisplayName: "Admins", TTL: time.Minute, ApprovalEnabled: true, Approvers: []string{"a", "b"}}, true},
		{"approval without accounts: the anonymous caller approves", "Admins::approval", nil,
			emulator.Role{DisplayName: "Admins", ApprovalEnabled: true, Approvers: []string{""}}, true},
		{"Processing for a while, a window of office hours", "Ops:60:processing=5s,window=08:00-17:30", nil,
			emulator.Role{DisplayName: "Ops", TTL: time.Minute, Processing: 5 * time.Second, AvailabilityWindowEnabled: true,
				AvailableFrom: time.Date(0, 1, 1, 8, 0, 0, 0, time.UTC), AvailableTo: time.Date(0, 1, 1, 17, 30, 0, 0, time.UTC)}, true},
		{"every option", "Ops::approval,processing=1m,window=22:00-06:00", []string{"a"},
			emulator.Role{DisplayName: "Ops", ApprovalEnabled: true, Approvers: []string{"a"}, Processing: time.Minute, AvailabilityWindowEnabled: true,
				AvailableFrom: time.Date(0, 1, 1, 22, 0, 0, 0, time.UTC), AvailableTo: time.Date(0, 1, 1, 6, 0, 0, 0, time.UTC)}, true},
		{"a bad TTL", "Ops:1h", nil, emulator.Role{}, false},
		{"MFA, which no one could answer without a control API", "Ops:60:mfa", nil, emulator.Role{}, false},
		{"a bad window", "Ops:60:window=8-17", nil, emulator.Role{}, false},
		{"a window without its end", "Ops:60:window=08:00", nil, emulator.Role{}, false},
		{"a processing time that is not a duration", "Ops:60:processing=soon", nil, emulator.Role{}, false},
		{"no name", ":60", nil, emulator.Role{}, false},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			got, err := parseRole(tc.spec, tc.users)
			if !tc.ok {
				g.Expect(err).To(HaveOccurred())
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got).To(Equal(tc.want))
		})
	}

	g := NewWithT(t)
	roles := map[string]string{"Ops": "2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d"}
	req, err := parseSeed(`Ops:60:PRIV\jen`, roles, nil)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(req).To(Equal(emulator.Request{Owner: `PRIV\jen`, RoleID: roles["Ops"], RequestedTTL: time.Minute}))
	req, err = parseSeed("Ops:60", roles, []string{"only"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(req.Owner).To(Equal("only"), "the only account owns it")
	_, err = parseSeed("Nope:60", roles, nil)
	g.Expect(err).To(MatchError(ContainSubstring("no --role named")))
	_, err = parseSeed("Ops:0", roles, nil)
	g.Expect(err).To(MatchError(ContainSubstring("positive")))
}

// syncBuffer is a bytes.Buffer safe to write from the server and read from the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}
func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.buf.String() }

func TestRunServesUntilCancelled(t *testing.T) {
	g := NewWithT(t)
	emu := startRun(t, "--user", `PRIV\jen:s3cret`, "--role", "Ops:3600", "--seed-request", "Ops:600", "--fault", "close-request:503:9:1")
	base := emu.base

	m := regexp.MustCompile(`(?m)^request ([0-9a-f-]{36}) owner="PRIV\\\\jen" status=Active`).FindStringSubmatch(emu.stdout.String())
	g.Expect(m).To(HaveLen(2), "the seeded request's id is printed: %s", emu.stdout.String())
	g.Expect(emu.stdout.String()).To(MatchRegexp(`(?m)^role [0-9a-f-]{36} "Ops" ttl=1h0m0s approval=false$`))

	closeOnce := func() *http.Response {
		req, err := http.NewRequest(http.MethodPost, base+"/api/pamresources/pamrequests(guid'"+m[1]+"')/Close?v=1", http.NoBody)
		g.Expect(err).NotTo(HaveOccurred())
		req.SetBasicAuth(`PRIV\jen`, "s3cret")
		resp, err := http.DefaultClient.Do(req)
		g.Expect(err).NotTo(HaveOccurred())
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	resp := closeOnce()
	g.Expect(resp.StatusCode).To(Equal(503), "the injected fault")
	g.Expect(resp.Header.Get("Retry-After")).To(Equal("9"))
	g.Expect(closeOnce().StatusCode).To(Equal(200))

	emu.stop(t)
	log := emu.stderr.String()
	g.Expect(log).To(ContainSubstring(`fault="status 503 retry-after 9"`))
	g.Expect(strings.Count(log, "/Close?v=1")).To(Equal(2), "one line per call")
	g.Expect(log).NotTo(ContainSubstring("s3cret"))
	g.Expect(log).To(ContainSubstring("stopped"))
}

func TestRunRejectsBadFlags(t *testing.T) {
	cases := []struct {
		reason  string
		args    []string
		inError string
	}{
		{"a user without a password, not echoed", []string{"--user", "s3cret"}, "want name:password"},
		{"a certificate without a key", []string{"--tls-cert", "c.pem"}, "go together"},
		{"a seed for an unknown role", []string{"--seed-request", "Ops:60"}, "no --role"},
		{"a bad fault", []string{"--fault", "nowhere:503"}, "unknown endpoint"},
		{"a stray argument", []string{"serve"}, "unexpected arguments"},
		{"a missing keytab", []string{"--kerberos-keytab", "/nonexistent/http.keytab"}, "--kerberos-keytab"},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			err := run(context.Background(), append([]string{"--listen", "127.0.0.1:0"}, tc.args...), io.Discard, io.Discard, nil)
			g.Expect(err).To(MatchError(ContainSubstring(tc.inError)))
			g.Expect(err.Error()).NotTo(ContainSubstring("s3cret"))
		})
	}
}

// TestRunKerberos serves Negotiate with a service keytab from a real KDC: the operator's PAM
// client with Kerberos credentials closes a request, a caller without a token gets IIS's 401.
func TestRunKerberos(t *testing.T) {
	g := NewWithT(t)
	realm := kdc.Start(t)
	realm.AddPrincipal("jen", "krb-s3cret")
	realm.AddRandomKeyPrincipal("HTTP/127.0.0.1")
	keytab := filepath.Join(t.TempDir(), "http.keytab")
	g.Expect(os.WriteFile(keytab, realm.Keytab("HTTP/127.0.0.1"), 0o600)).To(Succeed())

	emu := startRun(t, "--kerberos-keytab", keytab, "--kerberos-spn", "HTTP/127.0.0.1", "--role", "Ops:3600", "--seed-request", "Ops:600:jen@"+realm.Realm)
	ctx, base := context.Background(), emu.base
	m := regexp.MustCompile(`(?m)^request ([0-9a-f-]{36}) `).FindStringSubmatch(emu.stdout.String())
	g.Expect(m).To(HaveLen(2))

	resp, err := http.Get(base + "/api/pamresources/pamrequests")
	g.Expect(err).NotTo(HaveOccurred())
	resp.Body.Close()
	g.Expect(resp.StatusCode).To(Equal(http.StatusUnauthorized))
	g.Expect(resp.Header.Values("WWW-Authenticate")).To(ContainElement("Negotiate"))

	krb, err := kerberos.New(kerberos.Config{Username: "jen", Password: "krb-s3cret", Krb5Conf: realm.Krb5Conf()})
	g.Expect(err).NotTo(HaveOccurred())
	defer krb.Close()
	pc, err := pam.NewClient(pam.Config{URL: base, Auth: krb.Wrap})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(pc.Close(ctx, m[1])).To(Succeed())
	req, err := pc.Get(ctx, m[1])
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(req.Status).To(Equal(pamapi.StatusClosed))

	emu.stop(t)
	g.Expect(emu.stderr.String()).To(ContainSubstring(`user="jen@` + realm.Realm + `"`))
	g.Expect(emu.stderr.String()).NotTo(ContainSubstring("krb-s3cret"))
}

// TestRunNTLM serves NTLM for the --user accounts: the operator's PAM client with NTLM
// credentials closes a request; a basic-auth caller is refused with IIS's NTLM challenge.
func TestRunNTLM(t *testing.T) {
	g := NewWithT(t)
	emu := startRun(t, "--ntlm", "--user", `PRIV\jen:ntlm-s3cret`, "--role", "Ops:3600", "--seed-request", "Ops:600")
	ctx, base := context.Background(), emu.base
	m := regexp.MustCompile(`(?m)^request ([0-9a-f-]{36}) `).FindStringSubmatch(emu.stdout.String())
	g.Expect(m).To(HaveLen(2))

	req, err := http.NewRequest(http.MethodGet, base+"/api/pamresources/pamrequests", nil)
	g.Expect(err).NotTo(HaveOccurred())
	req.SetBasicAuth(`PRIV\jen`, "ntlm-s3cret")
	resp, err := http.DefaultClient.Do(req)
	g.Expect(err).NotTo(HaveOccurred())
	resp.Body.Close()
	g.Expect(resp.StatusCode).To(Equal(http.StatusUnauthorized))
	g.Expect(resp.Header.Values("WWW-Authenticate")).To(ContainElement("NTLM"))

	creds, err := ntlmssp.NewCredentials(`PRIV\jen`, "", "ntlm-s3cret")
	g.Expect(err).NotTo(HaveOccurred())
	pc, err := pam.NewClient(pam.Config{URL: base, Auth: ntlm.Wrap(creds)})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(pc.Close(ctx, m[1])).To(Succeed())

	emu.stop(t)
	g.Expect(emu.stderr.String()).NotTo(ContainSubstring("ntlm-s3cret"))
}

// runningEmulator is the program as startRun started it.
type runningEmulator struct {
	base           string
	stdout, stderr *syncBuffer
	done           chan error
	cancel         context.CancelFunc
}

// startRun runs the program with args on a free loopback port and returns once it listens.
func startRun(t *testing.T, args ...string) *runningEmulator {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	emu := &runningEmulator{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan error, 1), cancel: cancel}
	addr := make(chan string, 1)
	go func() {
		emu.done <- run(ctx, append([]string{"--listen", "127.0.0.1:0"}, args...), emu.stdout, emu.stderr, func(a string) { addr <- a })
	}()
	select {
	case a := <-addr:
		emu.base = "http://" + a
	case err := <-emu.done:
		t.Fatalf("run ended early: %v; stderr: %s", err, emu.stderr.String())
	}
	return emu
}

// stop cancels the program and expects a graceful stop.
func (e *runningEmulator) stop(t *testing.T) {
	t.Helper()
	e.cancel()
	NewWithT(t).Eventually(e.done, 10*time.Second).Should(Receive(BeNil()), "a graceful stop")
}
