package ntlmserver

import (
	"context"
	"encoding/base64"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/pam-operator/pam-operator/internal/ntlmssp"
)

var (
	testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	jen     = User{Domain: "PRIV", Username: "jen", Password: "s3cret!"}
	// jenCreds are jen's credentials as a client holds them.
	jenCreds = ntlmssp.Credentials{Domain: "PRIV", Username: "jen", Password: "s3cret!"}
)

// authenticateFor answers challenge as creds would, without channel binding.
func authenticateFor(t *testing.T, creds ntlmssp.Credentials, negotiate, challenge []byte) []byte {
	t.Helper()
	msg, err := ntlmssp.Authenticate(ntlmssp.ClientInput{Credentials: creds, Negotiate: negotiate, Challenge: challenge,
		Binding: ntlmssp.NoBinding, Now: testNow, Rand: rand.NewChaCha8([32]byte{6})})
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// standaloneChallenge is a CHALLENGE no server on a test connection issued.
func standaloneChallenge(t *testing.T) []byte {
	t.Helper()
	challenge, err := ntlmssp.Challenge(ntlmssp.Negotiate(), ntlmssp.Target{Domain: "PRIV", Computer: "MIM"}, make([]byte, 8), testNow)
	if err != nil {
		t.Fatal(err)
	}
	return challenge
}

// conn simulates one connection to s: each request carries the same connection context.
type conn struct {
	s   *Server
	ctx context.Context
}

func (c *conn) do(authorization string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "/", nil).WithContext(c.ctx)
	if authorization != "" {
		r.Header.Set("Authorization", authorization)
	}
	w := httptest.NewRecorder()
	if account, ok := c.s.Authenticate(w, r); ok {
		w.WriteString(account)
	}
	return w
}

func newConnServer(t *testing.T, rejected *string) (*Server, *conn) {
	t.Helper()
	s, err := New(Options{
		Users:    map[string]User{"jen": jen},
		Now:      func() time.Time { return testNow },
		Rejected: func(_ *http.Request, err error) { *rejected = err.Error() },
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, &conn{s: s, ctx: s.ConnContext(context.Background(), nil)}
}

// handshake runs NEGOTIATE and returns the AUTHENTICATE for the challenge.
func (c *conn) handshake(t *testing.T, creds ntlmssp.Credentials) string {
	t.Helper()
	negotiate := ntlmssp.Negotiate()
	w := c.do("NTLM " + base64.StdEncoding.EncodeToString(negotiate))
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("NEGOTIATE answered %d", w.Code)
	}
	token, ok := strings.CutPrefix(w.Header().Get("WWW-Authenticate"), "NTLM ")
	if !ok {
		t.Fatalf("no challenge in %v", w.Header())
	}
	challenge, _ := base64.StdEncoding.DecodeString(token)
	return "NTLM " + base64.StdEncoding.EncodeToString(authenticateFor(t, creds, negotiate, challenge))
}

// TestServerConnectionState: the connection is authenticated by the handshake, stays so
// without a header, and a replayed AUTHENTICATE finds no challenge.
func TestServerConnectionState(t *testing.T) {
	g := NewWithT(t)
	var rejected string
	s, c := newConnServer(t, &rejected)

	w := c.do("")
	g.Expect(w.Code).To(Equal(http.StatusUnauthorized))
	g.Expect(w.Header().Values("WWW-Authenticate")).To(Equal([]string{"Negotiate", "NTLM"}))
	g.Expect(w.Header().Get("Content-Type")).To(Equal("text/html"))

	authenticate := c.handshake(t, jenCreds)
	w = c.do(authenticate)
	g.Expect(w.Code).To(Equal(http.StatusOK), rejected)
	g.Expect(w.Body.String()).To(Equal("jen"))
	g.Expect(c.do("").Body.String()).To(Equal("jen"), "the connection stays authenticated")

	// Another connection is not authenticated, and cannot use this connection's handshake.
	other := &conn{s: s, ctx: s.ConnContext(context.Background(), nil)}
	g.Expect(other.do("").Code).To(Equal(http.StatusUnauthorized))

	w = c.do(authenticate)
	g.Expect(w.Code).To(Equal(http.StatusUnauthorized), "a replay is refused")
	g.Expect(rejected).To(ContainSubstring("sent no CHALLENGE"))
	g.Expect(c.do("").Code).To(Equal(http.StatusUnauthorized), "and a refused handshake ends the connection's identity")
	g.Expect(s.Stats()).To(Equal(Stats{Connections: 2, Challenges: 1, Authenticated: 1, Refused: 1}))
}

// TestServerRefusedConnectionIsSpent: after a refused AUTHENTICATE the connection takes no
// new handshake, not even with the right password, as Apache's mod_auth_gssapi; a new
// connection does.
func TestServerRefusedConnectionIsSpent(t *testing.T) {
	g := NewWithT(t)
	var rejected string
	s, c := newConnServer(t, &rejected)
	wrong := jenCreds
	wrong.Password = "not-the-password"
	g.Expect(c.do(c.handshake(t, wrong)).Code).To(Equal(http.StatusUnauthorized))

	w := c.do("NTLM " + base64.StdEncoding.EncodeToString(ntlmssp.Negotiate()))
	g.Expect(w.Code).To(Equal(http.StatusUnauthorized))
	g.Expect(w.Header().Values("WWW-Authenticate")).To(Equal([]string{"Negotiate", "NTLM"}), "no challenge")
	g.Expect(rejected).To(ContainSubstring("new connection"))

	fresh := &conn{s: s, ctx: s.ConnContext(context.Background(), nil)}
	w = fresh.do(fresh.handshake(t, jenCreds))
	g.Expect(w.Code).To(Equal(http.StatusOK), rejected)
	g.Expect(s.Stats()).To(Equal(Stats{Connections: 2, Challenges: 2, Authenticated: 1, Refused: 2}))
}

func TestServerRefusesMalformedAuthorization(t *testing.T) {
	spnego := base64.StdEncoding.EncodeToString([]byte{0x60, 0x28, 0x06, 0x06, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x02, 0xa0, 0x1e, 0, 0, 0})
	withoutUnicode := ntlmssp.Negotiate()
	withoutUnicode[12] &^= 0x01 // NTLMSSP_NEGOTIATE_UNICODE, the lowest bit of the flags
	challenge := standaloneChallenge(t)
	cases := []struct {
		name, header, reason string
	}{
		{"Basic", "Basic amVuOnNlY3JldA==", "scheme Basic, which is not offered"},
		{"a bare credential", "amVuOnNlY3JldA==", "scheme (unreadable)"},
		{"not base64", "NTLM ***", "not base64"},
		{"SPNEGO under Negotiate", "Negotiate " + spnego, "not an NTLMSSP message"},
		{"a CHALLENGE", "NTLM " + base64.StdEncoding.EncodeToString(challenge), "type 2"},
		{"a truncated NEGOTIATE", "NTLM " + base64.StdEncoding.EncodeToString(ntlmssp.Negotiate()[:14]), "truncated"},
		{"a NEGOTIATE without Unicode", "NTLM " + base64.StdEncoding.EncodeToString(withoutUnicode), "Unicode"},
		{"an AUTHENTICATE without CHALLENGE", "NTLM " + base64.StdEncoding.EncodeToString(authenticateFor(t, jenCreds, ntlmssp.Negotiate(), challenge)), "sent no CHALLENGE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			var rejected string
			_, c := newConnServer(t, &rejected)
			w := c.do(tc.header)
			g.Expect(w.Code).To(Equal(http.StatusUnauthorized))
			g.Expect(w.Header().Values("WWW-Authenticate")).To(Equal([]string{"Negotiate", "NTLM"}))
			g.Expect(rejected).To(ContainSubstring(tc.reason))
			g.Expect(rejected).NotTo(ContainSubstring("amVu"))
		})
	}
}

// TestServerChallengeExpires: an AUTHENTICATE long after its CHALLENGE is refused.
func TestServerChallengeExpires(t *testing.T) {
	g := NewWithT(t)
	now := testNow
	var rejected string
	s, err := New(Options{
		Users:    map[string]User{"jen": jen},
		Now:      func() time.Time { return now },
		Rejected: func(_ *http.Request, err error) { rejected = err.Error() },
	})
	g.Expect(err).NotTo(HaveOccurred())
	c := &conn{s: s, ctx: s.ConnContext(context.Background(), nil)}
	authenticate := c.handshake(t, jenCreds)
	now = now.Add(6 * time.Minute)
	g.Expect(c.do(authenticate).Code).To(Equal(http.StatusUnauthorized))
	g.Expect(rejected).To(ContainSubstring("challenge is older than 5m0s"))
}

// TestOptions: New refuses options it cannot serve, and the channel binding policies parse
// back from their names.
func TestServerOptions(t *testing.T) {
	cases := []struct {
		name string
		opts Options
		want string
	}{
		{name: "no users", opts: Options{}, want: "no users"},
		{name: "user without password", opts: Options{Users: map[string]User{"jen": {Username: "jen"}}}, want: "user jen"},
		{name: "unknown scheme", opts: Options{Users: map[string]User{"jen": jen}, Schemes: []string{"Basic"}}, want: `scheme "Basic"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.opts)
			NewWithT(t).Expect(err).To(MatchError(ContainSubstring(tc.want)))
		})
	}
	g := NewWithT(t)
	for _, p := range []ChannelBindingPolicy{ChannelBindingNone, ChannelBindingAllow, ChannelBindingRequire} {
		parsed, err := ParseChannelBindingPolicy(p.String())
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(parsed).To(Equal(p))
	}
	_, err := ParseChannelBindingPolicy("sometimes")
	g.Expect(err).To(HaveOccurred())
}
