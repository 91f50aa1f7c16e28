package ntlm

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pam-operator/pam-operator/internal/ntlmssp"
	"github.com/pam-operator/pam-operator/internal/pam/auth"
)

// defaultMaxConns bounds the authenticated connections to one server when neither Options
// nor the wrapped transport does.
const defaultMaxConns = 8

// drainLimit is how much of a discarded answer (IIS's 401 page) is read so that its
// connection is kept: closing an unread body closes the connection, and with it the
// handshake.
const drainLimit = 64 << 10

// maxChallengeLen bounds a CHALLENGE message, checked on its base64 form before decoding. A real
// one is a few hundred bytes: a target name and a handful of names and flags in its target
// info, each name at most 255 characters.
const maxChallengeLen = 8 << 10

// Options tune the client transport.
type Options struct {
	// MaxConns bounds the connections kept to one server, each authenticated once, and so
	// the calls in flight to it; further calls wait for a free connection. 0 means the
	// wrapped transport's MaxConnsPerHost, or 8 when that is 0.
	MaxConns int
	// Workstation is the computer name sent in the AUTHENTICATE; the server shows it in its
	// logon events. Empty sends none.
	Workstation string

	// Test knobs.
	noBinding   bool              // send no MsvAvChannelBindings, as clients without Extended Protection
	bindingCert *x509.Certificate // bind to this certificate instead of the server's
	now         func() time.Time
	rand        io.Reader
}

// Wrap returns the transport wrapper that authenticates with NTLMv2 as creds; it is meant
// for pam.Config.Auth. See WrapWithOptions.
func Wrap(creds ntlmssp.Credentials) func(http.RoundTripper) http.RoundTripper {
	return WrapWithOptions(creds, Options{})
}

// WrapWithOptions returns the transport wrapper that authenticates with NTLMv2 as creds.
// The wrapped transport must be an *http.Transport: it is cloned into connection slots that
// each hold one connection per server (see Transport). Invalid credentials or another kind of
// transport make every call fail with an *auth.Error.
func WrapWithOptions(creds ntlmssp.Credentials, opts Options) func(http.RoundTripper) http.RoundTripper {
	return func(next http.RoundTripper) http.RoundTripper {
		return newTransport(creds, next, opts)
	}
}

// Transport is the NTLM client transport. It is safe for concurrent use.
//
// NTLM authenticates a connection, so a handshake cannot be left to the luck of
// http.Transport's connection reuse. Each call borrows a slot: a clone of the wrapped
// transport limited to one connection per server, so NEGOTIATE, CHALLENGE and AUTHENTICATE
// share a connection for certain. A slot is authenticated once and then reused, as IIS keeps
// the connection authenticated; it is returned to the pool when the caller has read or
// closed the answer's body. Slots are bounded by Options.MaxConns.
//
// The first call to a server goes without a token. A 401 that offers NTLM (or only
// Negotiate, under which IIS accepts raw NTLM tokens) starts the handshake; a 401 that
// offers neither is returned untouched, so the caller can say what the server offers. A 401
// to the AUTHENTICATE means the server refused the account, and is returned as it is: there
// is never more than one handshake per call. When an authenticated slot is answered 401 (the
// server dropped the connection and a new one was dialed), the handshake is done once more.
//
// Over https the AUTHENTICATE binds to the server's certificate (RFC 5929
// tls-server-end-point), as IIS Extended Protection expects; over http it carries the empty
// binding Windows sends. Request bodies are sent with every leg, so a body must be
// rewindable (http.NewRequest sets GetBody for in-memory bodies).
type Transport struct {
	creds    ntlmssp.Credentials
	opts     Options
	base     *http.Transport
	err      error // a configuration error every call reports
	maxConns int
	now      func() time.Time
	rand     io.Reader

	// generation counts CloseIdleConnections calls: a slot authenticated in an earlier
	// generation has lost its connection.
	generation atomic.Uint64

	mu      sync.Mutex
	pools   map[string]*pool  // by origin
	schemes map[string]string // by origin: the scheme the server offered, once learned
}

var _ http.RoundTripper = (*Transport)(nil)

func newTransport(creds ntlmssp.Credentials, next http.RoundTripper, opts Options) *Transport {
	t := &Transport{opts: opts, pools: map[string]*pool{}, schemes: map[string]string{}, now: opts.now, rand: opts.rand}
	if t.now == nil {
		t.now = time.Now
	}
	if t.rand == nil {
		t.rand = rand.Reader
	}
	t.creds, t.err = ntlmssp.NewCredentials(creds.Username, creds.Domain, creds.Password)
	base, ok := next.(*http.Transport)
	switch {
	case t.err != nil:
	case !ok:
		t.err = authError(fmt.Sprintf("NTLM needs an *http.Transport to keep each handshake on one connection, not %T", next), nil)
	case base.DisableKeepAlives:
		t.err = authError("NTLM authenticates a kept-alive connection, and the transport disables keep-alive", nil)
	}
	if t.err != nil {
		return t
	}
	t.base = base
	t.maxConns = opts.MaxConns
	if t.maxConns <= 0 {
		t.maxConns = base.MaxConnsPerHost
	}
	if t.maxConns <= 0 {
		t.maxConns = defaultMaxConns
	}
	return t
}

// pool is the slots for one origin.
type pool struct {
	idle chan *slot    // slots free to borrow
	room chan struct{} // one token per slot created, up to the bound
	all  []*slot       // every slot created, guarded by Transport.mu
}

// slot is a transport that holds at most one connection to the origin. Only the call that
// borrowed it touches its state.
type slot struct {
	rt       *http.Transport
	authed   bool   // the connection was authenticated...
	authGen  uint64 // ...in this generation
	lastUsed time.Time
}

// RoundTrip implements http.RoundTripper. It never modifies req, and always closes its body.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	src := &bodySource{req: req}
	if t.err != nil {
		src.close()
		return nil, t.err
	}
	origin := strings.ToLower(req.URL.Scheme + "://" + req.URL.Host)
	p := t.pool(origin)
	s, err := t.borrow(req.Context(), p)
	if err != nil {
		src.close()
		return nil, err
	}
	resp, err := t.exchange(req, src, s, origin)
	if err != nil {
		src.close()
		s.authed = false
		t.giveBack(p, s)
		return nil, err
	}
	// The caller sees its own request, not the copy with the Authorization header.
	resp.Request = req
	if resp.Body == nil || resp.Body == http.NoBody {
		t.giveBack(p, s)
		return resp, nil
	}
	resp.Body = &releasingBody{rc: resp.Body, release: func() { t.giveBack(p, s) }}
	return resp, nil
}

// exchange sends req on slot s, authenticating the slot's connection when needed.
func (t *Transport) exchange(req *http.Request, src *bodySource, s *slot, origin string) (*http.Response, error) {
	if s.authed && (s.authGen != t.generation.Load() || t.expired(s)) {
		s.authed = false
	}
	if s.authed {
		resp, _, err := t.send(s, req, src, "")
		if err != nil || resp.StatusCode != http.StatusUnauthorized {
			return resp, err
		}
		// The authenticated connection is gone: authenticate the new one, once.
		s.authed = false
		scheme := offeredScheme(resp.Header)
		if scheme == "" || !src.repeatable() {
			return resp, nil
		}
		t.setScheme(origin, scheme)
		drain(resp)
		return t.handshake(req, src, s, origin, scheme)
	}
	scheme := t.scheme(origin)
	if scheme == "" {
		resp, _, err := t.send(s, req, src, "")
		if err != nil || resp.StatusCode != http.StatusUnauthorized {
			return resp, err
		}
		if scheme = offeredScheme(resp.Header); scheme == "" || !src.repeatable() {
			// Not ours to answer, or the body cannot be sent again: the caller gets the 401.
			return resp, nil
		}
		t.setScheme(origin, scheme)
		drain(resp)
	}
	return t.handshake(req, src, s, origin, scheme)
}

var errNoRewind = errors.New("ntlm: the request body cannot be sent again for the NTLM handshake; build the request with an in-memory body or set GetBody")

// handshake authenticates the slot's connection with req: NEGOTIATE, then AUTHENTICATE, each
// carrying the request, on the one connection the slot holds.
func (t *Transport) handshake(req *http.Request, src *bodySource, s *slot, origin, scheme string) (*http.Response, error) {
	if !src.repeatable() {
		return nil, errNoRewind
	}
	negotiate := ntlmssp.Negotiate()
	resp, _, err := t.send(s, req, src, scheme+" "+base64.StdEncoding.EncodeToString(negotiate))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusUnauthorized {
		// Served without authentication after all.
		return resp, nil
	}
	token, ok := challengeToken(resp.Header, scheme)
	if !ok {
		// Learn the scheme again on the next call: the server's configuration changed.
		t.setScheme(origin, "")
		if offeredScheme(resp.Header) == "" {
			return resp, nil
		}
		drain(resp)
		return nil, authError(fmt.Sprintf("the server %s answered the NTLM negotiate under %s without a challenge: it does not accept NTLM; enable the NTLM provider of its Windows authentication, or use kerberos", req.URL.Host, scheme), nil)
	}
	var authenticate []byte
	challenge, err := auth.DecodeToken(token, maxChallengeLen)
	if err == nil {
		authenticate, err = ntlmssp.Authenticate(ntlmssp.ClientInput{
			Credentials: t.creds,
			Negotiate:   negotiate,
			Challenge:   challenge,
			Binding:     t.binding(resp),
			TargetName:  "HTTP/" + strings.ToLower(strings.TrimSuffix(req.URL.Hostname(), ".")),
			Workstation: t.opts.Workstation,
			Now:         t.now(),
			Rand:        t.rand,
		})
		token = base64.StdEncoding.EncodeToString(authenticate)
	}
	drain(resp)
	if err != nil {
		return nil, authError(fmt.Sprintf("the NTLM challenge of %s cannot be answered (%v); if a proxy stands between, make sure it passes WWW-Authenticate unchanged", req.URL.Host, err), err)
	}
	resp, reused, err := t.send(s, req, src, scheme+" "+token)
	if err != nil {
		return nil, err
	}
	logHandshake(req, scheme, challenge, authenticate, resp.StatusCode)
	if resp.StatusCode == http.StatusUnauthorized {
		if !reused {
			// The AUTHENTICATE went on a new connection, which never saw the challenge.
			drain(resp)
			return nil, authError(fmt.Sprintf("%s (or a proxy) closed the connection during the NTLM handshake; NTLM needs one kept-alive connection from challenge to answer: allow keep-alive on IIS and any proxy, or use kerberos", req.URL.Host), nil)
		}
		// The account was refused: the caller gets the 401, and there is no second try.
		// Nor is the connection used again: an acceptor may keep the failed handshake with
		// it (Apache's mod_auth_gssapi with gss-ntlmssp answers the next NEGOTIATE there
		// without a challenge), so the next handshake starts on a new connection.
		t.renew(s)
		return resp, nil
	}
	s.authed, s.authGen = !resp.Close, t.generation.Load()
	return resp, nil
}

// binding returns the channel binding for the connection that brought the challenge.
func (t *Transport) binding(challenge *http.Response) []byte {
	switch {
	case t.opts.noBinding:
		return nil
	case t.opts.bindingCert != nil:
		return auth.ChannelBinding(t.opts.bindingCert)
	case challenge.TLS != nil && len(challenge.TLS.PeerCertificates) > 0:
		return auth.ChannelBinding(challenge.TLS.PeerCertificates[0])
	}
	return ntlmssp.NoBinding
}

// send sends a copy of req on slot s with the next copy of its body and the given
// Authorization (none when empty). It reports whether the connection was reused.
func (t *Transport) send(s *slot, req *http.Request, src *bodySource, authorization string) (*http.Response, bool, error) {
	body, err := src.next()
	if err != nil {
		return nil, false, err
	}
	var reused atomic.Bool
	ctx := httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { reused.Store(info.Reused) },
	})
	out := req.Clone(ctx)
	out.Body = body
	if authorization == "" {
		out.Header.Del("Authorization")
	} else {
		out.Header.Set("Authorization", authorization)
	}
	resp, err := s.rt.RoundTrip(out)
	return resp, reused.Load(), err
}

// expired tells whether the slot's connection has idled longer than the transport keeps
// idle connections, so it is surely gone and a new one must be authenticated.
func (t *Transport) expired(s *slot) bool {
	timeout := t.base.IdleConnTimeout
	return timeout > 0 && t.now().Sub(s.lastUsed) >= timeout
}

func (t *Transport) pool(origin string) *pool {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.pools[origin]
	if p == nil {
		p = &pool{idle: make(chan *slot, t.maxConns), room: make(chan struct{}, t.maxConns)}
		t.pools[origin] = p
	}
	return p
}

// borrow takes a free slot of p, creates one while there is room, or waits for one.
func (t *Transport) borrow(ctx context.Context, p *pool) (*slot, error) {
	select {
	case s := <-p.idle:
		return s, nil
	default:
	}
	select {
	case s := <-p.idle:
		return s, nil
	case p.room <- struct{}{}:
		return t.newSlot(p), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// giveBack returns a borrowed slot to its pool; the pool has room for every slot created.
func (t *Transport) giveBack(p *pool, s *slot) {
	s.lastUsed = t.now()
	p.idle <- s
}

func (t *Transport) newSlot(p *pool) *slot {
	s := &slot{rt: t.slotTransport()}
	t.mu.Lock()
	p.all = append(p.all, s)
	t.mu.Unlock()
	return s
}

// slotTransport is a clone of the wrapped transport that holds one connection.
func (t *Transport) slotTransport() *http.Transport {
	rt := t.base.Clone()
	rt.MaxConnsPerHost = 1
	rt.MaxIdleConnsPerHost = 1
	// IIS does not do Windows authentication over HTTP/2.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	rt.Protocols = &protocols
	return rt
}

// renew gives slot s a new transport, so that its next call dials a new connection. The old
// connection may still be carrying an answer: CloseIdleConnections makes the old transport
// close it once the answer is read, instead of keeping it idle.
func (t *Transport) renew(s *slot) {
	t.mu.Lock()
	old := s.rt
	s.rt = t.slotTransport()
	t.mu.Unlock()
	old.CloseIdleConnections()
}

func (t *Transport) scheme(origin string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.schemes[origin]
}

func (t *Transport) setScheme(origin, scheme string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.schemes[origin] = scheme
}

// CloseIdleConnections closes the connections no call is using; their slots authenticate
// again on their next use. http.Client.CloseIdleConnections calls it.
func (t *Transport) CloseIdleConnections() {
	t.generation.Add(1)
	t.mu.Lock()
	var rts []*http.Transport
	for _, p := range t.pools {
		for _, s := range p.all {
			rts = append(rts, s.rt)
		}
	}
	t.mu.Unlock()
	for _, rt := range rts {
		rt.CloseIdleConnections()
	}
	if t.base != nil {
		t.base.CloseIdleConnections()
	}
}

// bodySource hands out the request's body: the original first, then fresh copies.
type bodySource struct {
	req  *http.Request
	used bool
}

func (b *bodySource) empty() bool {
	return b.req.Body == nil || b.req.Body == http.NoBody
}

// repeatable tells whether the body can be sent at least once more after the next send.
func (b *bodySource) repeatable() bool {
	return b.empty() || b.req.GetBody != nil
}

func (b *bodySource) next() (io.ReadCloser, error) {
	if !b.used {
		b.used = true
		return b.req.Body, nil
	}
	if b.empty() {
		return b.req.Body, nil
	}
	if b.req.GetBody == nil {
		return nil, errNoRewind
	}
	return b.req.GetBody()
}

// close closes the original body when it was never handed to a transport, which would
// have closed it.
func (b *bodySource) close() {
	if !b.used && b.req.Body != nil {
		b.used = true
		_ = b.req.Body.Close()
	}
}

// releasingBody gives the slot back once the caller has read the body to its end or closed
// it: until then the slot's one connection is busy with this answer.
type releasingBody struct {
	rc      io.ReadCloser
	once    sync.Once
	release func()
}

func (b *releasingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.once.Do(b.release)
	}
	return n, err
}

func (b *releasingBody) Close() error {
	err := b.rc.Close()
	b.once.Do(b.release)
	return err
}

// drain reads a little of an answer that is thrown away and closes it, so that its
// connection is kept for the next leg.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, drainLimit))
	_ = resp.Body.Close()
}
