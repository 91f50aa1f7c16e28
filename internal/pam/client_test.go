package pam_test

import (
	"context"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/internal/pam"
	"github.com/pam-operator/pam-operator/internal/pam/auth"
	"github.com/pam-operator/pam-operator/pamapi"
)

const testRoleID = "2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d"

const (
	user     = "PRIV\\jen"
	password = "s3cret-canary"
)

// newEmulator serves an emulator with one account over real HTTP and returns it with its URL.
func newEmulator(t *testing.T) (*emulator.Server, string) {
	t.Helper()
	emu := emulator.New(emulator.Options{Users: map[string]string{user: password}})
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	return emu, srv.URL
}

func newClient(t *testing.T, cfg pam.Config) pam.Client {
	t.Helper()
	if cfg.Auth == nil {
		cfg.Auth = auth.Basic(user, password)
	}
	c, err := pam.NewClient(cfg)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

func TestCreateGetClose(t *testing.T) {
	g := NewWithT(t)
	emu, url := newEmulator(t)
	role := emu.AddRole(emulator.Role{DisplayName: "Domain Admins", TTL: 8 * time.Hour})
	c := newClient(t, pam.Config{URL: url, Version: "1"})
	ctx := context.Background()

	created, err := c.Create(ctx, pam.CreateOptions{RoleID: role.ID, TTL: time.Hour, Justification: "maintenance"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(created.Status).To(Equal(pamapi.StatusActive))
	g.Expect(created.RequestedTTL).To(Equal(time.Hour))

	got, err := c.Get(ctx, strings.ToUpper(created.ID))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got.ID).To(Equal(created.ID))
	g.Expect(got.ExpirationTime).To(BeTemporally("~", time.Now().Add(time.Hour), 5*time.Second))

	// The close is a body-less POST: the emulator answers 411 like IIS unless Content-Length: 0 is sent.
	g.Expect(c.Close(ctx, created.ID)).To(Succeed())
	got, err = c.Get(ctx, created.ID)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got.Status).To(Equal(pamapi.StatusClosed))
	attempts, successes := emu.CloseCalls(created.ID)
	g.Expect([]int{attempts, successes}).To(Equal([]int{1, 1}))
}

func TestURLPrefixAndVersion(t *testing.T) {
	g := NewWithT(t)
	emu := emulator.New(emulator.Options{})
	var paths []string
	mux := http.NewServeMux()
	mux.Handle("/mim/pam/", http.StripPrefix("/mim/pam", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.Path+"?"+r.URL.RawQuery)
		emu.ServeHTTP(w, r)
	})))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	id := emu.AddRequest(emulator.Request{RoleID: "2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d", RequestedTTL: time.Hour}).ID

	c := newClient(t, pam.Config{URL: srv.URL + "/mim/pam/", Version: "1", Auth: func(rt http.RoundTripper) http.RoundTripper { return rt }})
	g.Expect(c.Close(context.Background(), id)).To(Succeed())
	g.Expect(paths).To(Equal([]string{"/api/pamresources/pamrequests(guid'" + id + "')/Close?v=1"}))

	_, err := c.Get(context.Background(), id)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(paths[1]).To(HavePrefix("/api/pamresources/pamrequests?v=1&$filter=RequestId%20eq%20guid%27" + id))

	unsupported := newClient(t, pam.Config{URL: srv.URL + "/mim/pam", Version: "2", Auth: func(rt http.RoundTripper) http.RoundTripper { return rt }})
	err = unsupported.Close(context.Background(), id)
	g.Expect(pam.ClassOf(err)).To(Equal(pam.ClassOther))
	g.Expect(pam.StatusCodeOf(err)).To(Equal(http.StatusBadRequest))
}

func TestErrorClasses(t *testing.T) {
	emu, url := newEmulator(t)
	id := emu.AddRequest(emulator.Request{Owner: user, RoleID: "2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d", RequestedTTL: time.Hour}).ID
	cases := []struct {
		reason     string
		fault      *emulator.Fault
		auth       func(http.RoundTripper) http.RoundTripper
		requestID  string
		class      pam.Class
		status     int
		retryAfter time.Duration
		inMessage  string
	}{
		{reason: "wrong password is Auth, from IIS's HTML 401", auth: auth.Basic(user, "wrong"), requestID: id,
			class: pam.ClassAuth, status: 401, inMessage: "HTTP 401"},
		{reason: "503 with Retry-After is Retryable", fault: &emulator.Fault{Status: 503, RetryAfter: "7", Times: 1}, requestID: id,
			class: pam.ClassRetryable, status: 503, retryAfter: 7 * time.Second},
		{reason: "408 is Retryable", fault: &emulator.Fault{Status: 408, Times: 1}, requestID: id, class: pam.ClassRetryable, status: 408},
		{reason: "429 is Retryable", fault: &emulator.Fault{Status: 429, RetryAfter: "1", Times: 1}, requestID: id,
			class: pam.ClassRetryable, status: 429, retryAfter: time.Second},
		{reason: "500 is Retryable", fault: &emulator.Fault{Status: 500, Times: 1}, requestID: id, class: pam.ClassRetryable, status: 500},
		{reason: "403 is Auth", fault: &emulator.Fault{Status: 403, Times: 1}, requestID: id, class: pam.ClassAuth, status: 403},
		{reason: "a dropped connection is Retryable", fault: &emulator.Fault{Drop: true, Times: 1}, requestID: id,
			class: pam.ClassRetryable, inMessage: "connection failed"},
		{reason: "an unknown request is NotFound", requestID: "00000000-0000-4000-8000-000000000000", class: pam.ClassNotFound, status: 404},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			emu.ClearFaults()
			if tc.fault != nil {
				f := *tc.fault
				f.Endpoint = emulator.EndpointCloseRequest
				emu.InjectFault(f)
			}
			c := newClient(t, pam.Config{URL: url, Auth: tc.auth})
			err := c.Close(context.Background(), tc.requestID)
			g.Expect(err).To(HaveOccurred())
			g.Expect(pam.ClassOf(err)).To(Equal(tc.class), err.Error())
			g.Expect(pam.StatusCodeOf(err)).To(Equal(tc.status))
			g.Expect(pam.RetryAfterOf(err)).To(Equal(tc.retryAfter))
			g.Expect(err.Error()).To(ContainSubstring(tc.inMessage))
			g.Expect(err.Error()).NotTo(ContainSubstring(password))
		})
	}
}

func TestTimeoutIsRetryable(t *testing.T) {
	g := NewWithT(t)
	emu, url := newEmulator(t)
	emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointListRequests, Delay: 5 * time.Second, Times: 1})
	c := newClient(t, pam.Config{URL: url, Timeout: 100 * time.Millisecond})
	err := c.List(context.Background(), "", func(pam.Request) {})
	g.Expect(pam.ClassOf(err)).To(Equal(pam.ClassRetryable))
	g.Expect(err.Error()).To(ContainSubstring("timed out"))
}

func TestGetOfAnotherAccountsRequestIsNotFound(t *testing.T) {
	g := NewWithT(t)
	emu, url := newEmulator(t)
	id := emu.AddRequest(emulator.Request{Owner: "PRIV\\bob", RoleID: "2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d", RequestedTTL: time.Hour}).ID
	_, err := newClient(t, pam.Config{URL: url}).Get(context.Background(), id)
	g.Expect(pam.ClassOf(err)).To(Equal(pam.ClassNotFound))
}

func TestTLSWithCABundleSpeaksHTTP11(t *testing.T) {
	g := NewWithT(t)
	emu := emulator.New(emulator.Options{})
	var protos []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		protos = append(protos, r.Proto)
		emu.ServeHTTP(w, r)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})

	c := newClient(t, pam.Config{URL: srv.URL, CABundle: caPEM, Auth: func(rt http.RoundTripper) http.RoundTripper { return rt }})
	err := c.List(context.Background(), "", func(pam.Request) {})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(protos).To(Equal([]string{"HTTP/1.1"}), "IIS does not do Windows authentication over HTTP/2")

	// Without the CA the server's certificate is refused, and no option skips verification.
	untrusting := newClient(t, pam.Config{URL: srv.URL, Auth: func(rt http.RoundTripper) http.RoundTripper { return rt }})
	err = untrusting.List(context.Background(), "", func(pam.Request) {})
	g.Expect(err).To(HaveOccurred())
	g.Expect(pam.ClassOf(err)).To(Equal(pam.ClassOther), "a certificate problem needs a person, not retries")
	g.Expect(err.Error()).To(ContainSubstring("certificate"))

	_, err = pam.NewClient(pam.Config{URL: srv.URL, CABundle: []byte("not PEM")})
	g.Expect(err).To(MatchError(ContainSubstring("caBundle")))
}

func TestHostileAnswers(t *testing.T) {
	var otherHostHits atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { otherHostHits.Add(1) }))
	defer other.Close()
	cases := []struct {
		reason  string
		handler http.HandlerFunc
		class   pam.Class
		is      error
	}{
		{"a redirect to another host is not followed", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other.URL+"/steal", http.StatusFound)
		}, pam.ClassOther, nil},
		{"an oversized body is refused", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"value":[`))
			_, _ = w.Write([]byte(strings.Repeat(" ", 9<<20)))
			_, _ = w.Write([]byte(`]}`))
		}, pam.ClassOther, pam.ErrAnswerTooLarge},
		{"a body cut short is a dropped call", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1000")
			_, _ = w.Write([]byte(`{"value":[{"RequestId":"5ec10e61-cdd1-404e-a18e-740467d87dbf"},`))
		}, pam.ClassRetryable, nil},
		{"invalid JSON", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`{"value":[{`)) }, pam.ClassOther, nil},
		{"HTML with 200", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`<html>login</html>`)) }, pam.ClassOther, nil},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			err := newClient(t, pam.Config{URL: srv.URL}).List(context.Background(), "", func(pam.Request) {})
			g.Expect(err).To(HaveOccurred())
			g.Expect(pam.ClassOf(err)).To(Equal(tc.class), err.Error())
			if tc.is != nil {
				g.Expect(err).To(MatchError(tc.is))
			}
		})
	}
	NewWithT(t).Expect(otherHostHits.Load()).To(BeZero())
}

func TestCookiesAreKept(t *testing.T) {
	g := NewWithT(t)
	emu := emulator.New(emulator.Options{})
	var sawCookie []bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := r.Cookie("session")
		sawCookie = append(sawCookie, err == nil)
		http.SetCookie(w, &http.Cookie{Name: "session", Value: "abc", Path: "/"})
		emu.ServeHTTP(w, r)
	}))
	defer srv.Close()
	c := newClient(t, pam.Config{URL: srv.URL, Auth: func(rt http.RoundTripper) http.RoundTripper { return rt }})
	for range 2 {
		err := c.List(context.Background(), "", func(pam.Request) {})
		g.Expect(err).NotTo(HaveOccurred())
	}
	g.Expect(sawCookie).To(Equal([]bool{false, true}))
}

func TestParseServerURL(t *testing.T) {
	cases := []struct {
		reason, in string
		ok         bool
	}{
		{"https with port and prefix", "https://pam.contoso.com:8086/mim/", true},
		{"http", "http://localhost:8086", true},
		{"relative", "/api", false},
		{"ftp", "ftp://pam", false},
		{"user information", "https://jen:pw@pam", false},
		{"query", "https://pam/?v=1", false},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			_, err := pam.ParseServerURL(tc.in)
			NewWithT(t).Expect(err == nil).To(Equal(tc.ok), "%v", err)
		})
	}
}

func TestRoles(t *testing.T) {
	g := NewWithT(t)
	emu := emulator.New(emulator.Options{Users: map[string]string{user: password}})
	var queries []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		queries = append(queries, r.URL.RawQuery)
		emu.ServeHTTP(w, r)
	}))
	defer srv.Close()
	ops := emu.AddRole(emulator.Role{ID: "5EC10E61-CDD1-404E-A18E-740467D87DBF", DisplayName: "Ops", Description: "operators", TTL: 2 * time.Hour})
	office := emu.AddRole(emulator.Role{DisplayName: "Domain Admins", TTL: time.Hour, MFAEnabled: true, ApprovalEnabled: true,
		AvailabilityWindowEnabled: true, AvailableFrom: time.Date(2015, 9, 25, 8, 0, 0, 0, time.UTC),
		AvailableTo: time.Date(2015, 9, 25, 17, 0, 0, 0, time.UTC)})

	c := newClient(t, pam.Config{URL: srv.URL, Version: "1"})
	roles, err := c.Roles(context.Background())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(queries).To(Equal([]string{"v=1"}))
	g.Expect(roles).To(Equal([]pam.Role{
		{ID: "5ec10e61-cdd1-404e-a18e-740467d87dbf", DisplayName: "Ops", Description: "operators", TTL: 2 * time.Hour},
		{ID: office.ID, DisplayName: "Domain Admins", TTL: time.Hour, MFAEnabled: true, ApprovalEnabled: true,
			AvailabilityWindowEnabled: true, AvailableFrom: time.Date(2015, 9, 25, 8, 0, 0, 0, time.UTC),
			AvailableTo: time.Date(2015, 9, 25, 17, 0, 0, 0, time.UTC)},
	}))
	g.Expect(ops.ID).To(Equal(roles[0].ID))

	emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointListRoles, Status: 503, RetryAfter: "4", Times: 1})
	_, err = c.Roles(context.Background())
	g.Expect(pam.ClassOf(err)).To(Equal(pam.ClassRetryable))
	g.Expect(pam.RetryAfterOf(err)).To(Equal(4 * time.Second))
	g.Expect(err.Error()).To(HavePrefix("PAM roles: HTTP 503"))

	_, err = newClient(t, pam.Config{URL: srv.URL, Auth: auth.Basic(user, "wrong")}).Roles(context.Background())
	g.Expect(pam.ClassOf(err)).To(Equal(pam.ClassAuth))
}

// TestCreateAnsweredWith200: the reference's example answers 201, its code table 200; the
// request object comes with either.
func TestCreateAnsweredWith200(t *testing.T) {
	g := NewWithT(t)
	emu := emulator.New(emulator.Options{})
	role := emu.AddRole(emulator.Role{DisplayName: "Ops"})
	var rewritten atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		emu.ServeHTTP(statusRewriter{ResponseWriter: w, from: http.StatusCreated, to: http.StatusOK, count: &rewritten}, r)
	}))
	defer srv.Close()
	c := newClient(t, pam.Config{URL: srv.URL, Auth: func(rt http.RoundTripper) http.RoundTripper { return rt }})
	created, err := c.Create(context.Background(), pam.CreateOptions{RoleID: role.ID, TTL: time.Minute})
	g.Expect(err).NotTo(HaveOccurred())
	stored, ok := emu.Request(created.ID)
	g.Expect(ok).To(BeTrue())
	g.Expect(created.Status).To(Equal(stored.Status))
	g.Expect(rewritten.Load()).To(Equal(int32(1)), "the client was answered 200")
}

// statusRewriter answers to instead of from, counting how often.
type statusRewriter struct {
	http.ResponseWriter
	from, to int
	count    *atomic.Int32
}

func (w statusRewriter) WriteHeader(code int) {
	if code == w.from {
		code = w.to
		w.count.Add(1)
	}
	w.ResponseWriter.WriteHeader(code)
}

// TestCreateOutcome: a create that may have made the request says so (ErrCreateOutcomeUnknown)
// so that the caller lists before creating again; one that cannot have does not, so that the
// caller need not. Each case counts the requests the emulator holds afterwards.
func TestCreateOutcome(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedURL := "http://" + closed.Addr().String()
	_ = closed.Close() // nothing listens there: the dial is refused before anything is sent

	cases := []struct {
		reason string
		fault  *emulator.Fault
		// url replaces the emulator's; password replaces the right one.
		url, password string
		roleID        string
		timeout       time.Duration
		unknown       bool
		class         pam.Class
		status        int
		// made is how many requests the emulator holds afterwards.
		made int
	}{
		{reason: "the answer is lost after the request was made", fault: &emulator.Fault{LoseResponse: true},
			unknown: true, class: pam.ClassRetryable, made: 1},
		{reason: "201 with a body cut in half", fault: &emulator.Fault{MalformedBody: true},
			unknown: true, class: pam.ClassOther, status: 201, made: 1},
		{reason: "the connection dropped before an answer", fault: &emulator.Fault{Drop: true},
			unknown: true, class: pam.ClassRetryable},
		{reason: "no answer within the timeout", fault: &emulator.Fault{Delay: time.Hour}, timeout: 200 * time.Millisecond,
			unknown: true, class: pam.ClassRetryable},
		{reason: "503: a server error may come after the work", fault: &emulator.Fault{Status: 503},
			unknown: true, class: pam.ClassRetryable, status: 503},
		{reason: "408", fault: &emulator.Fault{Status: 408}, unknown: true, class: pam.ClassRetryable, status: 408},
		{reason: "429 refuses the call unmade", fault: &emulator.Fault{Status: 429}, class: pam.ClassRetryable, status: 429},
		{reason: "400 for an unknown role", roleID: "00000000-0000-4000-8000-000000000000", class: pam.ClassOther, status: 400},
		{reason: "a refused login", password: "wrong", class: pam.ClassAuth, status: 401},
		{reason: "a refused dial sent nothing", url: refusedURL, class: pam.ClassRetryable},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			emu, url := newEmulator(t)
			role := emu.AddRole(emulator.Role{DisplayName: "Ops"})
			if tc.fault != nil {
				f := *tc.fault
				f.Endpoint, f.Times = emulator.EndpointCreateRequest, 1
				emu.InjectFault(f)
			}
			cfg := pam.Config{URL: url, Timeout: tc.timeout}
			if tc.url != "" {
				cfg.URL = tc.url
			}
			if tc.password != "" {
				cfg.Auth = auth.Basic(user, tc.password)
			}
			roleID := role.ID
			if tc.roleID != "" {
				roleID = tc.roleID
			}
			created, err := newClient(t, cfg).Create(context.Background(), pam.CreateOptions{RoleID: roleID, TTL: time.Minute, Justification: "x"})
			g.Expect(err).To(HaveOccurred())
			g.Expect(created).To(BeNil())
			g.Expect(errors.Is(err, pam.ErrCreateOutcomeUnknown)).To(Equal(tc.unknown), err.Error())
			if tc.unknown {
				g.Expect(err.Error()).To(HaveSuffix("(the request may have been made)"))
			}
			g.Expect(pam.ClassOf(err)).To(Equal(tc.class), err.Error())
			g.Expect(pam.StatusCodeOf(err)).To(Equal(tc.status))
			g.Expect(emu.Requests()).To(HaveLen(tc.made))
		})
	}
}

// TestCreateUnreadableSuccess: a 2xx whose body cannot be read says the request may exist,
// however the body fails.
func TestCreateUnreadableSuccess(t *testing.T) {
	cases := []struct {
		reason, body string
	}{
		{"an empty 201", ""},
		{"a 201 without a RequestId", `{"RequestStatus":"Active"}`},
		{"an HTML page", "<html>signed out</html>"},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(http.StatusCreated)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			_, err := newClient(t, pam.Config{URL: srv.URL}).Create(context.Background(), pam.CreateOptions{RoleID: testRoleID, TTL: time.Minute})
			g.Expect(err).To(MatchError(pam.ErrCreateOutcomeUnknown))
			g.Expect(pam.StatusCodeOf(err)).To(Equal(http.StatusCreated))
		})
	}
}

// TestFindALostCreate: the filter a caller builds after an unknown outcome finds the request
// the lost create made, and only it, over real HTTP; the justification's quote is escaped.
func TestFindALostCreate(t *testing.T) {
	g := NewWithT(t)
	emu, url := newEmulator(t)
	role := emu.AddRole(emulator.Role{DisplayName: "Ops"})
	other := emu.AddRole(emulator.Role{DisplayName: "Other"})
	c := newClient(t, pam.Config{URL: url, Version: "1"})
	ctx := context.Background()
	const justification = "INC-4711: it's urgent [pam-operator team-a/sql 0f3e]"
	before := time.Now()

	_, err := c.Create(ctx, pam.CreateOptions{RoleID: other.ID, TTL: time.Minute, Justification: justification})
	g.Expect(err).NotTo(HaveOccurred())
	_, err = c.Create(ctx, pam.CreateOptions{RoleID: role.ID, TTL: time.Minute, Justification: "INC-4711: it's urgent"})
	g.Expect(err).NotTo(HaveOccurred())
	emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointCreateRequest, LoseResponse: true, Times: 1})
	_, err = c.Create(ctx, pam.CreateOptions{RoleID: strings.ToUpper(role.ID), TTL: time.Minute, Justification: justification})
	g.Expect(err).To(MatchError(pam.ErrCreateOutcomeUnknown))

	byRole, err := pam.FilterCreatedByRoleSince(strings.ToUpper(role.ID), before.Add(-time.Second))
	g.Expect(err).NotTo(HaveOccurred())
	var found []pam.Request
	err = c.List(ctx, byRole+" and "+pam.FilterJustification(justification), func(r pam.Request) { found = append(found, r) })
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(found).To(HaveLen(1))
	g.Expect(found[0].RoleID).To(Equal(role.ID))
	g.Expect(found[0].Justification).To(Equal(justification))

	found = nil
	later, _ := pam.FilterCreatedByRoleSince(role.ID, time.Now().Add(time.Hour))
	g.Expect(c.List(ctx, later, func(r pam.Request) { found = append(found, r) })).To(Succeed())
	g.Expect(found).To(BeEmpty(), "created before the window")

	_, err = pam.FilterCreatedByRoleSince("admins", before)
	g.Expect(err).To(MatchError(ContainSubstring("not a GUID")))
	g.Expect(pam.StringLiteral("it's ''x''")).To(Equal("'it''s ''''x'''''"))
}
