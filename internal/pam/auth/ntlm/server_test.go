package ntlm

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

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
	s, err := NewServer(ServerOptions{
		Users:    map[string]Credentials{"jen": jen},
		Now:      func() time.Time { return testNow },
		Rejected: func(_ *http.Request, err error) { *rejected = err.Error() },
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, &conn{s: s, ctx: s.ConnContext(context.Background(), nil)}
}

// handshake runs NEGOTIATE and returns the AUTHENTICATE for the challenge.
func (c *conn) handshake(t *testing.T, creds Credentials) string {
	t.Helper()
	negotiate := encodeNegotiate(clientFlags)
	w := c.do("NTLM " + base64.StdEncoding.EncodeToString(negotiate))
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("NEGOTIATE answered %d", w.Code)
	}
	token, ok := challengeToken(w.Header(), SchemeNTLM)
	if !ok {
		t.Fatalf("no challenge in %v", w.Header())
	}
	challenge, _ := base64.StdEncoding.DecodeString(token)
	msg, err := buildAuthenticate(clientInput{creds: creds, negotiate: negotiate, challenge: challenge, binding: noBinding, now: testNow, rand: seededRand(6)})
	if err != nil {
		t.Fatal(err)
	}
	return "NTLM " + base64.StdEncoding.EncodeToString(msg)
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

	authenticate := c.handshake(t, jen)
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
	g.Expect(s.Stats()).To(Equal(ServerStats{Connections: 2, Challenges: 1, Authenticated: 1, Refused: 1}))
}

func TestServerRefusesMalformedAuthorization(t *testing.T) {
	spnego := base64.StdEncoding.EncodeToString([]byte{0x60, 0x28, 0x06, 0x06, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x02, 0xa0, 0x1e, 0, 0, 0})
	cases := []struct {
		name, header, reason string
	}{
		{"Basic", "Basic amVuOnNlY3JldA==", "scheme Basic, which is not offered"},
		{"a bare credential", "amVuOnNlY3JldA==", "scheme (unreadable)"},
		{"not base64", "NTLM ***", "not base64"},
		{"SPNEGO under Negotiate", "Negotiate " + spnego, "not an NTLMSSP message"},
		{"a CHALLENGE", "NTLM " + base64.StdEncoding.EncodeToString(testChallenge(t, testNow)), "type 2"},
		{"a truncated NEGOTIATE", "NTLM " + base64.StdEncoding.EncodeToString(encodeNegotiate(clientFlags)[:14]), "truncated"},
		{"a NEGOTIATE without Unicode", "NTLM " + base64.StdEncoding.EncodeToString(encodeNegotiate(flagNTLM)), "Unicode"},
		{"an AUTHENTICATE without CHALLENGE", "NTLM " + base64.StdEncoding.EncodeToString(newExchange(t, jen, nil).authenticate), "sent no CHALLENGE"},
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
	s, err := NewServer(ServerOptions{
		Users:    map[string]Credentials{"jen": jen},
		Now:      func() time.Time { return now },
		Rejected: func(_ *http.Request, err error) { rejected = err.Error() },
	})
	g.Expect(err).NotTo(HaveOccurred())
	c := &conn{s: s, ctx: s.ConnContext(context.Background(), nil)}
	authenticate := c.handshake(t, jen)
	now = now.Add(6 * time.Minute)
	g.Expect(c.do(authenticate).Code).To(Equal(http.StatusUnauthorized))
	g.Expect(rejected).To(ContainSubstring("challenge is older than 5m0s"))
}
