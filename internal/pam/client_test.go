package pam_test

import (
	"context"
	"encoding/pem"
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
