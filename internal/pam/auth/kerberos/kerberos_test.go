package kerberos_test

import (
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
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

	"github.com/pam-operator/pam-operator/emulator/kerberosserver"
	"github.com/pam-operator/pam-operator/internal/gsskrb5"
	"github.com/pam-operator/pam-operator/internal/pam/auth"
	"github.com/pam-operator/pam-operator/internal/pam/auth/kerberos"
	"github.com/pam-operator/pam-operator/internal/testing/kdc"
	"github.com/pam-operator/pam-operator/internal/testing/testcert"
)

const (
	user     = "alice"
	password = "correct horse \"battery\" staple" // quotes and spaces reach kadmin intact
	spn      = "HTTP/127.0.0.1"
)

// realm is a KDC with the user alice and the service principal of httptest servers.
type realm struct {
	*kdc.KDC
	serviceKeytab []byte
}

func newRealm(t *testing.T) *realm {
	t.Helper()
	k := kdc.Start(t)
	k.AddPrincipal(user, password)
	k.AddRandomKeyPrincipal(spn)
	return &realm{KDC: k, serviceKeytab: k.Keytab(spn)}
}

// config is the client configuration for alice with her password and the realm's krb5.conf.
func (r *realm) config() kerberos.Config {
	return kerberos.Config{Username: user, Realm: r.Realm, Password: password, Krb5Conf: r.Krb5Conf()}
}

// issued counts the tickets the KDC issued of a kind ("AS_REQ" or "TGS_REQ") for a server
// principal (without realm).
func (r *realm) issued(kind, server string) int {
	n := 0
	for _, req := range r.Requests() {
		if req.Kind == kind && req.Status == "ISSUE" && req.Server == server+"@"+r.Realm {
			n++
		}
	}
	return n
}

// logins counts the TGTs issued; tickets counts the service tickets issued for spn.
func (r *realm) logins() int  { return r.issued("AS_REQ", "krbtgt/"+r.Realm) }
func (r *realm) tickets() int { return r.issued("TGS_REQ", spn) }

// server is an httptest server that authenticates with a Verifier and answers the client's
// name and the body it received.
type server struct {
	*httptest.Server
	hits     atomic.Int32
	verifier atomic.Pointer[kerberosserver.Verifier]
	rejected atomic.Value // the last rejection's error text
}

func newServer(t *testing.T, cfg kerberosserver.Config, startTLS bool) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		account, ok := s.verifier.Load().Authenticate(w, r)
		if !ok {
			return
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s\n%s", account, body)
	}))
	if startTLS {
		s.StartTLS()
		if cfg.Certificate == nil {
			cfg.Certificate = s.Certificate()
		}
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	s.setVerifier(t, cfg)
	return s
}

func (s *server) setVerifier(t *testing.T, cfg kerberosserver.Config) {
	t.Helper()
	cfg.Rejected = func(_ *http.Request, err error) { s.rejected.Store(err.Error()) }
	v, err := kerberosserver.New(cfg)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	s.verifier.Store(v)
}

func (s *server) lastRejection() string {
	v, _ := s.rejected.Load().(string)
	return v
}

// newClient builds a client for cfg and an HTTP client using it over base (or a fresh
// transport).
func newClient(t *testing.T, cfg kerberos.Config, base http.RoundTripper) (*kerberos.Client, *http.Client) {
	t.Helper()
	c, err := kerberos.New(cfg)
	if err != nil {
		t.Fatalf("kerberos.New: %v", err)
	}
	t.Cleanup(c.Close)
	if base == nil {
		base = http.DefaultTransport.(*http.Transport).Clone()
	}
	return c, &http.Client{Transport: c.Wrap(base)}
}

// get sends a GET and returns the status and body.
func get(g Gomega, hc *http.Client, url string) (int, string) {
	resp, err := hc.Get(url)
	g.Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	g.Expect(err).NotTo(HaveOccurred())
	return resp.StatusCode, string(body)
}

func TestLoginWithPasswordOrKeytabAndTicketReuse(t *testing.T) {
	r := newRealm(t)
	userKeytab := r.Keytab(user)
	cases := []struct {
		name   string
		config kerberos.Config
	}{
		{"password with krb5.conf", r.config()},
		{"keytab with a list of KDCs", kerberos.Config{Username: user, Realm: r.Realm, Keytab: userKeytab, KDCs: []string{r.Addr}}},
		{"user@REALM as username", kerberos.Config{Username: user + "@" + r.Realm, Password: password, Krb5Conf: r.Krb5Conf()}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			srv := newServer(t, kerberosserver.Config{Keytab: r.serviceKeytab, ServicePrincipalName: spn}, false)
			logins, tickets := r.logins(), r.tickets()
			_, hc := newClient(t, tc.config, nil)

			code, body := get(g, hc, srv.URL+"/api/pamresources/pamrequests")
			g.Expect(code).To(Equal(http.StatusOK))
			g.Expect(body).To(HavePrefix(user + "@" + r.Realm + "\n"))
			g.Expect(srv.hits.Load()).To(BeEquivalentTo(2), "a first request without a token, then one with")

			// The server is known to want Negotiate now: the token goes at once, and the
			// tickets come from the cache.
			code, _ = get(g, hc, srv.URL+"/api/pamresources/pamroles")
			g.Expect(code).To(Equal(http.StatusOK))
			g.Expect(srv.hits.Load()).To(BeEquivalentTo(3))
			g.Expect(r.logins()-logins).To(Equal(1), "one AS exchange")
			g.Expect(r.tickets()-tickets).To(Equal(1), "one TGS exchange")
		})
	}
}

func TestBodyIsSentAgainAndCallerRequestIsUntouched(t *testing.T) {
	g := NewWithT(t)
	r := newRealm(t)
	srv := newServer(t, kerberosserver.Config{Keytab: r.serviceKeytab}, false)
	_, hc := newClient(t, r.config(), nil)

	for i := 0; i < 2; i++ {
		payload := fmt.Sprintf(`{"RoleId":"%d"}`, i)
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/api/pamresources/pamrequests", strings.NewReader(payload))
		g.Expect(err).NotTo(HaveOccurred())
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		g.Expect(err).NotTo(HaveOccurred())
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
		g.Expect(string(body)).To(Equal(user + "@" + r.Realm + "\n" + payload))
		g.Expect(req.Header.Get("Authorization")).To(BeEmpty(), "the caller's request is never modified")
		g.Expect(req.Header).To(HaveLen(1))
	}
	g.Expect(srv.hits.Load()).To(BeEquivalentTo(3), "the body went twice on first contact, once afterwards")
}

// onceReader is a body that cannot be rewound: http.NewRequest sets no GetBody for it.
type onceReader struct{ io.Reader }

func TestBodyThatCannotBeSentTwice(t *testing.T) {
	g := NewWithT(t)
	r := newRealm(t)
	srv := newServer(t, kerberosserver.Config{Keytab: r.serviceKeytab}, false)
	_, hc := newClient(t, r.config(), nil)
	post := func() int {
		req, err := http.NewRequest(http.MethodPost, srv.URL, onceReader{strings.NewReader("payload")})
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(req.GetBody).To(BeNil())
		resp, err := hc.Do(req)
		g.Expect(err).NotTo(HaveOccurred())
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	g.Expect(post()).To(Equal(http.StatusUnauthorized), "the server's 401: the body is gone")
	g.Expect(post()).To(Equal(http.StatusOK), "the next request carries a token from the start")
	g.Expect(srv.hits.Load()).To(BeEquivalentTo(2))
}

func TestConcurrentRequestsShareOneLogin(t *testing.T) {
	g := NewWithT(t)
	r := newRealm(t)
	srv := newServer(t, kerberosserver.Config{Keytab: r.serviceKeytab}, false)
	_, hc := newClient(t, r.config(), nil)

	var wg sync.WaitGroup
	codes := make([]int, 16)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := hc.Get(srv.URL)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes[i] = resp.StatusCode
		}()
	}
	wg.Wait()
	g.Expect(codes).To(HaveEach(http.StatusOK))
	g.Expect(r.logins()).To(Equal(1))
	g.Expect(r.tickets()).To(Equal(1))
}

// authErr returns the *auth.Error in err, failing when there is none.
func authErr(g Gomega, err error) *auth.Error {
	var ae *auth.Error
	g.Expect(errors.As(err, &ae)).To(BeTrue(), "want an *auth.Error, got %v", err)
	g.Expect(ae.Method).To(Equal("kerberos"))
	g.Expect(ae.Error()).NotTo(ContainSubstring(password))
	g.Expect(ae.Error()).NotTo(ContainSubstring("Negotiate "))
	return ae
}

func TestCredentialFailuresAreAuthErrors(t *testing.T) {
	r := newRealm(t)
	r.AddPrincipal("bob", password)
	r.ExpirePassword("bob")
	cases := []struct {
		name   string
		config func(kerberos.Config) kerberos.Config
		want   []string
		// refused: the KDC refused the credentials themselves, which a login breaker must
		// not send again (each try counts towards the account's lockout).
		refused bool
	}{
		{
			name:    "wrong password",
			config:  func(c kerberos.Config) kerberos.Config { c.Password = "wrong"; return c },
			want:    []string{"refused the password of alice@" + r.Realm, "KDC_ERR_PREAUTH_FAILED", "set the account's current password"},
			refused: true,
		},
		{
			name:    "unknown user",
			config:  func(c kerberos.Config) kerberos.Config { c.Username = "mallory"; return c },
			want:    []string{"does not know the user mallory", "check the username"},
			refused: true,
		},
		{
			name:    "expired password",
			config:  func(c kerberos.Config) kerberos.Config { c.Username = "bob"; return c },
			want:    []string{"password of bob@" + r.Realm + " has expired", "change it"},
			refused: true,
		},
		{
			name:   "unknown service principal",
			config: func(c kerberos.Config) kerberos.Config { c.ServicePrincipalName = "HTTP/pam.example.com"; return c },
			want:   []string{"does not know the service principal HTTP/pam.example.com", "register the SPN", "servicePrincipalName"},
		},
	}
	srv := newServer(t, kerberosserver.Config{Keytab: r.serviceKeytab}, false)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			_, hc := newClient(t, tc.config(r.config()), nil)
			for i := 0; i < 2; i++ { // the second request has the token path of a known server
				_, err := hc.Get(srv.URL)
				ae := authErr(g, err)
				for _, w := range tc.want {
					g.Expect(ae.Message).To(ContainSubstring(w))
				}
				g.Expect(ae.Refused).To(Equal(tc.refused))
			}
		})
	}
}

func TestKDCDownIsRetryable(t *testing.T) {
	g := NewWithT(t)
	r := newRealm(t)
	srv := newServer(t, kerberosserver.Config{Keytab: r.serviceKeytab}, false)
	clk := &clock{now: time.Now()}
	cfg := r.config()
	cfg.Now = clk.Now
	_, before := newClient(t, cfg, nil)
	code, _ := get(g, before, srv.URL)
	g.Expect(code).To(Equal(http.StatusOK))

	r.Stop()

	code, _ = get(g, before, srv.URL)
	g.Expect(code).To(Equal(http.StatusOK), "tickets in hand work without the KDC")
	clk.Advance(9*time.Hour + 55*time.Minute)
	code, _ = get(g, before, srv.URL)
	g.Expect(code).To(Equal(http.StatusOK), "a ticket due for renewal is used until it ends when no KDC answers")

	clk.Advance(10 * time.Minute)
	_, err := before.Get(srv.URL)
	g.Expect(err).To(MatchError(ContainSubstring("no KDC of realm " + r.Realm + " answered")))
	var ae *auth.Error
	g.Expect(errors.As(err, &ae)).To(BeFalse(), "an unreachable KDC is worth retrying: %v", err)

	_, after := newClient(t, r.config(), nil)
	_, err = after.Get(srv.URL)
	g.Expect(err).To(MatchError(ContainSubstring("no KDC of realm " + r.Realm + " answered")))
	g.Expect(errors.As(err, &ae)).To(BeFalse(), "an unreachable KDC is worth retrying: %v", err)
}

func TestServerThatDoesNotOfferNegotiate(t *testing.T) {
	g := NewWithT(t)
	r := newRealm(t)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Header().Add("WWW-Authenticate", "NTLM")
		w.Header().Add("WWW-Authenticate", `Basic realm="Negotiate, please"`)
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, "<html>401 - Unauthorized</html>")
	}))
	t.Cleanup(srv.Close)
	_, hc := newClient(t, r.config(), nil)

	resp, err := hc.Get(srv.URL)
	g.Expect(err).NotTo(HaveOccurred())
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	g.Expect(resp.StatusCode).To(Equal(http.StatusUnauthorized))
	g.Expect(resp.Header.Values("WWW-Authenticate")).To(Equal([]string{"NTLM", `Basic realm="Negotiate, please"`}))
	g.Expect(string(body)).To(Equal("<html>401 - Unauthorized</html>"))
	g.Expect(hits.Load()).To(BeEquivalentTo(1))
	g.Expect(r.Requests()).To(BeEmpty(), "no login for a server that does not want Kerberos")
}

func TestNegotiateOfferedInAnyPositionAndCase(t *testing.T) {
	g := NewWithT(t)
	r := newRealm(t)
	v, err := kerberosserver.New(kerberosserver.Config{Keytab: r.serviceKeytab})
	g.Expect(err).NotTo(HaveOccurred())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get("Authorization") == "" {
			w.Header().Add("WWW-Authenticate", "NTLM")
			w.Header().Add("WWW-Authenticate", `Basic realm="pam", negotiate`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if account, ok := v.Authenticate(w, req); ok {
			_, _ = io.WriteString(w, account)
		}
	}))
	t.Cleanup(srv.Close)
	_, hc := newClient(t, r.config(), nil)
	code, body := get(g, hc, srv.URL)
	g.Expect(code).To(Equal(http.StatusOK))
	g.Expect(body).To(Equal(user + "@" + r.Realm))
}

func TestASecond401IsReturnedAsIs(t *testing.T) {
	g := NewWithT(t)
	r := newRealm(t)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Header().Set("WWW-Authenticate", "Negotiate")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, "denied")
	}))
	t.Cleanup(srv.Close)
	_, hc := newClient(t, r.config(), nil)

	for call := 1; call <= 2; call++ {
		code, body := get(g, hc, srv.URL)
		g.Expect(code).To(Equal(http.StatusUnauthorized))
		g.Expect(body).To(Equal("denied"))
		g.Expect(hits.Load()).To(BeEquivalentTo(2*call), "two attempts per call, never more")
	}
	g.Expect(r.tickets()).To(Equal(2), "the retry after a refused token takes a new service ticket")
}

func TestChannelBindingOverTLS(t *testing.T) {
	g := NewWithT(t)
	r := newRealm(t)
	srv := newServer(t, kerberosserver.Config{Keytab: r.serviceKeytab, RequireChannelBinding: true}, true)
	_, hc := newClient(t, r.config(), srv.Client().Transport)

	code, body := get(g, hc, srv.URL)
	g.Expect(code).To(Equal(http.StatusOK), srv.lastRejection())
	g.Expect(body).To(HavePrefix(user + "@"))
	code, _ = get(g, hc, srv.URL)
	g.Expect(code).To(Equal(http.StatusOK), "the preemptive token carries the binding too: %s", srv.lastRejection())

	// A server behind a TLS proxy sees a binding to the proxy's certificate, not its own.
	srv.setVerifier(t, kerberosserver.Config{Keytab: r.serviceKeytab, Certificate: otherCertificate(t)})
	code, _ = get(g, hc, srv.URL)
	g.Expect(code).To(Equal(http.StatusUnauthorized))
	g.Expect(srv.lastRejection()).To(ContainSubstring("channel binding is not that of this server's certificate"))
}

func TestMutualAuthentication(t *testing.T) {
	g := NewWithT(t)
	r := newRealm(t)
	v, err := kerberosserver.New(kerberosserver.Config{Keytab: r.serviceKeytab})
	g.Expect(err).NotTo(HaveOccurred())
	var mu sync.Mutex
	var first string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if _, ok := v.Authenticate(w, req); !ok {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		// An impostor can only replay an answer it saw: it cannot make one for a new
		// authenticator without the service key.
		if first == "" {
			first = w.Header().Get("WWW-Authenticate")
		} else {
			w.Header().Set("WWW-Authenticate", first)
		}
	}))
	t.Cleanup(srv.Close)
	_, hc := newClient(t, r.config(), nil)

	code, _ := get(g, hc, srv.URL)
	g.Expect(code).To(Equal(http.StatusOK))
	g.Expect(first).To(HavePrefix("Negotiate "))

	_, err = hc.Get(srv.URL)
	ae := authErr(g, err)
	g.Expect(ae.Message).To(ContainSubstring("did not prove it is " + spn))
}

// TestMutualAuthenticationIsRequired: a success answer to a request that carried a token must
// prove the server holds the service key; an error answer is returned as it is without one.
func TestMutualAuthenticationIsRequired(t *testing.T) {
	r := newRealm(t)
	v, err := kerberosserver.New(kerberosserver.Config{Keytab: r.serviceKeytab})
	if err != nil {
		t.Fatal(err)
	}
	acceptCompleted, err := gsskrb5.AcceptCompletedToken()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		reason string
		// answer changes the server's answer after the token was accepted; status is its code.
		answer func(http.Header)
		status int
		// refused is in the error, "" when the answer reaches the caller.
		refused string
	}{
		{"a 200 without WWW-Authenticate", func(h http.Header) { h.Del("WWW-Authenticate") }, http.StatusOK, "carries no AP-REP"},
		{"a 200 whose Negotiate answer holds no AP-REP", func(h http.Header) {
			h.Set("WWW-Authenticate", "Negotiate "+base64.StdEncoding.EncodeToString(acceptCompleted))
		}, http.StatusOK, "carries no AP-REP"},
		{"a 204 without WWW-Authenticate", func(h http.Header) { h.Del("WWW-Authenticate") }, http.StatusNoContent, "carries no AP-REP"},
		{"an answer token longer than any real one", func(h http.Header) {
			h.Set("WWW-Authenticate", "Negotiate "+strings.Repeat("oYG1", 12<<10))
		}, http.StatusOK, "longer than any real one"},
		{"a 500 without WWW-Authenticate is returned as it is", func(h http.Header) { h.Del("WWW-Authenticate") }, http.StatusInternalServerError, ""},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				if _, ok := v.Authenticate(w, req); !ok {
					return
				}
				tc.answer(w.Header())
				w.WriteHeader(tc.status)
			}))
			t.Cleanup(srv.Close)
			_, hc := newClient(t, r.config(), nil)
			resp, err := hc.Get(srv.URL)
			if tc.refused == "" {
				g.Expect(err).NotTo(HaveOccurred())
				resp.Body.Close()
				g.Expect(resp.StatusCode).To(Equal(tc.status))
				return
			}
			ae := authErr(g, err)
			g.Expect(ae.Message).To(ContainSubstring("did not prove it is " + spn))
			g.Expect(ae.Message).To(ContainSubstring(tc.refused))
		})
	}
}

func TestServiceKeyRotation(t *testing.T) {
	g := NewWithT(t)
	r := newRealm(t)
	srv := newServer(t, kerberosserver.Config{Keytab: r.serviceKeytab}, false)
	_, hc := newClient(t, r.config(), nil)
	code, _ := get(g, hc, srv.URL)
	g.Expect(code).To(Equal(http.StatusOK))

	// The MIM service account's password changes: the server gets the new key, and the
	// client's cached ticket, encrypted in the old one, is refused once.
	r.RotateKey(spn)
	srv.setVerifier(t, kerberosserver.Config{Keytab: r.Keytab(spn)})
	code, _ = get(g, hc, srv.URL)
	g.Expect(code).To(Equal(http.StatusOK))
	g.Expect(srv.hits.Load()).To(BeEquivalentTo(4), "a refused token, then one with a new ticket")
	g.Expect(r.tickets()).To(Equal(2))
	g.Expect(r.logins()).To(Equal(1))
}

// clock is a test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestRenewal moves the client's clock instead of waiting: the client decides from its
// clock when a ticket is due, while the KDC issues real tickets (TGT 10 h, service ticket
// 1 h here).
func TestRenewal(t *testing.T) {
	g := NewWithT(t)
	r := newRealm(t)
	r.Kadmin(`modprinc -maxlife "1 hour" ` + spn)
	srv := newServer(t, kerberosserver.Config{Keytab: r.serviceKeytab}, false)
	clk := &clock{now: time.Now()}
	cfg := r.config()
	cfg.Now = clk.Now
	_, hc := newClient(t, cfg, nil)

	step := func(advance time.Duration, logins, tickets int, why string) {
		t.Helper()
		clk.Advance(advance)
		code, _ := get(g, hc, srv.URL)
		g.Expect(code).To(Equal(http.StatusOK), why)
		g.Expect([]int{r.logins(), r.tickets()}).To(Equal([]int{logins, tickets}), why)
	}
	step(0, 1, 1, "the first request logs in and gets a service ticket")
	step(30*time.Minute, 1, 1, "both tickets are reused while fresh")
	step(25*time.Minute, 1, 2, "the service ticket is renewed in its last sixth, the TGT is still fresh")

	// krbtgt's key is reset: the KDC refuses the TGT the client still thinks fresh.
	r.RotateKey("krbtgt/" + r.Realm)
	step(time.Hour, 2, 3, "a refused TGT means one new login")

	step(10*time.Hour, 3, 4, "the TGT is renewed before its 10 hours end")
}

func TestCloseLeavesNothingRunning(t *testing.T) {
	g := NewWithT(t)
	r := newRealm(t)
	srv := newServer(t, kerberosserver.Config{Keytab: r.serviceKeytab}, false)
	c, hc := newClient(t, r.config(), nil)
	code, _ := get(g, hc, srv.URL)
	g.Expect(code).To(Equal(http.StatusOK))

	c.Close()
	c.Close() // idempotent
	_, err := hc.Get(srv.URL)
	g.Expect(err).To(MatchError(ContainSubstring("the client is closed")))

	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	g.Expect(stacks).NotTo(ContainSubstring("gokrb5"), "no gokrb5 goroutine survives")
}

func TestConfigurationErrors(t *testing.T) {
	r := newRealm(t)
	cases := []struct {
		name   string
		config func(kerberos.Config) kerberos.Config
		want   string
	}{
		{"malformed keytab", func(c kerberos.Config) kerberos.Config {
			c.Password, c.Keytab = "", []byte("not a keytab")
			return c
		}, "the keytab does not parse"},
		{"keytab of another account", func(c kerberos.Config) kerberos.Config {
			c.Password, c.Keytab = "", r.serviceKeytab
			return c
		}, "the keytab holds no key for alice@" + r.Realm + " (it holds: HTTP/127.0.0.1@" + r.Realm + ")"},
		{"unparseable krb5.conf", func(c kerberos.Config) kerberos.Config {
			c.Krb5Conf = "[libdefaults]\n this line has no equals sign\n"
			return c
		}, "krb5.conf does not parse"},
		{"krb5.conf without the realm's KDC", func(c kerberos.Config) kerberos.Config {
			c.Krb5Conf = "[libdefaults]\n default_realm = OTHER.TEST\n"
			return c
		}, "krb5.conf lists no KDC for realm " + r.Realm},
		{"password and keytab", func(c kerberos.Config) kerberos.Config {
			c.Keytab = r.Keytab(user)
			return c
		}, "set only one of them"},
		{"no secret", func(c kerberos.Config) kerberos.Config { c.Password = ""; return c }, "no password and no keytab"},
		{"krb5.conf and KDCs", func(c kerberos.Config) kerberos.Config { c.KDCs = []string{r.Addr}; return c }, "set only one of them"},
		{"no KDC", func(c kerberos.Config) kerberos.Config { c.Krb5Conf = ""; return c }, "no KDC"},
		{"bad KDC address", func(c kerberos.Config) kerberos.Config {
			c.Krb5Conf, c.KDCs = "", []string{"dc1:http"}
			return c
		}, `KDC address "dc1:http" is not host:port`},
		{"NetBIOS user name", func(c kerberos.Config) kerberos.Config { c.Username = `PRIV\alice`; return c }, "write the user name alone (alice)"},
		{"SPN with realm", func(c kerberos.Config) kerberos.Config { c.ServicePrincipalName = spn + "@" + r.Realm; return c }, "contains a realm"},
		{"SPN without host", func(c kerberos.Config) kerberos.Config { c.ServicePrincipalName = "HTTP"; return c }, "not of the form service/host"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			_, err := kerberos.New(tc.config(r.config()))
			ae := authErr(g, err)
			g.Expect(ae.Message).To(ContainSubstring(tc.want))
		})
	}
	t.Run("malformed service keytab", func(t *testing.T) {
		g := NewWithT(t)
		_, err := kerberosserver.New(kerberosserver.Config{Keytab: []byte{5, 2, 0}})
		g.Expect(err).To(MatchError(ContainSubstring("the service keytab does not parse")))
	})
}

func TestVerifierAnswersLikeIIS(t *testing.T) {
	g := NewWithT(t)
	r := newRealm(t)
	srv := newServer(t, kerberosserver.Config{Keytab: r.serviceKeytab}, false)
	for _, header := range []string{"", "Basic YWxpY2U6eA==", "Negotiate", "Negotiate !!!", "Negotiate " + "YIIBAAYGKwYBBQUCoA=="} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		if header != "" {
			req.Header.Set("Authorization", header)
		}
		resp, err := http.DefaultClient.Do(req)
		g.Expect(err).NotTo(HaveOccurred())
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		g.Expect(resp.StatusCode).To(Equal(http.StatusUnauthorized), header)
		g.Expect(resp.Header.Values("WWW-Authenticate")).To(Equal([]string{"Negotiate"}))
		g.Expect(resp.Header.Get("Content-Type")).To(Equal("text/html"))
		g.Expect(string(body)).To(ContainSubstring("401 - Unauthorized"))
	}
}

// otherCertificate returns a self-signed certificate that no test server presents.
func otherCertificate(t *testing.T) *x509.Certificate {
	return testcert.SelfSigned(t, elliptic.P256(), x509.ECDSAWithSHA256)
}

// TestHandshakeIsLoggedAtV1: with a V(1) logger in the request's context, each exchange is
// one line of the SPN, encryption type, flags, binding and whether the server proved itself;
// never a token or the password.
func TestHandshakeIsLoggedAtV1(t *testing.T) {
	g := NewWithT(t)
	r := newRealm(t)
	srv := newServer(t, kerberosserver.Config{Keytab: r.serviceKeytab}, false)
	_, hc := newClient(t, r.config(), nil)
	var lines []string
	log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{Verbosity: 1})
	req, err := http.NewRequestWithContext(logr.NewContext(t.Context(), log), http.MethodGet, srv.URL, nil)
	g.Expect(err).NotTo(HaveOccurred())
	resp, err := hc.Do(req)
	g.Expect(err).NotTo(HaveOccurred())
	resp.Body.Close()
	g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
	g.Expect(lines).To(HaveLen(1))
	g.Expect(lines[0]).To(And(ContainSubstring(`"msg"="Kerberos handshake"`), ContainSubstring(`"spn"="`+spn+`"`),
		ContainSubstring(`"enctype"=18`), ContainSubstring(`"gssFlags"="0x32"`),
		ContainSubstring(`"channelBinding"="none"`), ContainSubstring(`"mutualAuthentication"="verified"`)))
	// Neither the password nor a SPNEGO token (0x60 0x82 in base64).
	g.Expect(lines[0]).NotTo(Or(ContainSubstring(password), ContainSubstring("YII")))
}
