// Package kerberosserver is the server side of Negotiate (Kerberos) over HTTP, as IIS's Windows
// authentication speaks it, for the emulator: plug Verifier.Authenticate into
// emulator.Options.Authenticate. It verifies AP-REQs against a service keytab, checks channel
// bindings and replays, and answers with an AP-REP when the client asks for mutual
// authentication.
package kerberosserver

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/flags"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/jcmturner/gokrb5/v8/types"
	"github.com/pam-operator/pam-operator/internal/gsskrb5"
	"github.com/pam-operator/pam-operator/internal/pam/auth"
)

// defaultMaxClockSkew is how far a client's clock may be from the server's, as in Windows.
const defaultMaxClockSkew = 5 * time.Minute

// unauthorizedPage is the body IIS sends with a 401.
const unauthorizedPage = `<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">
<html xmlns="http://www.w3.org/1999/xhtml">
<head>
<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1"/>
<title>401 - Unauthorized: Access is denied due to invalid credentials.</title>
</head>
<body>
<div id="header"><h1>Server Error</h1></div>
<div id="content">
 <div class="content-container"><fieldset>
  <h2>401 - Unauthorized: Access is denied due to invalid credentials.</h2>
  <h3>You do not have permission to view this directory or page using the credentials that you supplied.</h3>
 </fieldset></div>
</div>
</body>
</html>
`

// Config configures the server side of Negotiate/Kerberos.
type Config struct {
	// Keytab is the content of a keytab holding the service principal's keys.
	Keytab []byte
	// ServicePrincipalName, e.g. "HTTP/pam.contoso.com", restricts the accepted tickets to
	// that service. When empty, a ticket for any principal of the keytab is accepted.
	ServicePrincipalName string
	// Certificate is the TLS certificate the server presents. When set, a token that carries a
	// channel binding must bind to it (IIS Extended Protection).
	Certificate *x509.Certificate
	// RequireChannelBinding refuses tokens sent over TLS without a channel binding
	// (Extended Protection "Required"). It needs Certificate.
	RequireChannelBinding bool
	// MaxClockSkew is how far a client's clock may be off; 0 means 5 minutes.
	MaxClockSkew time.Duration
	// Rejected, when set, is told why a token was refused.
	Rejected func(r *http.Request, err error)
}

// Verifier checks the Negotiate tokens of requests, as IIS does with Windows
// authentication. It is safe for concurrent use.
//
// It verifies the AP-REQ with gokrb5 (messages.APReq.Verify, the core of gokrb5's service
// side) rather than through service.VerifyAPREQ or spnego.SPNEGOKRB5Authenticate: those keep
// the decrypted authenticator to themselves, so the channel binding cannot be checked or an
// AP-REP be built, and their replay cache is a process-wide singleton with a goroutine
// that never ends. This Verifier keeps its own replay cache.
type Verifier struct {
	cfg Config
	kt  *keytab.Keytab
	spn *types.PrincipalName

	mu     sync.Mutex
	replay map[string]time.Time // authenticators seen, until they are too old to be replayed
}

// New checks cfg and returns a Verifier.
func New(cfg Config) (*Verifier, error) {
	kt := keytab.New()
	if err := kt.Unmarshal(cfg.Keytab); err != nil {
		return nil, verifierError("the service keytab does not parse ("+err.Error()+"); give the keytab file's bytes", err)
	}
	if len(kt.Entries) == 0 {
		return nil, verifierError("the service keytab holds no key", nil)
	}
	v := &Verifier{cfg: cfg, kt: kt, replay: map[string]time.Time{}}
	if cfg.MaxClockSkew <= 0 {
		v.cfg.MaxClockSkew = defaultMaxClockSkew
	}
	if cfg.RequireChannelBinding && cfg.Certificate == nil {
		return nil, verifierError("RequireChannelBinding needs the server's Certificate", nil)
	}
	if cfg.ServicePrincipalName != "" {
		if err := gsskrb5.CheckSPN(cfg.ServicePrincipalName); err != nil {
			return nil, err
		}
		name, _ := types.ParseSPNString(cfg.ServicePrincipalName)
		found := false
		for _, e := range kt.Entries {
			if strings.EqualFold(strings.Join(e.Principal.Components, "/"), cfg.ServicePrincipalName) {
				found = true
			}
		}
		if !found {
			return nil, verifierError(fmt.Sprintf("the service keytab holds no key for %s", cfg.ServicePrincipalName), nil)
		}
		v.spn = &name
	}
	return v, nil
}

// Authenticate checks r's Negotiate token. It returns the client's principal name
// ("user@REALM") when the token is valid, and sets the server's answer token
// (WWW-Authenticate: Negotiate <AP-REP> when the client asked for mutual authentication).
// Otherwise it answers 401 with "WWW-Authenticate: Negotiate" and an HTML page, as IIS does,
// and returns false: the caller must not write anything more.
func (v *Verifier) Authenticate(w http.ResponseWriter, r *http.Request) (string, bool) {
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Negotiate") || strings.TrimSpace(token) == "" {
		askForNegotiate(w)
		return "", false
	}
	account, answer, err := v.verify(r, strings.TrimSpace(token))
	if err != nil {
		if v.cfg.Rejected != nil {
			v.cfg.Rejected(r, err)
		}
		askForNegotiate(w)
		return "", false
	}
	w.Header().Set("WWW-Authenticate", "Negotiate "+base64.StdEncoding.EncodeToString(answer))
	return account, true
}

// verify checks a base64 Negotiate token and returns the client's name and the answer token.
func (v *Verifier) verify(r *http.Request, token string) (string, []byte, error) {
	raw, err := base64.StdEncoding.DecodeString(token)
	if err != nil {
		return "", nil, fmt.Errorf("the token is not base64: %w", err)
	}
	mech, err := gsskrb5.MechToken(raw)
	if err != nil {
		return "", nil, err
	}
	var k5 spnego.KRB5Token
	if err := k5.Unmarshal(mech); err != nil {
		return "", nil, fmt.Errorf("the Kerberos token does not parse: %w", err)
	}
	if !k5.IsAPReq() {
		return "", nil, errors.New("the Kerberos token is not an AP-REQ")
	}
	apReq := k5.APReq
	if v.spn != nil && !strings.EqualFold(apReq.Ticket.SName.PrincipalNameString(), v.spn.PrincipalNameString()) {
		return "", nil, fmt.Errorf("the ticket is for %s, not %s", apReq.Ticket.SName.PrincipalNameString(), v.spn.PrincipalNameString())
	}
	addr, _ := types.GetHostAddress(r.RemoteAddr)
	ok, err := apReq.Verify(v.kt, v.cfg.MaxClockSkew, addr, nil)
	if err != nil || !ok {
		if err == nil {
			err = errors.New("the AP-REQ is not valid")
		}
		return "", nil, fmt.Errorf("the ticket or authenticator does not verify: %w", err)
	}
	auth := apReq.Authenticator
	if err := v.checkBinding(r, auth.Cksum); err != nil {
		return "", nil, err
	}
	if err := v.checkReplay(auth, apReq.Ticket.SName); err != nil {
		return "", nil, err
	}
	account := auth.CName.PrincipalNameString() + "@" + auth.CRealm
	var answer []byte
	if types.IsFlagSet(&apReq.APOptions, flags.APOptionMutualRequired) {
		answer, err = gsskrb5.APRepToken(apReq.Ticket.DecryptedEncPart.Key, auth)
	} else {
		answer, err = gsskrb5.AcceptCompletedToken()
	}
	if err != nil {
		return "", nil, fmt.Errorf("building the answer token: %w", err)
	}
	return account, answer, nil
}

// checkBinding checks the authenticator's channel binding against the server's certificate.
func (v *Verifier) checkBinding(r *http.Request, ck types.Checksum) error {
	bnd, _, err := gsskrb5.ChecksumBinding(ck)
	if err != nil {
		return err
	}
	if v.cfg.Certificate == nil {
		return nil
	}
	var want []byte
	if r.TLS != nil {
		want = auth.ChannelBinding(v.cfg.Certificate)
	}
	switch {
	case gsskrb5.IsZero(bnd) && r.TLS != nil && v.cfg.RequireChannelBinding:
		return errors.New("the token carries no channel binding and Extended Protection requires one")
	case gsskrb5.IsZero(bnd):
		return nil
	case want == nil:
		return errors.New("the token carries a channel binding but the request did not come over TLS")
	case !bytes.Equal(bnd, want):
		return errors.New("the token's channel binding is not that of this server's certificate (a TLS proxy between client and server?)")
	}
	return nil
}

// checkReplay refuses an authenticator seen before (RFC 4120 3.2.3).
func (v *Verifier) checkReplay(a types.Authenticator, sname types.PrincipalName) error {
	key := fmt.Sprintf("%s@%s|%s|%d|%d", a.CName.PrincipalNameString(), a.CRealm, sname.PrincipalNameString(), a.CTime.Unix(), a.Cusec)
	now := time.Now()
	v.mu.Lock()
	defer v.mu.Unlock()
	for k, until := range v.replay {
		if now.After(until) {
			delete(v.replay, k)
		}
	}
	if _, seen := v.replay[key]; seen {
		return errors.New("the authenticator was used before (replay)")
	}
	v.replay[key] = now.Add(2 * v.cfg.MaxClockSkew)
	return nil
}

// verifierError is a configuration the verifier cannot serve.
func verifierError(message string, err error) error {
	if err != nil {
		return fmt.Errorf("kerberos: %s: %w", message, err)
	}
	return errors.New("kerberos: " + message)
}

// askForNegotiate answers 401 asking for Negotiate.
func askForNegotiate(w http.ResponseWriter) {
	h := w.Header()
	h.Del("WWW-Authenticate")
	h.Set("WWW-Authenticate", "Negotiate")
	h.Set("Content-Type", "text/html")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write([]byte(unauthorizedPage))
}
