package credentials

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/pam"
	"github.com/pam-operator/pam-operator/internal/pam/auth"
)

// The login breaker (DESIGN.md, "Behaviour"). Active Directory locks accounts, not servers,
// after a handful of refused logons; a wrong password retried by every elevation on its own
// schedule would lock the privileged account and stop every close made with it. So a refused
// login — a 401 to a call that carried credentials, or a KDC's refusal; not a 403, which
// comes after a successful login — opens the breaker of the account: its user and domain or
// realm, and a keyed hash of the credential data. Every server that uses those credentials
// shares it. While it is open nothing sends them; it closes when the Secret's data changes
// (other data is another breaker; a metadata-only change is not) or after the backoff, with a
// single try. Until credentials have worked once, concurrent first calls are one try: the
// others wait for its answer. The state is kept in the servers' status, so a restart or a
// failover adds no refused logon.

// DefaultAuthFailureBackoff is how long a refused account is left alone (--auth-failure-backoff).
const DefaultAuthFailureBackoff = 15 * time.Minute

// probePause is how long after a try that got no verdict the next one goes, at most.
const probePause = time.Minute

// LoginBackoffError is the error of a call not sent because the account's breaker is open.
type LoginBackoffError struct {
	// Account is whom the credentials log in as.
	Account string
	// Until is when one login is tried again with the same credentials.
	Until time.Time
	// Refusal says why the last login was refused.
	Refusal string
}

func (e *LoginBackoffError) Error() string {
	return fmt.Sprintf("logins as %s are paused until %s, so that Active Directory does not lock the account: the last one was refused (%s); set the account's current credentials in the Secret to try again at once",
		e.Account, e.Until.UTC().Format(time.RFC3339), e.Refusal)
}

// refusedLogin reports whether err is the refusal of credentials a call carried.
func refusedLogin(err error) bool {
	if pe, ok := errors.AsType[*pam.Error](err); ok && pe.StatusCode == http.StatusUnauthorized {
		return true
	}
	ae, ok := errors.AsType[*auth.Error](err)
	return ok && ae.Refused
}

// answered reports whether err, from a call that carried credentials, shows they were accepted:
// no error, or an answer PAM gave after the login.
func answered(err error) bool {
	if err == nil {
		return true
	}
	pe, ok := errors.AsType[*pam.Error](err)
	return ok && pe.StatusCode != 0 && pe.StatusCode != http.StatusUnauthorized
}

type breakerState int

const (
	// unproven: the credentials have not worked yet; one call at a time tries them.
	unproven breakerState = iota
	// proven: a call with them was answered.
	proven
	// refused: a login with them was refused; nothing is sent until the backoff ends.
	refused
)

// loginBreaker is the breaker of one account and credential data.
type loginBreaker struct {
	account     string
	fingerprint string

	mu        sync.Mutex
	state     breakerState
	refusedAt time.Time
	until     time.Time
	refusal   string
	// trying is closed when the one call trying the credentials has its answer.
	trying chan struct{}
}

// enter lets a call go, or refuses it with a *LoginBackoffError. try reports that the call is
// the one trying unproven credentials; the caller then reports its outcome to leave.
func (b *loginBreaker) enter(ctx context.Context, now func() time.Time) (try bool, err error) {
	for {
		b.mu.Lock()
		switch {
		case b.state == proven:
			b.mu.Unlock()
			return false, nil
		case b.state == refused && now().Before(b.until):
			err := &LoginBackoffError{Account: b.account, Until: b.until, Refusal: b.refusal}
			b.mu.Unlock()
			return false, err
		case b.trying == nil:
			b.trying = make(chan struct{})
			b.mu.Unlock()
			return true, nil
		}
		trying := b.trying
		b.mu.Unlock()
		select {
		case <-trying:
		case <-ctx.Done():
			return false, &pam.Error{Op: "login", Class: pam.ClassRetryable, Err: ctx.Err()}
		}
	}
}

// leave records the outcome of a call that entered.
func (b *loginBreaker) leave(try bool, err error, now time.Time, backoff time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case refusedLogin(err):
		// err is a *pam.Error, whose text is already cut to a size status and Events take.
		b.state, b.refusedAt, b.until, b.refusal = refused, now, now.Add(backoff), err.Error()
	case answered(err) && b.state != refused:
		b.state = proven
	case answered(err) && try:
		b.state = proven // the try after the backoff was accepted
	case try && b.state == refused:
		// The try after the backoff got no verdict (no answer, or a handshake that never
		// carried the credentials): it proves nothing, and the next caller must not simply try
		// in turn, each perhaps a bad logon AD counts. One more try after a short pause.
		b.until = now.Add(min(backoff, probePause))
	}
	if try && b.trying != nil {
		close(b.trying)
		b.trying = nil
	}
}

// record is the breaker's state as a server's status keeps it; nil while it is not refused.
func (b *loginBreaker) record(now time.Time) *pamv1.LoginBackoff {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != refused || !now.Before(b.until) {
		return nil
	}
	return &pamv1.LoginBackoff{Account: b.account, CredentialHash: b.fingerprint,
		RefusedAt: metav1.NewTime(b.refusedAt), RetryAt: metav1.NewTime(b.until), Message: b.refusal}
}

// breakerClient sends a server's calls through its account's breaker.
type breakerClient struct {
	inner   pam.Client
	breaker *loginBreaker
	backoff time.Duration
	now     func() time.Time
	// refused is told when a call opened the breaker, so the servers' status keeps it.
	refused func()
}

var _ pam.Client = (*breakerClient)(nil)

func (c *breakerClient) call(ctx context.Context, do func() error) error {
	try, err := c.breaker.enter(ctx, c.now)
	if err != nil {
		return err
	}
	err = do()
	c.breaker.leave(try, err, c.now(), c.backoff)
	if refusedLogin(err) {
		c.refused()
	}
	return err
}

func (c *breakerClient) Close(ctx context.Context, requestID string) error {
	return c.call(ctx, func() error { return c.inner.Close(ctx, requestID) })
}

func (c *breakerClient) Get(ctx context.Context, requestID string) (req *pam.Request, err error) {
	err = c.call(ctx, func() error { req, err = c.inner.Get(ctx, requestID); return err })
	return req, err
}

func (c *breakerClient) List(ctx context.Context, filter string, each func(pam.Request)) error {
	return c.call(ctx, func() error { return c.inner.List(ctx, filter, each) })
}

func (c *breakerClient) Create(ctx context.Context, opts pam.CreateOptions) (req *pam.Request, err error) {
	err = c.call(ctx, func() error { req, err = c.inner.Create(ctx, opts); return err })
	return req, err
}

func (c *breakerClient) Roles(ctx context.Context) (roles []pam.Role, err error) {
	err = c.call(ctx, func() error { roles, err = c.inner.Roles(ctx); return err })
	return roles, err
}

// loginOf returns whom creds log in as under the server's auth method, and the keyed hash of
// the data the method sends: together, the breaker's key.
func (c *Connector) loginOf(ctx context.Context, server pamv1.ServerObject, creds *Credentials) (account, fingerprint string, err error) {
	spec := server.ServerSpec().Auth
	user := string(creds.data[SecretKeyUsername])
	switch {
	case spec.NTLM != nil:
		account = strings.ToLower(string(creds.data[SecretKeyDomain]) + `\` + user)
		if domain, name, ok := strings.Cut(user, `\`); ok {
			account = strings.ToLower(domain + `\` + name)
		}
	case spec.Kerberos != nil:
		account = strings.ToLower(user) + "@" + strings.ToUpper(spec.Kerberos.Realm)
	default:
		account = strings.ToLower(user)
	}
	key, err := c.hashKey(ctx)
	if err != nil {
		return "", "", err
	}
	mac := hmac.New(sha256.New, key)
	keys := escrowKeys(spec)
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(mac, "%s=%d:", k, len(creds.data[k]))
		mac.Write(creds.data[k])
	}
	return account, hex.EncodeToString(mac.Sum(nil)[:16]), nil
}

// breakerKeySecret holds the key of the credential hashes that servers' status shows: a plain
// hash of a password could be guessed offline by whoever may read a PamServer.
const breakerKeySecret = "pam-operator-credential-hash-key"

// hashKey returns the key of the credential hashes, made on first use and kept in the operator's
// namespace, where only those who may already read the escrowed credentials can read it.
func (c *Connector) hashKey(ctx context.Context) ([]byte, error) {
	c.breakersMu.Lock()
	defer c.breakersMu.Unlock()
	if c.hmacKey != nil {
		return c.hmacKey, nil
	}
	key := types.NamespacedName{Namespace: c.OperatorNamespace, Name: breakerKeySecret}
	secret := &corev1.Secret{}
	err := c.LiveReader.Get(ctx, key, secret)
	if apierrors.IsNotFound(err) {
		value := make([]byte, 32)
		_, _ = rand.Read(value)
		secret = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name,
			Labels: map[string]string{escrowManagedByLabel: escrowManagedBy}},
			Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"key": value}}
		if err = c.Writer.Create(ctx, secret); apierrors.IsAlreadyExists(err) {
			err = c.LiveReader.Get(ctx, key, secret) // another replica made it first
		}
	}
	if err != nil {
		return nil, err
	}
	if len(secret.Data["key"]) < 32 {
		return nil, &Error{Reason: pamv1.ReasonInvalidServerConfig,
			Message: fmt.Sprintf("Secret %s/%s needs a key of at least 32 bytes; delete it and the operator makes a new one", key.Namespace, key.Name)}
	}
	c.hmacKey = secret.Data["key"]
	return c.hmacKey, nil
}

// breakerFor returns the breaker of account and fingerprint, made on first use in the state the
// servers' status records: a refusal recorded before a restart still holds.
func (c *Connector) breakerFor(ctx context.Context, account, fingerprint string) (*loginBreaker, error) {
	id := account + "\x00" + fingerprint
	c.breakersMu.Lock()
	b := c.breakers[id]
	c.breakersMu.Unlock()
	if b != nil {
		return b, nil
	}
	b = &loginBreaker{account: account, fingerprint: fingerprint}
	recorded, err := c.recordedBackoff(ctx, account, fingerprint)
	if err != nil {
		return nil, err
	}
	if recorded != nil {
		b.state, b.refusedAt, b.until, b.refusal = refused, recorded.RefusedAt.Time, recorded.RetryAt.Time, recorded.Message
	}
	c.breakersMu.Lock()
	defer c.breakersMu.Unlock()
	if existing := c.breakers[id]; existing != nil {
		return existing, nil
	}
	if c.breakers == nil {
		c.breakers = map[string]*loginBreaker{}
	}
	c.breakers[id] = b
	return b, nil
}

// recordedBackoff finds the latest refusal of account with these credentials that a server's
// status records, nil when none.
func (c *Connector) recordedBackoff(ctx context.Context, account, fingerprint string) (*pamv1.LoginBackoff, error) {
	var latest *pamv1.LoginBackoff
	consider := func(lb *pamv1.LoginBackoff) {
		if lb != nil && lb.Account == account && lb.CredentialHash == fingerprint && (latest == nil || lb.RetryAt.After(latest.RetryAt.Time)) {
			latest = lb
		}
	}
	var servers pamv1.PamServerList
	if err := c.Client.List(ctx, &servers); err != nil {
		return nil, err
	}
	for i := range servers.Items {
		consider(servers.Items[i].Status.LoginBackoff)
	}
	var clusterServers pamv1.ClusterPamServerList
	if err := c.Client.List(ctx, &clusterServers); err != nil {
		return nil, err
	}
	for i := range clusterServers.Items {
		consider(clusterServers.Items[i].Status.LoginBackoff)
	}
	return latest, nil
}

// LoginBackoff is what the server's status should record of its account's breaker: the refusal
// that pauses its logins, nil when none does.
func (c *Connector) LoginBackoff(server pamv1.ServerObject) *pamv1.LoginBackoff {
	c.mu.Lock()
	state := c.servers[pamv1.KeyOf(server)]
	var b *loginBreaker
	if state != nil && state.client != nil {
		b = state.client.breaker
	}
	c.mu.Unlock()
	if b == nil {
		return nil
	}
	return b.record(c.clock().Now())
}
