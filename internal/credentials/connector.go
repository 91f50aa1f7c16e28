// Package credentials turns a PamServer or ClusterPamServer into an authenticated pam.Client: it
// reads the server's Secret and ConfigMap live, keeps a copy in escrow while elevations need
// it, and keeps one client, one limiter and one batched list per server.
package credentials

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/dialpolicy"
	"github.com/pam-operator/pam-operator/internal/ntlmssp"
	"github.com/pam-operator/pam-operator/internal/pam"
	"github.com/pam-operator/pam-operator/internal/pam/auth"
	"github.com/pam-operator/pam-operator/internal/pam/auth/kerberos"
	"github.com/pam-operator/pam-operator/internal/pam/auth/ntlm"
)

// Secret keys of the basic auth method.
const (
	SecretKeyUsername = "username"
	SecretKeyPassword = "password"
)

// Error is why a server cannot be used: a configuration a person must fix. Its Reason goes into
// a condition; every other error of this package comes from the API server and is transient.
type Error struct {
	// Reason is the condition reason, one of the pamv1.Reason constants.
	Reason string
	// Message says what to fix, without volatile detail.
	Message string
}

func (e *Error) Error() string { return e.Message }

// AsError returns the *Error in err's chain, if there is one.
func AsError(err error) (*Error, bool) {
	return errors.AsType[*Error](err)
}

// Connector builds PAM clients from PamServer and ClusterPamServer objects and their Secrets.
// Clients are kept per server generation and Secret resourceVersion: a client holds cookies
// and kept-alive connections (which Windows authentication binds to), so it must outlive a
// reconcile, yet a change to the server takes effect on the next call, and one to its Secret
// within FreshFor, or at once for a call that fails. Each server's calls share one limiter and
// one batched list, whatever client made them.
type Connector struct {
	// Client reads servers from the cache.
	Client client.Client
	// LiveReader reads Secrets, ConfigMaps and Namespaces straight from the API server: the
	// operator caches none of them and may not list or watch them (see CoalescingReader).
	LiveReader client.Reader
	// Writer writes the credential escrow in OperatorNamespace.
	Writer client.Client
	// OperatorNamespace is where the credential escrow is kept.
	OperatorNamespace string
	// ClusterResourceNamespace is where ClusterPamServer Secrets live.
	ClusterResourceNamespace string
	// UserAgent is sent to PAM.
	UserAgent string
	// Observe is told about every PAM call (pam.Config.Observe) and the server it went to, as
	// pamv1.KeyOf names it; nil means nobody.
	Observe func(server, op string, code int, took time.Duration)
	// Clock is the time source; nil means the real clock.
	Clock clock.PassiveClock
	// AuthFailureBackoff is how long an account whose login was refused is left alone
	// (--auth-failure-backoff); 0 means DefaultAuthFailureBackoff.
	AuthFailureBackoff time.Duration
	// OnLoginRefused, when set, is told of the server whose login was just refused: its status
	// should record the open breaker at once.
	OnLoginRefused func(server pamv1.ServerObject)
	// Workers is how many elevation passes run at once (--max-concurrent-reconciles): one
	// server's calls in flight are capped below it.
	Workers int
	// RefuseNamespacedServers refuses every PamServer (--namespaced-servers=false): only the
	// administrator's ClusterPamServers may receive credentials.
	RefuseNamespacedServers bool
	// FreshFor is how long after a read of a server's credentials a close goes out without
	// reading them again alongside; 0 means DefaultFreshFor.
	FreshFor time.Duration
	// DialPolicy says where every server's PAM host and KDCs may be dialled
	// (--allowed-pam-hosts); nil refuses only link-local and cloud metadata addresses.
	DialPolicy *dialpolicy.Policy

	mu sync.Mutex
	// servers holds what is kept per server, by pamv1.KeyOf.
	servers map[string]*serverState
	// escrows is what this process knows of each server's escrow, by pamv1.KeyOf.
	escrows map[string]escrowRecord
	// breakers are the login breakers by account and credential hash (breaker.go), and
	// hmacKey the key of those hashes.
	breakersMu sync.Mutex
	breakers   map[string]*loginBreaker
	hmacKey    []byte
	// escrowWrites lets one escrow write or deletion run at a time.
	escrowWrites sync.Mutex
}

// serverState is what the Connector keeps for one server.
type serverState struct {
	// client is the client last built, nil before the first.
	client  *cachedClient
	limiter *pam.Limiter
	batcher *pam.Batcher
}

// DefaultFreshFor is how long after a read of a server's credentials a close goes out without
// reading them again alongside. In a mass revocation that read would cost the API server (and
// etcd) one request per close; a close refused within it reads them at once all the same.
const DefaultFreshFor = time.Second

type cachedClient struct {
	// server is the server's UID and generation the client was built for; version adds the
	// credentials' resourceVersion.
	server  string
	version string
	client  pam.Client
	// readAt is when the last read that found these credentials current started.
	readAt time.Time
	// close releases what the auth method holds (Kerberos tickets), nil when nothing.
	close func()
	// breaker is the login breaker of the credentials, nil when the server sends none.
	breaker *loginBreaker
}

// Server fetches the server an elevation references.
func (c *Connector) Server(ctx context.Context, el *pamv1.PamElevation) (pamv1.ServerObject, error) {
	var server pamv1.ServerObject
	key := types.NamespacedName{Name: el.Spec.ServerRef.Name}
	if el.Spec.ServerRef.Kind == pamv1.ServerKindClusterPamServer {
		server = &pamv1.ClusterPamServer{}
	} else {
		server = &pamv1.PamServer{}
		key.Namespace = el.Namespace
	}
	if c.RefuseNamespacedServers && el.Spec.ServerRef.Kind != pamv1.ServerKindClusterPamServer {
		return nil, errNamespacedServersOff(key.Name, key.Namespace)
	}
	if err := c.Client.Get(ctx, key, server); err != nil {
		if apierrors.IsNotFound(err) {
			where := ""
			if key.Namespace != "" {
				where = " in namespace " + key.Namespace
			}
			return nil, &Error{Reason: pamv1.ReasonServerNotFound,
				Message: fmt.Sprintf("%s %q not found%s", kindOf(el), key.Name, where)}
		}
		return nil, err
	}
	return server, nil
}

func errNamespacedServersOff(name, namespace string) error {
	return &Error{Reason: pamv1.ReasonServerNotAllowed,
		Message: fmt.Sprintf("PamServer %q in namespace %s is not used: the operator runs with --namespaced-servers=false; use a ClusterPamServer", name, namespace)}
}

// Connect returns a client for the server, or a *Error when its configuration or Secret
// cannot be used. Other errors come from the API server and are transient.
func (c *Connector) Connect(ctx context.Context, server pamv1.ServerObject) (pam.Client, error) {
	pc, _, err := c.Check(ctx, server)
	return pc, err
}

// Check connects as Connect does and also returns the credentials it read (nil when the server
// has none, or they could not be read), so the server's reconciler keeps its escrow without
// reading them again.
func (c *Connector) Check(ctx context.Context, server pamv1.ServerObject) (pam.Client, *Credentials, error) {
	if _, namespaced := server.(*pamv1.PamServer); namespaced && c.RefuseNamespacedServers {
		return nil, nil, errNamespacedServersOff(server.GetName(), server.GetNamespace())
	}
	spec := server.ServerSpec()
	if u, err := url.Parse(spec.URL); err == nil && spec.Auth != nil && spec.Auth.Basic != nil && !strings.EqualFold(u.Scheme, "https") {
		// Admission refuses this; a server stored before the rule existed is refused here.
		return nil, nil, &Error{Reason: pamv1.ReasonInsecureTransport,
			Message: fmt.Sprintf("basic auth would send the password in the clear to %s: use an https url", u.Redacted())}
	}
	cfg := pam.Config{URL: spec.URL, Version: spec.Version, CABundle: []byte(spec.CABundle), UserAgent: c.UserAgent,
		DialPolicy: c.DialPolicy}
	if observe := c.Observe; observe != nil {
		key := pamv1.KeyOf(server)
		cfg.Observe = func(op string, code int, took time.Duration) { observe(key, op, code, took) }
	}
	if spec.Timeout != nil {
		cfg.Timeout = spec.Timeout.Duration
	}
	serverVersion := serverVersionOf(server)
	version := serverVersion
	readAt := c.clock().Now()

	var closeAuth func()
	var creds *Credentials
	var breaker *loginBreaker
	if spec.Auth.SecretName() != "" {
		var err error
		if creds, err = c.loadCredentials(ctx, server); err != nil {
			return nil, nil, err
		}
		creds.readAt = readAt
		if err := c.refreshEscrow(ctx, server, creds); err != nil {
			return nil, creds, err
		}
		// Clients are kept per credential data: a metadata-only change of the Secret keeps the
		// client, and with it the login breaker of those credentials.
		account, fingerprint, err := c.loginOf(ctx, server, creds)
		if err != nil {
			return nil, creds, err
		}
		if breaker, err = c.breakerFor(ctx, account, fingerprint); err != nil {
			return nil, creds, err
		}
		version += "/" + fingerprint
		if creds.escrowed {
			version += "/escrow"
		}
		switch {
		case spec.Auth.Basic != nil:
			username, password, err := requiredKeys(creds, SecretKeyUsername, SecretKeyPassword)
			if err != nil {
				return nil, creds, err
			}
			cfg.Auth = auth.Basic(username, password)
		case spec.Auth.NTLM != nil:
			nc, err := ntlmssp.NewCredentials(string(creds.data[SecretKeyUsername]), string(creds.data[SecretKeyDomain]),
				string(creds.data[SecretKeyPassword]))
			if err != nil {
				return nil, creds, &Error{Reason: pamv1.ReasonInvalidServerConfig, Message: creds.source + ": " + err.Error()}
			}
			cfg.Auth = ntlm.Wrap(nc)
		case spec.Auth.Kerberos != nil:
			kc, err := kerberosClient(spec.Auth.Kerberos, creds, c.DialPolicy)
			if err != nil {
				return nil, creds, err
			}
			cfg.Auth, closeAuth = kc.Wrap, kc.Close
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	state := c.stateLocked(server)
	state.limiter.Update(c.limitOf(server))
	// The cached client stays when it is current, or when a read that began after this one built
	// it: its credentials are newer.
	if cached := state.client; cached != nil && cached.server == serverVersion && (cached.version == version || cached.readAt.After(readAt)) {
		if closeAuth != nil {
			closeAuth() // built for nothing
		}
		if cached.version == version && readAt.After(cached.readAt) {
			cached.readAt = readAt
		}
		return cached.client, creds, nil
	}
	pc, err := pam.NewClient(cfg)
	if err != nil {
		if closeAuth != nil {
			closeAuth()
		}
		return nil, creds, &Error{Reason: pamv1.ReasonInvalidServerConfig, Message: err.Error()}
	}
	if old := state.client; old != nil && old.close != nil {
		old.close() // its tickets belong to credentials that changed
	}
	limited := pam.WithLimiter(pc, state.limiter)
	if breaker != nil {
		limited = &breakerClient{inner: limited, breaker: breaker, backoff: cmp.Or(c.AuthFailureBackoff, DefaultAuthFailureBackoff),
			now: c.clock().Now, refused: func() {
				if c.OnLoginRefused != nil {
					c.OnLoginRefused(server)
				}
			}}
	}
	if creds != nil && creds.escrowed {
		limited = &escrowClient{Client: limited, note: creds.note, missing: creds.missing}
	}
	state.client = &cachedClient{server: serverVersion, version: version, client: limited, close: closeAuth, readAt: readAt, breaker: breaker}
	return limited, creds, nil
}

// escrowClient is a client built from a server's escrow rather than its Secret, so that the
// elevations it serves can be told (FromEscrow).
type escrowClient struct {
	pam.Client
	note    string
	missing *Error
}

// Create is refused: the copy is kept so that access can still be taken away once its Secret
// is gone, never to ask for more. The problem is the one the copy stood in for.
func (c *escrowClient) Create(context.Context, pam.CreateOptions) (*pam.Request, error) {
	return nil, &Error{Reason: c.missing.Reason,
		Message: c.missing.Message + "; the copy of the credentials kept in escrow is never used to ask PAM for new access"}
}

// FromEscrow reports whether pc was built from the copy of its server's credentials kept in
// escrow, because the server's Secret (or ConfigMap) could not be read. The note says so in a
// sentence fit for an Event: what was missing and which copy was used, never what it holds.
func FromEscrow(pc pam.Client) (note string, ok bool) {
	ec, ok := pc.(*escrowClient)
	if !ok {
		return "", false
	}
	return ec.note, true
}

// stateLocked returns what is kept for server, created on first use; c.mu is held.
func (c *Connector) stateLocked(server pamv1.ServerObject) *serverState {
	key := pamv1.KeyOf(server)
	state := c.servers[key]
	if state == nil {
		limiter := pam.NewLimiter(c.limitOf(server))
		state = &serverState{batcher: pam.NewBatcher(limiter), limiter: limiter}
		if c.servers == nil {
			c.servers = map[string]*serverState{}
		}
		c.servers[key] = state
	}
	return state
}

// limitOf is the pace the server's spec.rateLimit sets, with its defaults. Its calls in flight,
// which are workers held, stop short of the workers there are: another server's close always
// finds one.
func (c *Connector) limitOf(server pamv1.ServerObject) pam.Limit {
	l := server.ServerSpec().RateLimit.Effective()
	calls := int(l.MaxConcurrentCalls)
	if c.Workers > 1 {
		calls = min(calls, c.Workers-1)
	}
	return pam.Limit{QPS: float64(l.QPS), Burst: int(l.Burst), MaxConcurrentCalls: calls}
}

// Batcher returns the shared list of the server's requests that its periodic syncs read.
func (c *Connector) Batcher(server pamv1.ServerObject) *pam.Batcher {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stateLocked(server).batcher
}

func (c *Connector) clock() clock.PassiveClock {
	if c.Clock == nil {
		return clock.RealClock{}
	}
	return c.Clock
}

// ConnectAhead returns the client last built for this generation of the server at once, and
// current, which returns the client for the credentials as they are now: they are read
// alongside, as Connect reads them, unless a read began less than FreshFor ago, when
// current reads them only once called. A close need not wait for that read, yet a close that
// fails sees a changed Secret in the same pass. Without a client built before, ahead is nil and
// current connects.
func (c *Connector) ConnectAhead(ctx context.Context, server pamv1.ServerObject) (ahead pam.Client, current func() (pam.Client, error)) {
	c.mu.Lock()
	var cached cachedClient
	state := c.servers[pamv1.KeyOf(server)]
	ok := state != nil && state.client != nil
	if ok {
		cached = *state.client
	}
	c.mu.Unlock()
	if !ok || cached.server != serverVersionOf(server) {
		return nil, func() (pam.Client, error) { return c.Connect(ctx, server) }
	}
	if fresh := cmp.Or(c.FreshFor, DefaultFreshFor); c.clock().Since(cached.readAt) < fresh {
		// Read a moment ago: they are read again only if the close fails.
		return cached.client, func() (pam.Client, error) { return c.Connect(ctx, server) }
	}
	done := make(chan struct{})
	var latest pam.Client
	var err error
	go func() {
		defer close(done)
		defer func() {
			// A panic here must not end the process and, with it, every close it owes.
			if p := recover(); p != nil {
				err = fmt.Errorf("panic: %v [recovered]\n%s", p, debug.Stack())
			}
		}()
		latest, err = c.Connect(ctx, server)
	}()
	return cached.client, func() (pam.Client, error) {
		<-done
		return latest, err
	}
}

func serverVersionOf(server pamv1.ServerObject) string {
	return fmt.Sprintf("%s/%d", server.GetUID(), server.GetGeneration())
}

// requiredKeys returns the values of two keys, which must both be present and non-empty.
func requiredKeys(creds *Credentials, keys ...string) (string, string, error) {
	for _, key := range keys {
		if len(creds.data[key]) == 0 {
			return "", "", &Error{Reason: pamv1.ReasonInvalidServerConfig,
				Message: fmt.Sprintf("%s needs non-empty keys %q and %q", creds.source, keys[0], keys[1])}
		}
	}
	return string(creds.data[keys[0]]), string(creds.data[keys[1]]), nil
}

// Secret and ConfigMap keys of the Kerberos method, and the NTLM domain.
const (
	SecretKeyDomain  = "domain"
	SecretKeyKeytab  = "keytab"
	ConfigMapKeyKrb5 = "krb5.conf"
)

// kerberosClient builds a Kerberos client from the server's credentials. The configuration is
// checked offline: a bad keytab or krb5.conf stalls the server at once, not at the first call.
func kerberosClient(spec *pamv1.KerberosAuth, creds *Credentials, policy *dialpolicy.Policy) (*kerberos.Client, error) {
	invalid := func(format string, args ...any) error {
		return &Error{Reason: pamv1.ReasonInvalidServerConfig, Message: fmt.Sprintf(format, args...)}
	}
	username := string(creds.data[SecretKeyUsername])
	password, keytab := string(creds.data[SecretKeyPassword]), creds.data[SecretKeyKeytab]
	if username == "" || (password == "") == (len(keytab) == 0) {
		return nil, invalid("%s needs a non-empty key %q and exactly one of %q and %q",
			creds.source, SecretKeyUsername, SecretKeyPassword, SecretKeyKeytab)
	}
	cfg := kerberos.Config{Username: username, Realm: spec.Realm, Password: password, Keytab: keytab,
		KDCs: spec.KDCs, ServicePrincipalName: spec.ServicePrincipalName, DialPolicy: policy}
	if spec.Krb5ConfigMapRef != nil {
		if cfg.Krb5Conf = creds.krb5Conf; cfg.Krb5Conf == "" {
			return nil, invalid("ConfigMap %s needs a non-empty key %q", spec.Krb5ConfigMapRef.Name, ConfigMapKeyKrb5)
		}
	}
	kc, err := kerberos.New(cfg)
	if err != nil {
		return nil, invalid("%s", err.Error())
	}
	return kc, nil
}

// +kubebuilder:rbac:groups="",resources=namespaces,verbs=list;watch

// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get

// CheckNamespaceAllowed returns a *Error when server is a ClusterPamServer whose
// allowedNamespaces does not select namespace: absent selects none, {} every namespace. The
// namespace's labels are read from the cache of namespaces' metadata, which also requeues the
// elevations of a namespace whose labels change.
func (c *Connector) CheckNamespaceAllowed(ctx context.Context, server pamv1.ServerObject, namespace string) error {
	cluster, ok := server.(*pamv1.ClusterPamServer)
	if !ok {
		return nil
	}
	if cluster.Spec.AllowedNamespaces == nil {
		return &Error{Reason: pamv1.ReasonNamespaceNotAllowed,
			Message: fmt.Sprintf("ClusterPamServer %q has no spec.allowedNamespaces, so it serves no namespace; {} serves every namespace", cluster.Name)}
	}
	selector, err := metav1.LabelSelectorAsSelector(cluster.Spec.AllowedNamespaces)
	if err != nil {
		return &Error{Reason: pamv1.ReasonInvalidServerConfig,
			Message: fmt.Sprintf("ClusterPamServer %q has an invalid allowedNamespaces: %v", cluster.Name, err)}
	}
	if selector.Empty() {
		return nil
	}
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	if err := c.Client.Get(ctx, types.NamespacedName{Name: namespace}, ns); err != nil {
		return err
	}
	if !selector.Matches(labels.Set(ns.Labels)) {
		return &Error{Reason: pamv1.ReasonNamespaceNotAllowed,
			Message: fmt.Sprintf("ClusterPamServer %q does not allow namespace %s (spec.allowedNamespaces: %s); this elevation reads and requests nothing through it", cluster.Name, namespace, selector)}
	}
	return nil
}

// Forget drops what is kept for a server that was deleted.
func (c *Connector) Forget(server pamv1.ServerObject) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := pamv1.KeyOf(server)
	if state := c.servers[key]; state != nil && state.client != nil && state.client.close != nil {
		state.client.close()
	}
	delete(c.servers, key)
}

func (c *Connector) secretNamespace(server pamv1.ServerObject) string {
	if server.GetNamespace() == "" {
		return c.ClusterResourceNamespace
	}
	return server.GetNamespace()
}

func (c *Connector) secret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	secret := &corev1.Secret{}
	err := c.LiveReader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, secret)
	if apierrors.IsNotFound(err) {
		return nil, &Error{Reason: pamv1.ReasonSecretNotFound,
			Message: fmt.Sprintf("Secret %q not found in namespace %s", name, namespace)}
	}
	return secret, err
}

func kindOf(el *pamv1.PamElevation) pamv1.ServerKind {
	if el.Spec.ServerRef.Kind == "" {
		return pamv1.ServerKindPamServer
	}
	return el.Spec.ServerRef.Kind
}
