package controllers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
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

// configError is why a server cannot be used; its reason goes into a condition and it always
// needs a person, so it stalls.
type configError struct {
	reason  string
	message string
}

func (e *configError) Error() string { return e.message }

// Connector builds PAM clients from PamServer and ClusterPamServer objects and their Secrets.
// Clients are kept per server generation and Secret resourceVersion: a client holds cookies
// and kept-alive connections (which Windows authentication binds to), so it must outlive a
// reconcile, yet a change to the server takes effect on the next call, and one to its Secret
// within credentialsFreshFor, or at once for a call that fails.
type Connector struct {
	// Client reads servers from the cache.
	Client client.Client
	// LiveReader reads Secrets, ConfigMaps and Namespaces straight from the API server: the
	// operator caches none of them and may not list or watch them.
	LiveReader client.Reader
	// Writer writes the credential escrow in OperatorNamespace.
	Writer client.Client
	// OperatorNamespace is where the credential escrow is kept.
	OperatorNamespace string
	// ClusterResourceNamespace is where ClusterPamServer Secrets live.
	ClusterResourceNamespace string
	// UserAgent is sent to PAM.
	UserAgent string

	mu      sync.Mutex
	clients map[string]cachedClient
	// batches are the servers' shared request lists for the periodic sync.
	batches batchSyncer
	// limits pace the calls to each server.
	limits map[string]*serverLimits
	// escrowed is the source version each server's escrow holds, "" when it has none, and
	// escrowedAt when the read of what it holds began.
	escrowed   map[string]string
	escrowedAt map[string]time.Time
	// escrowWrites lets one escrow write or deletion run at a time.
	escrowWrites sync.Mutex
	// freshFor replaces credentialsFreshFor when set (tests).
	freshFor time.Duration
}

// credentialsFreshFor is how long after a read of a server's credentials a close goes out without
// reading them again alongside. In a mass revocation that read would cost the API server (and
// etcd) one request per close; a close refused within it reads them at once all the same.
const credentialsFreshFor = time.Second

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
}

// GetServer fetches the server an elevation references.
func (c *Connector) GetServer(ctx context.Context, el *pamv1.PamElevation) (pamv1.ServerObject, error) {
	var server pamv1.ServerObject
	key := types.NamespacedName{Name: el.Spec.ServerRef.Name}
	if el.Spec.ServerRef.Kind == pamv1.ServerKindClusterPamServer {
		server = &pamv1.ClusterPamServer{}
	} else {
		server = &pamv1.PamServer{}
		key.Namespace = el.Namespace
	}
	if err := c.Client.Get(ctx, key, server); err != nil {
		if apierrors.IsNotFound(err) {
			where := ""
			if key.Namespace != "" {
				where = " in namespace " + key.Namespace
			}
			return nil, &configError{reason: pamv1.ReasonServerNotFound,
				message: fmt.Sprintf("%s %q not found%s", kindOf(el), key.Name, where)}
		}
		return nil, err
	}
	return server, nil
}

// Connect returns a client for the server, or a *configError when its configuration or Secret
// cannot be used. Other errors come from the API server and are transient.
func (c *Connector) Connect(ctx context.Context, server pamv1.ServerObject) (pam.Client, error) {
	pc, _, err := c.connect(ctx, server)
	return pc, err
}

// connect is Connect that also returns the credentials it read (nil when the server has none,
// or they could not be read), so the server's reconciler keeps its escrow without reading them
// again.
func (c *Connector) connect(ctx context.Context, server pamv1.ServerObject) (pam.Client, *credentials, error) {
	spec := server.ServerSpec()
	cfg := pam.Config{URL: spec.URL, Version: spec.Version, CABundle: []byte(spec.CABundle), UserAgent: c.UserAgent, Observe: observePAMCall}
	if spec.Timeout != nil {
		cfg.Timeout = spec.Timeout.Duration
	}
	serverVersion := serverVersionOf(server)
	version := serverVersion
	readAt := time.Now()

	var closeAuth func()
	var creds *credentials
	if spec.Auth.SecretName() != "" {
		var err error
		if creds, err = c.loadCredentials(ctx, server); err != nil {
			return nil, nil, err
		}
		creds.readAt = readAt
		if err := c.refreshEscrow(ctx, server, creds); err != nil {
			return nil, creds, err
		}
		version += "/" + creds.version
		switch {
		case spec.Auth.Basic != nil:
			username, password, err := requiredKeys(creds, SecretKeyUsername, SecretKeyPassword)
			if err != nil {
				return nil, creds, err
			}
			cfg.Auth = auth.Basic(username, password)
		case spec.Auth.NTLM != nil:
			nc, err := ntlm.NewCredentials(string(creds.data[SecretKeyUsername]), string(creds.data[SecretKeyDomain]),
				string(creds.data[SecretKeyPassword]))
			if err != nil {
				return nil, creds, &configError{reason: pamv1.ReasonInvalidServerConfig, message: creds.source + ": " + err.Error()}
			}
			cfg.Auth = ntlm.Wrap(nc)
		case spec.Auth.Kerberos != nil:
			kc, err := kerberosClient(spec.Auth.Kerberos, creds)
			if err != nil {
				return nil, creds, err
			}
			cfg.Auth, closeAuth = kc.Wrap, kc.Close
		}
	}

	cacheKey := serverCacheKey(server)
	c.mu.Lock()
	defer c.mu.Unlock()
	limits := c.limits[cacheKey]
	if limits == nil {
		limits = newServerLimits(spec.RateLimit.Effective())
		if c.limits == nil {
			c.limits = map[string]*serverLimits{}
		}
		c.limits[cacheKey] = limits
	} else {
		limits.update(spec.RateLimit.Effective())
	}
	// The cached client stays when it is current, or when a read that began after this one built
	// it: its credentials are newer.
	if cached, ok := c.clients[cacheKey]; ok && cached.server == serverVersion && (cached.version == version || cached.readAt.After(readAt)) {
		if closeAuth != nil {
			closeAuth() // built for nothing
		}
		if cached.version == version && readAt.After(cached.readAt) {
			cached.readAt = readAt
			c.clients[cacheKey] = cached
		}
		return cached.client, creds, nil
	}
	pc, err := pam.NewClient(cfg)
	if err != nil {
		if closeAuth != nil {
			closeAuth()
		}
		return nil, creds, &configError{reason: pamv1.ReasonInvalidServerConfig, message: err.Error()}
	}
	if c.clients == nil {
		c.clients = map[string]cachedClient{}
	}
	if old, ok := c.clients[cacheKey]; ok && old.close != nil {
		old.close() // its tickets belong to credentials that changed
	}
	limited := &limitedClient{inner: pc, limits: limits}
	c.clients[cacheKey] = cachedClient{server: serverVersion, version: version, client: limited, close: closeAuth, readAt: readAt}
	return limited, creds, nil
}

// ConnectAhead returns the client last built for this generation of the server at once, and
// current, which returns the client for the credentials as they are now: they are read
// alongside, as Connect reads them, unless a read began less than credentialsFreshFor ago, when
// current reads them only once called. A close need not wait for that read, yet a close that
// fails sees a changed Secret in the same pass. Without a client built before, ahead is nil and
// current connects.
func (c *Connector) ConnectAhead(ctx context.Context, server pamv1.ServerObject) (ahead pam.Client, current func() (pam.Client, error)) {
	c.mu.Lock()
	cached, ok := c.clients[serverCacheKey(server)]
	c.mu.Unlock()
	if !ok || cached.server != serverVersionOf(server) {
		return nil, func() (pam.Client, error) { return c.Connect(ctx, server) }
	}
	if fresh := cmp.Or(c.freshFor, credentialsFreshFor); time.Since(cached.readAt) < fresh {
		// Read a moment ago: they are read again only if the close fails.
		return cached.client, func() (pam.Client, error) { return c.Connect(ctx, server) }
	}
	done := make(chan struct{})
	var latest pam.Client
	var err error
	go func() {
		defer close(done)
		defer recoverAsError(&err)
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
func requiredKeys(creds *credentials, keys ...string) (string, string, error) {
	for _, key := range keys {
		if len(creds.data[key]) == 0 {
			return "", "", &configError{reason: pamv1.ReasonInvalidServerConfig,
				message: fmt.Sprintf("%s needs non-empty keys %q and %q", creds.source, keys[0], keys[1])}
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
func kerberosClient(spec *pamv1.KerberosAuth, creds *credentials) (*kerberos.Client, error) {
	invalid := func(format string, args ...any) error {
		return &configError{reason: pamv1.ReasonInvalidServerConfig, message: fmt.Sprintf(format, args...)}
	}
	username := string(creds.data[SecretKeyUsername])
	password, keytab := string(creds.data[SecretKeyPassword]), creds.data[SecretKeyKeytab]
	if username == "" || (password == "") == (len(keytab) == 0) {
		return nil, invalid("%s needs a non-empty key %q and exactly one of %q and %q",
			creds.source, SecretKeyUsername, SecretKeyPassword, SecretKeyKeytab)
	}
	cfg := kerberos.Config{Username: username, Realm: spec.Realm, Password: password, Keytab: keytab,
		KDCs: spec.KDCs, ServicePrincipalName: spec.ServicePrincipalName}
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

// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get

// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get

// CheckNamespaceAllowed returns a *configError when server is a ClusterPamServer whose
// allowedNamespaces does not select namespace. The namespace is read live: a cache of every
// namespace would cost memory and a cluster-wide watch for a check only some servers need.
func (c *Connector) CheckNamespaceAllowed(ctx context.Context, server pamv1.ServerObject, namespace string) error {
	cluster, ok := server.(*pamv1.ClusterPamServer)
	if !ok || cluster.Spec.AllowedNamespaces == nil {
		return nil
	}
	selector, err := metav1.LabelSelectorAsSelector(cluster.Spec.AllowedNamespaces)
	if err != nil {
		return &configError{reason: pamv1.ReasonInvalidServerConfig,
			message: fmt.Sprintf("ClusterPamServer %q has an invalid allowedNamespaces: %v", cluster.Name, err)}
	}
	if selector.Empty() {
		return nil
	}
	ns := &corev1.Namespace{}
	if err := c.LiveReader.Get(ctx, types.NamespacedName{Name: namespace}, ns); err != nil {
		return err
	}
	if !selector.Matches(labels.Set(ns.Labels)) {
		return &configError{reason: pamv1.ReasonNamespaceNotAllowed,
			message: fmt.Sprintf("ClusterPamServer %q does not allow namespace %s (spec.allowedNamespaces: %s); this elevation never calls PAM through it", cluster.Name, namespace, selector)}
	}
	return nil
}

// Forget drops the cached client of a server that was deleted.
func (c *Connector) Forget(server pamv1.ServerObject) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.clients[serverCacheKey(server)]; ok && old.close != nil {
		old.close()
	}
	delete(c.clients, serverCacheKey(server))
	delete(c.limits, serverCacheKey(server))
	c.batches.forget(serverCacheKey(server))
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
		return nil, &configError{reason: pamv1.ReasonSecretNotFound,
			message: fmt.Sprintf("Secret %q not found in namespace %s", name, namespace)}
	}
	return secret, err
}

func serverCacheKey(server pamv1.ServerObject) string {
	if server.GetNamespace() == "" {
		return pamv1.ServerIndexKey(pamv1.ServerKindClusterPamServer, "", server.GetName())
	}
	return pamv1.ServerIndexKey(pamv1.ServerKindPamServer, server.GetNamespace(), server.GetName())
}

func kindOf(el *pamv1.PamElevation) pamv1.ServerKind {
	if el.Spec.ServerRef.Kind == "" {
		return pamv1.ServerKindPamServer
	}
	return el.Spec.ServerRef.Kind
}

func asConfigError(err error) (*configError, bool) {
	var ce *configError
	ok := errors.As(err, &ce)
	return ce, ok
}
