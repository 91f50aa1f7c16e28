package kerberos

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-logr/logr"

	"github.com/pam-operator/pam-operator/internal/gsskrb5"
	"github.com/pam-operator/pam-operator/internal/pam/auth"
)

const (
	// drainLimit is how much of a refused answer is read so that its connection can be reused.
	drainLimit = 64 << 10
	// maxAnswerTokenLen bounds the server's Negotiate answer, checked on its base64 form before
	// decoding. A real one, an AP-REP in a SPNEGO wrapper, is a few hundred bytes.
	maxAnswerTokenLen = 8 << 10
)

// Wrap returns the transport wrapper that authenticates requests with this Client; it is
// meant for pam.Config.Auth.
//
// The first request to a server goes without a token. When the server answers 401 and
// offers Negotiate (in any WWW-Authenticate value, in any position), the request is sent
// once more with a token. From then on requests to that server carry a token at once, which
// spares a round trip and a second upload of each body; if the server refuses such a token
// (its service key changed, or its certificate, which the channel binding names), the
// request is sent once more with a new service ticket. A 401 to the request with the token
// is returned to the caller as it is: there is never a third attempt. A 401 that does not
// offer Negotiate is returned untouched, so the caller can report what the server offers.
//
// Over https the token carries a channel binding to the server's certificate (RFC 5929
// tls-server-end-point), as IIS Extended Protection expects. A success answer to a request
// with a token must carry an AP-REP (mutual authentication) that proves the server holds the
// service key; any answer's AP-REP is verified. One that proves nothing is an *auth.Error.
func (c *Client) Wrap(next http.RoundTripper) http.RoundTripper {
	return &transport{c: c, next: next}
}

type transport struct {
	c    *Client
	next http.RoundTripper
}

// RoundTrip implements http.RoundTripper. It never modifies req.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	key := originKey(req.URL)
	spn := t.c.spnFor(req.URL)
	if o := t.c.origin(key); o != nil {
		resp, proof, err := t.attempt(req, spn, o.binding, false, req.Body)
		if err != nil {
			return nil, err
		}
		if !wantsNegotiate(resp) {
			return t.finish(req, spn, resp, proof)
		}
		return t.retry(req, resp, key, spn, true)
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil || !wantsNegotiate(resp) {
		return resp, err
	}
	return t.retry(req, resp, key, spn, false)
}

// retry sends req once more with a token, after prev (a 401 offering Negotiate). refresh
// asks for a new service ticket, because the server refused the cached one.
func (t *transport) retry(req *http.Request, prev *http.Response, key, spn string, refresh bool) (*http.Response, error) {
	binding := bindingOf(prev.TLS)
	t.c.setOrigin(key, &origin{binding: binding})
	body, err := rewind(req)
	if err != nil {
		// The body cannot be sent twice: the caller gets the server's 401, and the next
		// request carries a token from the start.
		return prev, nil
	}
	drain(prev)
	resp, proof, err := t.attempt(req, spn, binding, refresh, body)
	if err != nil {
		return nil, err
	}
	return t.finish(req, spn, resp, proof)
}

// proof is what is needed to check the server's AP-REP.
type proof struct {
	tk       *ticket
	authTime time.Time
	binding  []byte
}

// attempt sends a copy of req with a Negotiate token for spn and the given body.
func (t *transport) attempt(req *http.Request, spn string, binding []byte, refresh bool, body io.ReadCloser) (*http.Response, proof, error) {
	tk, err := t.c.serviceTicket(req.Context(), spn, refresh)
	if err != nil {
		closeBody(body)
		return nil, proof{}, err
	}
	cname, crealm := t.c.clientName()
	at := t.c.authenticatorTime()
	token, err := gsskrb5.InitToken(tk.tkt, tk.key, cname, crealm, at, binding)
	if err != nil {
		closeBody(body)
		return nil, proof{}, fmt.Errorf("kerberos: building the Negotiate token for %s: %w", spn, err)
	}
	out := req.Clone(req.Context())
	out.Body = body
	out.Header.Set("Authorization", "Negotiate "+base64.StdEncoding.EncodeToString(token))
	resp, err := t.next.RoundTrip(out)
	if err != nil {
		return nil, proof{}, err
	}
	return resp, proof{tk: tk, authTime: at, binding: binding}, nil
}

// finish checks the server's proof of identity on an answer to a request that carried a token.
// A success answer must carry an AP-REP: the token asked for mutual authentication, and without
// the proof a server that cannot read the ticket (not the PAM server, whatever its name and
// certificate say) could answer 200 to a close it never made. Other answers are taken only as
// failures, so their proof is checked when they carry one.
func (t *transport) finish(req *http.Request, spn string, resp *http.Response, p proof) (*http.Response, error) {
	if resp.StatusCode == http.StatusUnauthorized {
		logHandshake(req, spn, p, resp.StatusCode, "refused")
		return resp, nil
	}
	success := resp.StatusCode >= 200 && resp.StatusCode < 300
	token, ok := negotiateToken(resp.Header.Values("WWW-Authenticate"))
	if !ok && !success {
		logHandshake(req, spn, p, resp.StatusCode, "absent")
		return resp, nil
	}
	err := errNoAPRep
	present := false
	if ok {
		var raw []byte
		raw, err = auth.DecodeToken(token, maxAnswerTokenLen)
		if err == nil {
			present, err = gsskrb5.VerifyAPRep(raw, p.tk.key, p.authTime)
			if err == nil && !present && success {
				err = errNoAPRep
			}
		}
	}
	if err == nil {
		logHandshake(req, spn, p, resp.StatusCode, map[bool]string{true: "verified", false: "absent"}[present])
	} else {
		logHandshake(req, spn, p, resp.StatusCode, "failed")
		drain(resp)
		return nil, authError(fmt.Sprintf("the server %s did not prove it is %s (%v); it may not be the PAM server, servicePrincipalName may name another service, or a proxy between may drop WWW-Authenticate from answers", req.URL.Host, spn, err), err)
	}
	return resp, nil
}

// logHandshake writes what a Negotiate exchange carried at V(1), with the logger of the
// request's context: the SPN, the ticket's encryption type, the GSS-API flags requested, the
// channel binding and whether the server proved itself (an AP-REP "verified", "absent", or
// "failed"; "refused" for a 401). A refusal by a real server can then be compared with what a
// Windows client sends (docs/authentication.md). Never a token, ticket or key.
func logHandshake(req *http.Request, spn string, p proof, status int, mutual string) {
	log := logr.FromContextOrDiscard(req.Context()).V(1)
	if !log.Enabled() || p.tk == nil {
		return
	}
	binding := "none"
	if p.binding != nil {
		binding = "tls-server-end-point"
	}
	log.Info("Kerberos handshake", "host", req.URL.Host, "spn", spn, "status", status,
		"enctype", p.tk.key.KeyType, "gssFlags", fmt.Sprintf("%#x", gsskrb5.RequestedFlags),
		"channelBinding", binding, "mutualAuthentication", mutual)
}

var errNoAPRep = errors.New("its answer carries no AP-REP, the mutual authentication the request asked for")

// spnFor returns the service principal name for a request's URL.
func (c *Client) spnFor(u *url.URL) string {
	if c.s.spn != "" {
		return c.s.spn
	}
	return "HTTP/" + strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
}

// originKey identifies a server: scheme, host and port.
func originKey(u *url.URL) string {
	return strings.ToLower(u.Scheme + "://" + u.Host)
}

// bindingOf returns the channel binding of a TLS connection's server certificate, or nil
// for a plain connection.
func bindingOf(state *tls.ConnectionState) []byte {
	if state == nil || len(state.PeerCertificates) == 0 {
		return nil
	}
	return auth.ChannelBinding(state.PeerCertificates[0])
}

// wantsNegotiate tells whether resp is a 401 offering Negotiate.
func wantsNegotiate(resp *http.Response) bool {
	if resp.StatusCode != http.StatusUnauthorized {
		return false
	}
	for _, ch := range auth.ParseChallenges(resp.Header.Values("WWW-Authenticate")) {
		if strings.EqualFold(ch.Scheme, "Negotiate") {
			return true
		}
	}
	return false
}

// negotiateToken returns the token of a "Negotiate <token>" challenge.
func negotiateToken(values []string) (string, bool) {
	for _, ch := range auth.ParseChallenges(values) {
		if strings.EqualFold(ch.Scheme, "Negotiate") && ch.Params != "" {
			return ch.Params, true
		}
	}
	return "", false
}

var errNoRewind = errors.New("the request body cannot be sent twice (no GetBody)")

// rewind returns a fresh copy of req's body for a second attempt.
func rewind(req *http.Request) (io.ReadCloser, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return req.Body, nil
	}
	if req.GetBody == nil {
		return nil, errNoRewind
	}
	return req.GetBody()
}

// drain reads a little of an answer that is thrown away and closes it, so that its
// connection can be reused.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, drainLimit))
	_ = resp.Body.Close()
}

func closeBody(body io.ReadCloser) {
	if body != nil {
		_ = body.Close()
	}
}
