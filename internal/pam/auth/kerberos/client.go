// Package kerberos authenticates the PAM client with Kerberos through SPNEGO ("Negotiate"),
// the Integrated Windows Authentication IIS offers. The tokens themselves are internal/gsskrb5's;
// the server side is the emulator's (emulator/kerberosserver).
//
// The client logs in once (an AS exchange with the KDC), keeps the ticket-granting ticket and
// one service ticket per SPN in memory, and logs in again when the TGT nears its end or when
// the KDC refuses it. Tickets are renewed by the requests that need them, each exchange with the
// KDC on a goroutine of its own so that a request can give up at its deadline (see
// serviceTicket).
package kerberos

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/pam-operator/pam-operator/internal/pam/auth"
)

// maxRenewMargin caps how long before its end a ticket is replaced (a sixth of its lifetime
// otherwise, as gokrb5 does). A server checks the end against its own clock, which may run
// ahead of ours by up to the allowed skew (5 minutes by default): ten minutes covers that.
const maxRenewMargin = 10 * time.Minute

// errClosed is returned by requests made after Close.
var errClosed = errors.New("kerberos: the client is closed")

// Client holds one account's Kerberos credentials and tickets. It is safe for concurrent
// use. Build a new Client when the credentials change, and Close the old one.
type Client struct {
	s *settings

	// kdc is a lock that guards the fields below and serialises the exchanges with the KDC: a
	// channel of one rather than a mutex, so that a request can stop waiting for it when its
	// context ends.
	kdc chan struct{}
	// krb is the gokrb5 client of the current login; each login uses a fresh one (see login).
	krb     *client.Client
	tgt     *ticket
	tickets map[string]*ticket // service tickets by SPN
	closed  bool

	// stateMu guards what requests read without waiting for an exchange with the KDC.
	stateMu sync.Mutex
	// negotiate records, per scheme://host:port, that the server asked for Negotiate, and
	// the channel binding of its TLS certificate: later requests carry a token at once.
	negotiate map[string]*origin
	// lastAuth is the time of the last authenticator (see authenticatorTime).
	lastAuth time.Time
}

// ticket is a ticket with its session key, when to replace it and when it ends, on the
// Client's clock.
type ticket struct {
	tkt     messages.Ticket
	key     types.EncryptionKey
	renewAt time.Time
	expires time.Time
}

// origin is what the client knows of one server.
type origin struct {
	binding []byte // channel binding (tls-server-end-point) of its certificate; nil over http
}

// New validates cfg and returns a Client. It does not contact the KDC: the first request
// logs in. Configuration mistakes are returned as *auth.Error saying what to fix.
func New(cfg Config) (*Client, error) {
	s, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	return &Client{s: s, kdc: make(chan struct{}, 1), tickets: map[string]*ticket{}, negotiate: map[string]*origin{}}, nil
}

// Close forgets the tickets and keys and ends anything gokrb5 started (it starts a renewal
// goroutine only for the TGT of a cross-realm referral). Requests made afterwards fail. It waits
// for an exchange with the KDC under way, which gokrb5's own deadlines end.
func (c *Client) Close() {
	c.kdc <- struct{}{}
	defer c.unlock()
	if c.closed {
		return
	}
	c.closed = true
	if c.krb != nil {
		c.krb.Destroy()
		c.krb = nil
	}
	c.tgt = nil
	c.tickets = nil
	c.stateMu.Lock()
	c.negotiate = nil
	c.stateMu.Unlock()
}

// serviceTicket returns a ticket for spn: the cached one while it is fresh, unless refresh
// asks for a new one (the server refused the cached one).
//
// gokrb5 takes no context: it dials each KDC with its own deadlines (5 seconds to connect and 5
// to exchange, per KDC and per message of a login), and resolves names without any. So the
// exchange runs on a goroutine that holds the lock until it ends, and the request gives up at
// its own deadline, or while waiting for the lock. The goroutine is bounded: one per Client at a
// time, however many requests give up; what it learns is kept for the next request. What stays
// open: until gokrb5's deadlines end it, the next requests of this Client wait for it (at most
// to their deadlines), and gokrb5 allocates whatever length a KDC's TCP answer announces.
func (c *Client) serviceTicket(ctx context.Context, spn string, refresh bool) (*ticket, error) {
	if err := c.lock(ctx); err != nil {
		return nil, c.gaveUp(spn, err)
	}
	if c.closed {
		c.unlock()
		return nil, errClosed
	}
	now := c.s.now()
	cached := c.tickets[spn]
	if cached != nil && !refresh && now.Before(cached.renewAt) {
		c.unlock()
		return cached, nil
	}
	type result struct {
		t   *ticket
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer c.unlock()
		t, err := c.renewServiceTicket(ctx, spn, now, cached, refresh)
		done <- result{t, err}
	}()
	select {
	case r := <-done:
		return r.t, r.err
	case <-ctx.Done():
		return nil, c.gaveUp(spn, ctx.Err())
	}
}

// renewServiceTicket gets a new ticket for spn and keeps it, or falls back on cached. The
// caller holds the lock.
func (c *Client) renewServiceTicket(ctx context.Context, spn string, now time.Time, cached *ticket, refresh bool) (*ticket, error) {
	t, err := c.newServiceTicket(ctx, spn, now)
	if err != nil {
		var refused *auth.Error
		if cached != nil && !refresh && now.Before(cached.expires) && !errors.As(err, &refused) {
			// No KDC answered in the ticket's last minutes: it is still good, so use it and
			// try again on the next request.
			return cached, nil
		}
		return nil, err
	}
	c.tickets[spn] = t
	return t, nil
}

// lock takes the lock, or gives up when ctx ends first.
func (c *Client) lock(ctx context.Context) error {
	select {
	case c.kdc <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := ctx.Err(); err != nil {
		c.unlock()
		return err
	}
	return nil
}

func (c *Client) unlock() { <-c.kdc }

// gaveUp is the error of a request whose context ended before it had a ticket. It wraps the
// context's error, so the PAM client counts it a timeout, to retry.
func (c *Client) gaveUp(spn string, err error) error {
	return fmt.Errorf("kerberos: no ticket for %s from the KDCs of realm %s before the call ended: %w", spn, c.s.realm, err)
}

// newServiceTicket gets a ticket for spn from the KDC, logging in first when the TGT is due.
func (c *Client) newServiceTicket(ctx context.Context, spn string, now time.Time) (*ticket, error) {
	if err := c.checkKDCs(ctx); err != nil {
		return nil, err
	}
	justLoggedIn := false
	if c.tgt == nil || !now.Before(c.tgt.renewAt) {
		if err := c.login(); err != nil {
			return nil, err
		}
		justLoggedIn = true
	}
	t, err := c.exchangeTGS(spn)
	if err != nil && !justLoggedIn && !isNetworkError(err) && !isDefinitiveTGSError(err) {
		// The KDC refused a TGT we thought valid: it ended early, or krbtgt's key was
		// reset. One new login settles it; its own failure is then the answer.
		if err := c.login(); err != nil {
			return nil, err
		}
		t, err = c.exchangeTGS(spn)
	}
	if err != nil {
		return nil, c.tgsError(spn, err)
	}
	return t, nil
}

// login gets a new TGT with an AS exchange. Each login uses a fresh gokrb5 client: gokrb5
// remembers after a first login that pre-authentication is needed and then derives the key
// with the default salt, which is wrong when Active Directory stores the name in another
// case, and every such attempt counts towards the account's lockout. A fresh client asks
// the KDC for the salt first.
//
// A refused login is not tried again here: the caller's login breaker decides when
// (internal/credentials), for every client of the same account.
func (c *Client) login() error {
	cl := c.newKrbClient()
	req, err := messages.NewASReqForTGT(c.s.realm, c.s.krb5, cl.Credentials.CName())
	if err != nil {
		cl.Destroy()
		return fmt.Errorf("kerberos: building the login request: %w", err)
	}
	rep, err := cl.ASExchange(c.s.realm, req, 0)
	if err != nil {
		cl.Destroy()
		return c.loginError(err)
	}
	if c.krb != nil {
		c.krb.Destroy()
	}
	c.krb = cl
	c.tgt = newTicket(rep.Ticket, rep.DecryptedEncPart, c.s.now())
	return nil
}

func (c *Client) newKrbClient() *client.Client {
	// gokrb5's FAST negotiation (PA-FX-FAST) fails against Active Directory; its
	// documentation says to disable it there.
	if c.s.keytab != nil {
		return client.NewWithKeytab(c.s.username, c.s.realm, c.s.keytab, c.s.krb5, client.DisablePAFXFAST(true))
	}
	return client.NewWithPassword(c.s.username, c.s.realm, c.s.password, c.s.krb5, client.DisablePAFXFAST(true))
}

// exchangeTGS asks the KDC of the account's realm for a ticket to spn. A service in another
// realm is reached through the referrals the KDC returns (Active Directory does so across
// forest trusts); gokrb5 follows them.
func (c *Client) exchangeTGS(spn string) (*ticket, error) {
	princ := types.NewPrincipalName(nametype.KRB_NT_PRINCIPAL, spn)
	_, rep, err := c.krb.TGSREQGenerateAndExchange(princ, c.s.realm, c.tgt.tkt, c.tgt.key, false)
	if err != nil {
		return nil, err
	}
	return newTicket(rep.Ticket, rep.DecryptedEncPart, c.s.now()), nil
}

// newTicket records when to replace a ticket. The remaining lifetime is measured on the
// real clock against the KDC's end time, then laid on the Client's clock: in production they
// are the same clock, and a test can move its clock past the renewal point.
func newTicket(tkt messages.Ticket, part messages.EncKDCRepPart, now time.Time) *ticket {
	remaining := part.EndTime.Sub(time.Now())
	margin := remaining / 6
	if margin > maxRenewMargin {
		margin = maxRenewMargin
	}
	return &ticket{tkt: tkt, key: part.Key, renewAt: now.Add(remaining - margin), expires: now.Add(remaining)}
}

// authenticatorTime returns a time for a new authenticator, later than the previous one:
// a server's replay cache refuses two authenticators of one client with the same time.
func (c *Client) authenticatorTime() time.Time {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	t := time.Now().UTC().Truncate(time.Microsecond)
	if !t.After(c.lastAuth) {
		t = c.lastAuth.Add(time.Microsecond)
	}
	c.lastAuth = t
	return t
}

// origin returns what is known of a server, or nil.
func (c *Client) origin(key string) *origin {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	return c.negotiate[key]
}

// setOrigin records that a server asked for Negotiate.
func (c *Client) setOrigin(key string, o *origin) {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	if c.negotiate != nil {
		c.negotiate[key] = o
	}
}

// clientName returns the account's principal name and realm for authenticators.
func (c *Client) clientName() (types.PrincipalName, string) {
	return types.NewPrincipalName(nametype.KRB_NT_PRINCIPAL, c.s.username), c.s.realm
}
