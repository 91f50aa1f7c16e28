package ntlm

import (
	"context"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	. "github.com/onsi/gomega"

	"github.com/pam-operator/pam-operator/emulator/ntlmserver"
	"github.com/pam-operator/pam-operator/internal/ntlmssp"
	"github.com/pam-operator/pam-operator/internal/pam/auth"
	"github.com/pam-operator/pam-operator/internal/testing/testcert"
)

var (
	testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	jen     = ntlmssp.Credentials{Domain: "PRIV", Username: "jen", Password: "s3cret!"}
)

// seededRand is a reproducible source of a client's random bytes.
func seededRand(seed uint64) *rand.ChaCha8 {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	return rand.NewChaCha8(s)
}

// testServer is an httptest server behind an NTLM Server. Its handler answers the account,
// the method and the body it received.
type testServer struct {
	*httptest.Server
	ntlm      atomic.Pointer[ntlmserver.Server]
	hits      atomic.Int32
	mu        sync.Mutex
	schemes   []string // scheme of each request's Authorization header ("" for none)
	rejection string   // the last reason a handshake was refused
}

func newTestServer(t *testing.T, useTLS bool, opts ntlmserver.Options) *testServer {
	t.Helper()
	ts := &testServer{}
	ts.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.hits.Add(1)
		scheme, _, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		ts.mu.Lock()
		ts.schemes = append(ts.schemes, scheme)
		ts.mu.Unlock()
		account, ok := ts.ntlm.Load().Authenticate(w, r)
		if !ok {
			return
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", account, r.Method, body)
	}))
	// The Server is made after the listener starts (it needs the certificate); the
	// connection hook finds it then.
	ts.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return ts.ntlm.Load().ConnContext(ctx, c)
	}
	if useTLS {
		ts.StartTLS()
		if opts.Certificate == nil {
			opts.Certificate = ts.Certificate()
		}
	} else {
		ts.Start()
	}
	t.Cleanup(ts.Close)
	if opts.Users == nil {
		opts.Users = map[string]ntlmserver.User{"jen": {Domain: jen.Domain, Username: jen.Username, Password: jen.Password}}
	}
	opts.Rejected = func(_ *http.Request, err error) {
		ts.mu.Lock()
		ts.rejection = err.Error()
		ts.mu.Unlock()
	}
	s, err := ntlmserver.New(opts)
	if err != nil {
		t.Fatalf("ntlmserver.New: %v", err)
	}
	ts.ntlm.Store(s)
	return ts
}

func (ts *testServer) stats() ntlmserver.Stats { return ts.ntlm.Load().Stats() }

func (ts *testServer) lastRejection() string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.rejection
}

func (ts *testServer) authSchemes() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]string(nil), ts.schemes...)
}

// baseTransport is the transport the PAM client builds: HTTP/1.1, TLS 1.2+, its own roots.
func baseTransport(ts *httptest.Server) *http.Transport {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if ts.TLS != nil {
		roots := x509.NewCertPool()
		roots.AddCert(ts.Certificate())
		cfg.RootCAs = roots
	}
	return &http.Transport{
		TLSClientConfig:     cfg,
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
		MaxIdleConnsPerHost: 16,
	}
}

func newClient(t *testing.T, ts *httptest.Server, creds ntlmssp.Credentials, opts Options) (*http.Client, *Transport) {
	t.Helper()
	rt, ok := WrapWithOptions(creds, opts)(baseTransport(ts)).(*Transport)
	if !ok {
		t.Fatal("Wrap did not return a *Transport")
	}
	t.Cleanup(rt.CloseIdleConnections)
	return &http.Client{Transport: rt}, rt
}

// call sends a request (a POST when body is not empty) and returns the status and body.
func call(t *testing.T, c *http.Client, url, method, body string) (int, string) {
	t.Helper()
	var rd io.Reader = http.NoBody
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(data)
}

func TestRoundTrip(t *testing.T) {
	for _, useTLS := range []bool{true, false} {
		name := map[bool]string{true: "https", false: "http"}[useTLS]
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			// Over https the server requires our channel binding.
			ts := newTestServer(t, useTLS, ntlmserver.Options{ChannelBinding: ntlmserver.ChannelBindingRequire})
			c, _ := newClient(t, ts.Server, ntlmssp.Credentials{Username: `PRIV\jen`, Password: jen.Password}, Options{})

			status, body := call(t, c, ts.URL+"/api/pamresources/pamrequests", http.MethodGet, "")
			g.Expect(status).To(Equal(http.StatusOK), ts.lastRejection())
			g.Expect(body).To(Equal("jen GET "))
			// Probe, NEGOTIATE, AUTHENTICATE.
			g.Expect(ts.hits.Load()).To(Equal(int32(3)))
			g.Expect(ts.authSchemes()).To(Equal([]string{"", "NTLM", "NTLM"}))

			status, body = call(t, c, ts.URL+"/api/pamresources/pamrequests", http.MethodPost, `{"RoleId":"x"}`)
			g.Expect(status).To(Equal(http.StatusOK))
			g.Expect(body).To(Equal(`jen POST {"RoleId":"x"}`))
			status, _ = call(t, c, ts.URL+"/api/pamresources/pamrequests(guid'1')/Close", http.MethodPost, "")
			g.Expect(status).To(Equal(http.StatusOK))

			// Later calls reuse the authenticated connection, without a header.
			g.Expect(ts.hits.Load()).To(Equal(int32(5)))
			g.Expect(ts.stats()).To(Equal(ntlmserver.Stats{Connections: 1, Challenges: 1, Authenticated: 1}))
		})
	}
}

// TestRoundTripUPN: a user principal name authenticates with an empty domain.
func TestRoundTripUPN(t *testing.T) {
	g := NewWithT(t)
	upn := ntlmssp.Credentials{Username: "jen@priv.example.test", Password: "pw"}
	ts := newTestServer(t, true, ntlmserver.Options{Users: map[string]ntlmserver.User{"jen@priv.example.test": {Username: upn.Username, Password: upn.Password}}})
	c, _ := newClient(t, ts.Server, upn, Options{})
	status, body := call(t, c, ts.URL, http.MethodGet, "")
	g.Expect(status).To(Equal(http.StatusOK), ts.lastRejection())
	g.Expect(body).To(HavePrefix("jen@priv.example.test GET"))
}

func TestRequestIsNotModified(t *testing.T) {
	g := NewWithT(t)
	ts := newTestServer(t, false, ntlmserver.Options{})
	c, _ := newClient(t, ts.Server, jen, Options{})
	req, err := http.NewRequest(http.MethodPost, ts.URL, strings.NewReader("{}"))
	g.Expect(err).NotTo(HaveOccurred())
	resp, err := c.Do(req)
	g.Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
	g.Expect(req.Header).NotTo(HaveKey("Authorization"))
	g.Expect(resp.Request).To(BeIdenticalTo(req), "the answer names the caller's request, not the copy with the token")
}

func TestConcurrentCalls(t *testing.T) {
	g := NewWithT(t)
	ts := newTestServer(t, true, ntlmserver.Options{ChannelBinding: ntlmserver.ChannelBindingRequire})
	c, _ := newClient(t, ts.Server, jen, Options{MaxConns: 4})

	const calls = 20
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for i := range calls {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodPost, ts.URL, strings.NewReader(fmt.Sprintf(`{"n":%d}`, i)))
			resp, err := c.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if want := fmt.Sprintf(`jen POST {"n":%d}`, i); resp.StatusCode != http.StatusOK || string(body) != want {
				errs <- fmt.Errorf("call %d: %d %q", i, resp.StatusCode, body)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := ts.stats()
	g.Expect(st.Refused).To(BeZero(), ts.lastRejection())
	g.Expect(st.Connections).To(BeNumerically("<=", 4), "the pool is bounded")
	g.Expect(st.Authenticated).To(Equal(st.Connections), "each connection is authenticated once")
}

func TestWrongPassword(t *testing.T) {
	g := NewWithT(t)
	ts := newTestServer(t, true, ntlmserver.Options{})
	const wrong = "Tr0ub4dor&3"
	c, _ := newClient(t, ts.Server, ntlmssp.Credentials{Domain: "PRIV", Username: "jen", Password: wrong}, Options{})

	// The first call probes, then NEGOTIATE and AUTHENTICATE; the second knows the scheme.
	// Neither loops.
	for i, hits := range []int32{3, 5} {
		status, body := call(t, c, ts.URL, http.MethodGet, "")
		g.Expect(status).To(Equal(http.StatusUnauthorized), "call %d", i)
		g.Expect(body).To(ContainSubstring("401 - Unauthorized"), "the caller can read the server's page")
		g.Expect(ts.hits.Load()).To(Equal(hits), "call %d", i)
	}
	g.Expect(ts.stats().Authenticated).To(BeZero())
	// Each handshake on a connection of its own: the server (as Apache) takes no new one on
	// a connection whose AUTHENTICATE it refused.
	g.Expect(ts.stats().Connections).To(Equal(int64(2)))
	g.Expect(ts.stats().Refused).To(Equal(int64(2)), "one refusal per call, each a wrong password")
	g.Expect(ts.lastRejection()).To(ContainSubstring(`NTLMv2 response of PRIV\jen does not verify: wrong password`))
	g.Expect(ts.lastRejection()).NotTo(ContainSubstring(wrong))
}

// TestAuthenticateOnAnotherConnection: the server ties the AUTHENTICATE to the connection
// that got the CHALLENGE.
func TestAuthenticateOnAnotherConnection(t *testing.T) {
	g := NewWithT(t)
	ts := newTestServer(t, false, ntlmserver.Options{})
	base := baseTransport(ts.Server)
	base.DisableKeepAlives = true
	c := &http.Client{Transport: base}
	t.Cleanup(base.CloseIdleConnections)

	negotiate := ntlmssp.Negotiate()
	resp := send(t, c, ts.URL, "NTLM "+base64.StdEncoding.EncodeToString(negotiate))
	g.Expect(resp.StatusCode).To(Equal(http.StatusUnauthorized))
	token, ok := challengeToken(resp.Header, SchemeNTLM)
	g.Expect(ok).To(BeTrue())
	challenge, _ := base64.StdEncoding.DecodeString(token)
	msg, err := ntlmssp.Authenticate(ntlmssp.ClientInput{Credentials: jen, Negotiate: negotiate, Challenge: challenge, Binding: ntlmssp.NoBinding, Now: testNow, Rand: seededRand(5)})
	g.Expect(err).NotTo(HaveOccurred())

	resp = send(t, c, ts.URL, "NTLM "+base64.StdEncoding.EncodeToString(msg))
	g.Expect(resp.StatusCode).To(Equal(http.StatusUnauthorized))
	g.Expect(ts.lastRejection()).To(ContainSubstring("sent no CHALLENGE"))
	g.Expect(ts.stats().Connections).To(Equal(int64(2)))
}

func send(t *testing.T, c *http.Client, url, authorization string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", authorization)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// TestServerClosesConnectionDuringHandshake: a server or proxy that drops the connection
// after the challenge makes a clear error, not a 401 blamed on the password.
func TestServerClosesConnectionDuringHandshake(t *testing.T) {
	g := NewWithT(t)
	ts := newTestServer(t, false, ntlmserver.Options{})
	inner := ts.Config.Handler
	ts.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.Header.Get("Authorization"), "NTLM ") {
			w.Header().Set("Connection", "close")
		}
		inner.ServeHTTP(w, r)
	})
	c, _ := newClient(t, ts.Server, jen, Options{})
	_, err := c.Get(ts.URL)
	var authErr *auth.Error
	g.Expect(errors.As(err, &authErr)).To(BeTrue(), "an *auth.Error: %v", err)
	g.Expect(authErr.Message).To(ContainSubstring("closed the connection during the NTLM handshake"))
}

func TestChannelBindingPolicies(t *testing.T) {
	other := testcert.SelfSigned(t, elliptic.P256(), x509.ECDSAWithSHA256)
	cases := []struct {
		name   string
		policy ntlmserver.ChannelBindingPolicy
		opts   Options
		ok     bool
		reason string
	}{
		{name: "require: ours is accepted", policy: ntlmserver.ChannelBindingRequire, ok: true},
		{name: "require: none is refused", policy: ntlmserver.ChannelBindingRequire, opts: Options{noBinding: true}, reason: "sent no channel binding"},
		{name: "require: another certificate's is refused", policy: ntlmserver.ChannelBindingRequire, opts: Options{bindingCert: other}, reason: "does not match this server's certificate"},
		{name: "allow: none is accepted", policy: ntlmserver.ChannelBindingAllow, opts: Options{noBinding: true}, ok: true},
		{name: "allow: ours is accepted", policy: ntlmserver.ChannelBindingAllow, ok: true},
		{name: "allow: another certificate's is refused", policy: ntlmserver.ChannelBindingAllow, opts: Options{bindingCert: other}, reason: "does not match"},
		{name: "none: another certificate's is ignored", policy: ntlmserver.ChannelBindingNone, opts: Options{bindingCert: other}, ok: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			ts := newTestServer(t, true, ntlmserver.Options{ChannelBinding: tc.policy})
			c, _ := newClient(t, ts.Server, jen, tc.opts)
			status, _ := call(t, c, ts.URL, http.MethodGet, "")
			if tc.ok {
				g.Expect(status).To(Equal(http.StatusOK), ts.lastRejection())
				return
			}
			g.Expect(status).To(Equal(http.StatusUnauthorized))
			g.Expect(ts.lastRejection()).To(ContainSubstring(tc.reason))
		})
	}
}

// TestNegotiateOnly: a server that offers only Negotiate gets raw NTLM tokens under it.
func TestNegotiateOnly(t *testing.T) {
	g := NewWithT(t)
	ts := newTestServer(t, true, ntlmserver.Options{Schemes: []string{SchemeNegotiate}})
	c, _ := newClient(t, ts.Server, jen, Options{})
	status, body := call(t, c, ts.URL, http.MethodPost, `{"a":1}`)
	g.Expect(status).To(Equal(http.StatusOK), ts.lastRejection())
	g.Expect(body).To(Equal(`jen POST {"a":1}`))
	g.Expect(ts.authSchemes()).To(Equal([]string{"", "Negotiate", "Negotiate"}))
}

// TestBasicOnly: a 401 that offers no scheme of ours reaches the caller untouched.
func TestBasicOnly(t *testing.T) {
	g := NewWithT(t)
	var hits atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Header().Set("WWW-Authenticate", `Basic realm="PAM, the proxy"`)
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, "basic only")
	}))
	t.Cleanup(ts.Close)
	c, _ := newClient(t, ts, jen, Options{})
	resp, err := c.Get(ts.URL)
	g.Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	g.Expect(resp.StatusCode).To(Equal(http.StatusUnauthorized))
	g.Expect(resp.Header.Values("WWW-Authenticate")).To(Equal([]string{`Basic realm="PAM, the proxy"`}))
	g.Expect(string(body)).To(Equal("basic only"))
	g.Expect(hits.Load()).To(Equal(int32(1)))
}

// TestOversizedChallengeIsRefused: a CHALLENGE longer than any real one is refused for its
// length, before it is decoded, and no AUTHENTICATE is sent.
func TestOversizedChallengeIsRefused(t *testing.T) {
	g := NewWithT(t)
	var hits atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.Header.Get("Authorization") == "" {
			w.Header().Set("WWW-Authenticate", SchemeNTLM)
		} else {
			// 48 KiB of base64 under the PAM client's 64 KiB header cap, 36 KiB decoded: within
			// what ntlmssp parses, far beyond any real CHALLENGE.
			w.Header().Set("WWW-Authenticate", SchemeNTLM+" "+strings.Repeat("TlRM", 12<<10))
		}
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(ts.Close)
	c, _ := newClient(t, ts, jen, Options{})
	_, err := c.Get(ts.URL)
	var ae *auth.Error
	g.Expect(errors.As(err, &ae)).To(BeTrue(), "want an *auth.Error, got %v", err)
	g.Expect(ae.Message).To(ContainSubstring("longer than any real one"))
	g.Expect(hits.Load()).To(Equal(int32(2)), "a probe and the NEGOTIATE; no AUTHENTICATE")
}

// TestReauthenticates: when the server drops an authenticated connection, the next call
// authenticates a new one, once.
func TestReauthenticates(t *testing.T) {
	g := NewWithT(t)
	ts := newTestServer(t, true, ntlmserver.Options{})
	c, rt := newClient(t, ts.Server, jen, Options{MaxConns: 1})
	status, _ := call(t, c, ts.URL, http.MethodGet, "")
	g.Expect(status).To(Equal(http.StatusOK))

	// The server drops the connection: the slot learns it from a 401. (A GET, which
	// http.Transport retries should it still try the dead connection.)
	ts.CloseClientConnections()
	status, body := call(t, c, ts.URL, http.MethodGet, "")
	g.Expect(status).To(Equal(http.StatusOK), ts.lastRejection())
	g.Expect(body).To(Equal("jen GET "))
	g.Expect(ts.stats().Authenticated).To(Equal(int64(2)))

	// The client closes its idle connections: the next call starts with a NEGOTIATE.
	hits := ts.hits.Load()
	rt.CloseIdleConnections()
	status, _ = call(t, c, ts.URL, http.MethodGet, "")
	g.Expect(status).To(Equal(http.StatusOK))
	g.Expect(ts.hits.Load() - hits).To(Equal(int32(2)))
	g.Expect(ts.stats()).To(Equal(ntlmserver.Stats{Connections: 3, Challenges: 3, Authenticated: 3}))
}

// TestWaitsForFreeSlot: with every slot busy, a call waits, and gives up with its context.
func TestWaitsForFreeSlot(t *testing.T) {
	g := NewWithT(t)
	ts := newTestServer(t, false, ntlmserver.Options{})
	c, _ := newClient(t, ts.Server, jen, Options{MaxConns: 1})
	held, err := c.Get(ts.URL)
	g.Expect(err).NotTo(HaveOccurred())

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL, nil)
	_, err = c.Do(req)
	g.Expect(err).To(MatchError(context.Canceled))

	// Reading the held answer to its end frees the slot.
	_, _ = io.ReadAll(held.Body)
	status, _ := call(t, c, ts.URL, http.MethodGet, "")
	g.Expect(status).To(Equal(http.StatusOK))
	held.Body.Close()
	g.Expect(ts.stats().Connections).To(Equal(int64(1)))
}

// TestBodyThatCannotRewind: a handshake needs the body twice.
func TestBodyThatCannotRewind(t *testing.T) {
	g := NewWithT(t)
	ts := newTestServer(t, false, ntlmserver.Options{})
	c, rt := newClient(t, ts.Server, jen, Options{})
	status, _ := call(t, c, ts.URL, http.MethodGet, "")
	g.Expect(status).To(Equal(http.StatusOK))
	rt.CloseIdleConnections()

	req, _ := http.NewRequest(http.MethodPost, ts.URL, io.NopCloser(strings.NewReader("{}")))
	req.ContentLength = 2
	_, err := c.Do(req)
	g.Expect(err).To(MatchError(ContainSubstring("cannot be sent again")))
}

func TestMisconfiguredClient(t *testing.T) {
	cases := []struct {
		name  string
		creds ntlmssp.Credentials
		next  http.RoundTripper
		want  string
	}{
		{name: "empty password", creds: ntlmssp.Credentials{Username: "jen"}, next: &http.Transport{}, want: "password of jen is empty"},
		{name: "not an *http.Transport", creds: jen, next: http.NewFileTransport(http.Dir(".")), want: "needs an *http.Transport"},
		{name: "keep-alive disabled", creds: jen, next: &http.Transport{DisableKeepAlives: true}, want: "disables keep-alive"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			rt := Wrap(tc.creds)(tc.next)
			req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:1/", nil)
			_, err := rt.RoundTrip(req)
			var authErr *auth.Error
			g.Expect(errors.As(err, &authErr)).To(BeTrue(), "an *auth.Error: %v", err)
			g.Expect(authErr.Message).To(ContainSubstring(tc.want))
		})
	}
}

// TestConnContextMissing: without per-connection state the server fails closed, saying why.
func TestConnContextMissing(t *testing.T) {
	g := NewWithT(t)
	s, err := ntlmserver.New(ntlmserver.Options{Users: map[string]ntlmserver.User{"jen": {Domain: jen.Domain, Username: jen.Username, Password: jen.Password}}})
	g.Expect(err).NotTo(HaveOccurred())
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if account, ok := s.Authenticate(w, r); ok {
			_, _ = io.WriteString(w, account)
		}
	}))
	t.Cleanup(ts.Close)
	c, _ := newClient(t, ts, jen, Options{})
	status, body := call(t, c, ts.URL, http.MethodGet, "")
	g.Expect(status).To(Equal(http.StatusInternalServerError))
	g.Expect(body).To(ContainSubstring("ConnContext"))
}

// TestNoLeakedConnections: CloseIdleConnections ends every connection of every slot.
func TestNoLeakedConnections(t *testing.T) {
	g := NewWithT(t)
	ts := newTestServer(t, true, ntlmserver.Options{})
	c, rt := newClient(t, ts.Server, jen, Options{MaxConns: 3})
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			resp, err := c.Get(ts.URL)
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	wg.Wait()
	g.Expect(ts.stats().Connections).To(BeNumerically(">", 0))

	rt.CloseIdleConnections()
	g.Eventually(func() string {
		buf := make([]byte, 1<<20)
		return string(buf[:runtime.Stack(buf, true)])
	}).ShouldNot(ContainSubstring("persistConn"), "no client connection goroutine survives")
}

// TestHandshakeIsLoggedAtV1: with a V(1) logger in the request's context, each handshake is one
// line of flags, AV pair ids and the binding; never a token or the password. At V(0) nothing.
func TestHandshakeIsLoggedAtV1(t *testing.T) {
	for _, verbosity := range []int{0, 1} {
		t.Run(fmt.Sprintf("verbosity %d", verbosity), func(t *testing.T) {
			g := NewWithT(t)
			ts := newTestServer(t, true, ntlmserver.Options{ChannelBinding: ntlmserver.ChannelBindingRequire})
			c, _ := newClient(t, ts.Server, jen, Options{})
			var lines []string
			log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{Verbosity: verbosity})
			req, err := http.NewRequestWithContext(logr.NewContext(context.Background(), log), http.MethodGet, ts.URL, nil)
			g.Expect(err).NotTo(HaveOccurred())
			resp, err := c.Do(req)
			g.Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			g.Expect(resp.StatusCode).To(Equal(http.StatusOK), ts.lastRejection())
			if verbosity == 0 {
				g.Expect(lines).To(BeEmpty())
				return
			}
			g.Expect(lines).To(HaveLen(1))
			g.Expect(lines[0]).To(And(ContainSubstring(`"msg"="NTLM handshake"`), ContainSubstring(`"status"=200`),
				ContainSubstring(`"channelBinding"="tls-server-end-point"`), ContainSubstring(`"avFlags"="0x2"`)))
			// Neither the password nor an NTLMSSP token ("NTLMSSP" in base64) nor the names.
			g.Expect(lines[0]).NotTo(Or(ContainSubstring(jen.Password), ContainSubstring("TlRMTVNT"), ContainSubstring("jen"), ContainSubstring("PRIV")))
		})
	}
}
