// Package ntlmserver is the server side of NTLM over HTTP, as IIS's Windows authentication speaks
// it, for the emulator: plug Server.Authenticate into emulator.Options.Authenticate and
// Server.ConnContext into the http.Server. It challenges, verifies NTLMv2 responses (with
// internal/ntlmssp, the same protocol code the operator's client uses) and keeps each
// connection's identity: NTLM authenticates connections, not requests.
package ntlmserver

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/pam-operator/pam-operator/internal/ntlmssp"
	"github.com/pam-operator/pam-operator/internal/pam/auth"
)

// ChannelBindingPolicy is how the server treats channel bindings over https, as IIS's
// Extended Protection tokenChecking setting.
type ChannelBindingPolicy int

const (
	// ChannelBindingNone ignores channel bindings.
	ChannelBindingNone ChannelBindingPolicy = iota
	// ChannelBindingAllow checks a binding the client sends (non-zero) and accepts clients
	// that send none.
	ChannelBindingAllow
	// ChannelBindingRequire refuses clients that send no binding over https, and checks
	// the ones sent. Over plain http it is Allow: there is no certificate to bind to.
	ChannelBindingRequire
)

// ParseChannelBindingPolicy parses "none", "allow" or "require".
func ParseChannelBindingPolicy(s string) (ChannelBindingPolicy, error) {
	switch strings.ToLower(s) {
	case "none":
		return ChannelBindingNone, nil
	case "allow":
		return ChannelBindingAllow, nil
	case "require":
		return ChannelBindingRequire, nil
	}
	return ChannelBindingNone, fmt.Errorf("channel binding policy %q: want none, allow or require", s)
}

// String returns the policy's name as ParseChannelBindingPolicy reads it.
func (p ChannelBindingPolicy) String() string {
	switch p {
	case ChannelBindingNone:
		return "none"
	case ChannelBindingAllow:
		return "allow"
	case ChannelBindingRequire:
		return "require"
	}
	return fmt.Sprintf("ChannelBindingPolicy(%d)", int(p))
}

// defaultMaxClockSkew is how far the time in a client's response may be from the server's
// clock, and how long a challenge stays valid.
const defaultMaxClockSkew = 5 * time.Minute

// User is an account the server knows.
type User struct {
	// Domain is the NetBIOS domain name; empty matches any domain.
	Domain string
	// Username is the account name, or a user principal name.
	Username string
	Password string
}

// Options configure a Server.
type Options struct {
	// Users are the accounts that may authenticate, by the account name Authenticate
	// returns. A client's user and domain match an entry's Username (case-insensitively)
	// and Domain, which also matches the server's Domain or DNSDomain, or a client that
	// sent no domain; an entry without Domain matches any domain.
	Users map[string]User
	// Domain is the NetBIOS domain name the server announces (the target name); default
	// "PAM".
	Domain string
	// Computer is the NetBIOS computer name the server announces; default "PAMSERVER".
	Computer string
	// DNSDomain and DNSComputer are announced when set.
	DNSDomain, DNSComputer string
	// Schemes are offered in a bare 401, one WWW-Authenticate header each, in order:
	// SchemeNegotiate and/or SchemeNTLM. Default both, Negotiate first, as IIS.
	Schemes []string
	// ChannelBinding is the Extended Protection policy over https.
	ChannelBinding ChannelBindingPolicy
	// Certificate is the server's leaf certificate, which clients bind to over https.
	// Without it, a policy other than None refuses bindings over https.
	Certificate *x509.Certificate
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxClockSkew bounds the age of a challenge and the distance of a response's time
	// from Now; 0 means 5 minutes.
	MaxClockSkew time.Duration
	// Rejected, when set, is told why a handshake was refused. The error never carries a
	// password, hash or token.
	Rejected func(r *http.Request, err error)
}

// Stats count what a Server has seen.
type Stats struct {
	// Connections is the number of connections ConnContext saw.
	Connections int64
	// Challenges is the number of CHALLENGE messages sent.
	Challenges int64
	// Authenticated is the number of handshakes that succeeded.
	Authenticated int64
	// Refused is the number of handshake messages refused.
	Refused int64
}

// Server is the server side of NTLM over HTTP, as IIS's Windows authentication: it
// challenges, verifies NTLMv2 responses and keeps each connection's identity. It is safe for
// concurrent use. Its ConnContext must be installed on the http.Server.
type Server struct {
	opts    Options
	users   []userEntry
	schemes []string
	now     func() time.Time
	skew    time.Duration
	binding []byte // expected over https; nil without a Certificate
	rand    io.Reader

	connections, challenges, authenticated, refused atomic.Int64
}

type userEntry struct {
	account string
	creds   ntlmssp.Credentials
}

// New checks opts and returns a Server.
func New(opts Options) (*Server, error) {
	s := &Server{opts: opts, now: opts.Now, skew: opts.MaxClockSkew, rand: rand.Reader}
	if s.now == nil {
		s.now = time.Now
	}
	if s.skew <= 0 {
		s.skew = defaultMaxClockSkew
	}
	if s.opts.Domain == "" {
		s.opts.Domain = "PAM"
	}
	if s.opts.Computer == "" {
		s.opts.Computer = "PAMSERVER"
	}
	if len(opts.Users) == 0 {
		return nil, errors.New("ntlm: the server has no users")
	}
	for account, c := range opts.Users {
		creds, err := ntlmssp.NewCredentials(c.Username, c.Domain, c.Password)
		if err != nil {
			return nil, fmt.Errorf("ntlm: user %s: %w", account, err)
		}
		s.users = append(s.users, userEntry{account: account, creds: creds})
	}
	// Map order is random; a stable order makes a lookup with several matches predictable.
	sort.Slice(s.users, func(i, j int) bool { return s.users[i].account < s.users[j].account })
	s.schemes = opts.Schemes
	if len(s.schemes) == 0 {
		s.schemes = []string{ntlmssp.SchemeNegotiate, ntlmssp.SchemeNTLM}
	}
	for _, scheme := range s.schemes {
		if scheme != ntlmssp.SchemeNTLM && scheme != ntlmssp.SchemeNegotiate {
			return nil, fmt.Errorf("ntlm: scheme %q: want %s or %s", scheme, ntlmssp.SchemeNTLM, ntlmssp.SchemeNegotiate)
		}
	}
	switch opts.ChannelBinding {
	case ChannelBindingNone, ChannelBindingAllow, ChannelBindingRequire:
	default:
		return nil, fmt.Errorf("ntlm: unknown channel binding policy %d", int(opts.ChannelBinding))
	}
	if opts.Certificate != nil {
		s.binding = auth.ChannelBinding(opts.Certificate)
	}
	return s, nil
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Connections:   s.connections.Load(),
		Challenges:    s.challenges.Load(),
		Authenticated: s.authenticated.Load(),
		Refused:       s.refused.Load(),
	}
}

// connKey keys a connection's state in its context; it names the Server, so two Servers on
// one http.Server keep apart.
type connKey struct{ s *Server }

// connState is what the server knows about one connection. HTTP/1.1 serves a connection's
// requests one at a time; the mutex is for handlers that misbehave.
type connState struct {
	mu sync.Mutex
	connAuth
	// spent is set when an AUTHENTICATE was refused: no handshake succeeds on the connection
	// any more (see Authenticate).
	spent bool
}

// connAuth is a connection's authentication: an account, or a handshake in progress.
type connAuth struct {
	account string // authenticated account, once a handshake succeeded
	// The pending handshake, between CHALLENGE and AUTHENTICATE.
	scheme          string
	negotiate       []byte
	challenge       []byte
	serverChallenge []byte
	issued          time.Time
}

// ConnContext gives each connection its NTLM state; set it as http.Server.ConnContext (or
// httptest.Server.Config.ConnContext). The state lives in the connection's context, so it
// ends with the connection: NTLM authenticates connections, not requests.
func (s *Server) ConnContext(ctx context.Context, _ net.Conn) context.Context {
	s.connections.Add(1)
	return context.WithValue(ctx, connKey{s}, &connState{})
}

// Authenticate returns the account of r's connection. A connection is authenticated by an
// NTLM handshake on it; later requests on it need no header. Otherwise Authenticate answers
// r itself and returns false: a 401 offering the schemes (and an HTML page, as IIS), a 401
// carrying the CHALLENGE to a NEGOTIATE, or a 401 refusing an AUTHENTICATE. Without
// ConnContext installed it answers 500: it cannot tie a handshake to a connection.
func (s *Server) Authenticate(w http.ResponseWriter, r *http.Request) (string, bool) {
	st, _ := r.Context().Value(connKey{s}).(*connState)
	if st == nil {
		http.Error(w, "NTLM needs per-connection state: set the http.Server's ConnContext to the ntlm.Server's ConnContext.", http.StatusInternalServerError)
		return "", false
	}
	st.mu.Lock()
	defer st.mu.Unlock()

	header := strings.TrimSpace(r.Header.Get("Authorization"))
	if header == "" {
		if st.account != "" {
			return st.account, true
		}
		s.askForAuth(w)
		return "", false
	}
	// A new Authorization header starts over, as IIS does: the connection's identity is
	// whatever this handshake proves.
	st.account = ""
	if st.spent {
		// Apache's mod_auth_gssapi keeps a refused handshake's state with the connection and
		// refuses the next NEGOTIATE there, without a challenge. IIS may be more lenient; a
		// client that works with both opens a new connection, and this server makes sure.
		s.reject(w, r, st, errors.New("a handshake on a connection whose AUTHENTICATE was refused: the client must start over on a new connection"))
		return "", false
	}
	name, token, _ := strings.Cut(header, " ")
	scheme := s.offered(name)
	if scheme == "" {
		// Quote the scheme only when it looks like one: a header without a scheme could be a
		// bare credential.
		if len(name) > 20 || strings.ContainsFunc(name, func(c rune) bool { return !unicode.IsLetter(c) && c != '-' }) {
			name = "(unreadable)"
		}
		s.reject(w, r, st, fmt.Errorf("the client used the scheme %s, which is not offered", name))
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(token))
	if err != nil {
		s.reject(w, r, st, errors.New("the token is not base64"))
		return "", false
	}
	msgType, err := ntlmssp.MessageType(raw)
	if err != nil {
		s.reject(w, r, st, fmt.Errorf("the %s token is not an NTLMSSP message (raw NTLM only: SPNEGO and Kerberos tokens are refused)", scheme))
		return "", false
	}
	switch msgType {
	case ntlmssp.TypeNegotiate:
		s.challenge(w, r, st, scheme, raw)
		return "", false
	case ntlmssp.TypeAuthenticate:
		return s.verify(w, r, st, scheme, raw)
	}
	s.reject(w, r, st, fmt.Errorf("NTLM message type %d is not a NEGOTIATE or AUTHENTICATE", msgType))
	return "", false
}

// challenge answers a NEGOTIATE with a CHALLENGE and remembers both for the AUTHENTICATE.
func (s *Server) challenge(w http.ResponseWriter, r *http.Request, st *connState, scheme string, negotiate []byte) {
	serverChallenge := make([]byte, 8)
	if _, err := io.ReadFull(s.rand, serverChallenge); err != nil {
		s.reject(w, r, st, fmt.Errorf("reading random bytes: %w", err))
		return
	}
	now := s.now()
	challenge, err := ntlmssp.Challenge(negotiate, ntlmssp.Target{Domain: s.opts.Domain, Computer: s.opts.Computer,
		DNSDomain: s.opts.DNSDomain, DNSComputer: s.opts.DNSComputer}, serverChallenge, now)
	if err != nil {
		s.reject(w, r, st, err)
		return
	}

	st.connAuth = connAuth{scheme: scheme, negotiate: negotiate, challenge: challenge, serverChallenge: serverChallenge, issued: now}
	s.challenges.Add(1)
	w.Header().Set("WWW-Authenticate", scheme+" "+base64.StdEncoding.EncodeToString(challenge))
	writePage(w)
}

// verify checks an AUTHENTICATE against this connection's CHALLENGE.
func (s *Server) verify(w http.ResponseWriter, r *http.Request, st *connState, scheme string, raw []byte) (string, bool) {
	if st.challenge == nil {
		s.reject(w, r, st, errors.New("an AUTHENTICATE arrived on a connection that was sent no CHALLENGE: the client did not keep the connection alive"))
		return "", false
	}
	if scheme != st.scheme {
		s.reject(w, r, st, fmt.Errorf("the AUTHENTICATE came under %s, the NEGOTIATE under %s", scheme, st.scheme))
		return "", false
	}
	now := s.now()
	if now.Sub(st.issued) > s.skew {
		s.reject(w, r, st, fmt.Errorf("the challenge is older than %s", s.skew))
		return "", false
	}
	v, err := ntlmssp.Verify(ntlmssp.ServerInput{
		Negotiate:       st.negotiate,
		Challenge:       st.challenge,
		ServerChallenge: st.serverChallenge,
		Lookup:          s.lookup,
		Now:             now,
		MaxSkew:         s.skew,
	}, raw)
	if err == nil {
		err = s.checkBinding(r, v.Binding)
	}
	if err != nil {
		s.reject(w, r, st, err)
		st.spent = true
		return "", false
	}
	// One AUTHENTICATE per CHALLENGE: a replay on this connection finds no challenge.
	st.connAuth = connAuth{account: v.Account}
	s.authenticated.Add(1)
	return v.Account, true
}

// checkBinding applies the channel binding policy to what the client sent (nil: nothing).
func (s *Server) checkBinding(r *http.Request, sent []byte) error {
	if s.opts.ChannelBinding == ChannelBindingNone {
		return nil
	}
	overTLS := r.TLS != nil
	if sent == nil || ntlmssp.IsZero(sent) {
		if overTLS && s.opts.ChannelBinding == ChannelBindingRequire {
			return errors.New("the client sent no channel binding, and Extended Protection requires one over https (a client without Extended Protection, or a proxy that terminates TLS)")
		}
		return nil
	}
	expected := ntlmssp.NoBinding
	if overTLS {
		if s.binding == nil {
			return errors.New("the server has no Certificate to check channel bindings against")
		}
		expected = s.binding
	}
	if !hmac.Equal(sent, expected) {
		return errors.New("the client's channel binding does not match this server's certificate: TLS is terminated in between, or the handshake was relayed")
	}
	return nil
}

// lookup finds the account and password for a user as the client named it.
func (s *Server) lookup(user, domain string) (string, string, bool) {
	for _, u := range s.users {
		if !strings.EqualFold(u.creds.Username, user) {
			continue
		}
		d := u.creds.Domain
		if d == "" || domain == "" || strings.EqualFold(d, domain) ||
			strings.EqualFold(d, s.opts.Domain) && s.opts.DNSDomain != "" && strings.EqualFold(domain, s.opts.DNSDomain) {
			return u.account, u.creds.Password, true
		}
	}
	return "", "", false
}

// offered returns the canonical name of scheme if the server offers it.
func (s *Server) offered(scheme string) string {
	for _, o := range s.schemes {
		if strings.EqualFold(o, scheme) {
			return o
		}
	}
	return ""
}

// reject refuses a handshake message: the connection's handshake starts over.
func (s *Server) reject(w http.ResponseWriter, r *http.Request, st *connState, err error) {
	st.connAuth = connAuth{}
	s.refused.Add(1)
	if s.opts.Rejected != nil {
		s.opts.Rejected(r, err)
	}
	s.askForAuth(w)
}

// askForAuth answers 401 offering the schemes.
func (s *Server) askForAuth(w http.ResponseWriter) {
	for _, scheme := range s.schemes {
		w.Header().Add("WWW-Authenticate", scheme)
	}
	writePage(w)
}

// unauthorizedPage is the kind of body IIS sends with a 401.
const unauthorizedPage = `<!DOCTYPE html>
<html>
<head><title>401 - Unauthorized: Access is denied due to invalid credentials.</title></head>
<body>
<div id="header"><h1>Server Error</h1></div>
<div id="content">
<h2>401 - Unauthorized: Access is denied due to invalid credentials.</h2>
<h3>You do not have permission to view this directory or page using the credentials that you supplied.</h3>
</div>
</body>
</html>
`

func writePage(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = io.WriteString(w, unauthorizedPage)
}
