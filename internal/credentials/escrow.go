package credentials

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
)

// Credential escrow protects pending closes from their credentials being deleted first, as a
// namespace deletion does: while a server is in use, the operator keeps a copy of what its auth
// method reads (the Secret's data, and a krb5.conf ConfigMap) in a Secret of its own namespace,
// and falls back to it when the original is gone. This needs only `get` on Secrets and
// ConfigMaps elsewhere, where a finalizer on the user's Secret would need `patch` on every
// Secret in the cluster — which could rewrite any of them. The copy is deleted once no
// elevation needs the server.

// +kubebuilder:rbac:groups="",namespace=system,resources=secrets,verbs=create;patch;delete

const (
	escrowPrefix         = "pam-escrow-"
	escrowSecretPrefix   = "secret."
	escrowKrb5Key        = "configmap.krb5.conf"
	escrowServerAnno     = "pam.mim.dev/server"
	escrowVersionAnno    = "pam.mim.dev/source-version"
	escrowComponentLabel = "app.kubernetes.io/component"
)

// Credentials are what a server's auth method reads. They are opaque outside this package: the
// server's reconciler only hands them back to KeepEscrow.
type Credentials struct {
	data     map[string][]byte
	krb5Conf string
	// version changes whenever the source changes: a new client is built then.
	version string
	// source names where the credentials came from, for messages.
	source string
	// escrowed is true when the originals are gone and the copy is used.
	escrowed bool
	// readAt is when the read began (set by connect): of two reads, the one that began later
	// holds the newer data.
	readAt time.Time
}

// EscrowName is the name of a server's escrow Secret: a hash, since a server's kind, namespace
// and name together do not fit a Secret name.
func EscrowName(server pamv1.ServerObject) string {
	sum := sha256.Sum256([]byte(pamv1.KeyOf(server)))
	return escrowPrefix + hex.EncodeToString(sum[:10])
}

// loadCredentials reads the server's Secret (and ConfigMap) live, or its escrow when they are
// gone.
func (c *Connector) loadCredentials(ctx context.Context, server pamv1.ServerObject) (*Credentials, error) {
	creds, err := c.readSource(ctx, server)
	if _, missing := AsError(err); !missing {
		return creds, err
	}
	escrow := &corev1.Secret{}
	if getErr := c.LiveReader.Get(ctx, types.NamespacedName{Namespace: c.OperatorNamespace, Name: EscrowName(server)}, escrow); getErr != nil {
		if apierrors.IsNotFound(getErr) {
			return nil, err // nothing kept: report the original problem
		}
		return nil, getErr
	}
	kept := &Credentials{data: map[string][]byte{}, version: "escrow/" + escrow.ResourceVersion,
		source: "the copy kept in Secret " + c.OperatorNamespace + "/" + escrow.Name, escrowed: true}
	for k, v := range escrow.Data {
		if key, ok := strings.CutPrefix(k, escrowSecretPrefix); ok {
			kept.data[key] = v
		}
	}
	kept.krb5Conf = string(escrow.Data[escrowKrb5Key])
	return kept, nil
}

// readSource reads the server's Secret and, for Kerberos with krb5ConfigMapRef, its ConfigMap.
// A missing one is a *configError.
func (c *Connector) readSource(ctx context.Context, server pamv1.ServerObject) (*Credentials, error) {
	spec := server.ServerSpec()
	namespace := c.secretNamespace(server)
	secret, err := c.secret(ctx, namespace, spec.Auth.SecretName())
	if err != nil {
		return nil, err
	}
	creds := &Credentials{data: secret.Data, version: secret.ResourceVersion, source: "Secret " + namespace + "/" + secret.Name}
	if krb := spec.Auth.Kerberos; krb != nil && krb.Krb5ConfigMapRef != nil {
		cm := &corev1.ConfigMap{}
		if err := c.LiveReader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: krb.Krb5ConfigMapRef.Name}, cm); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, &Error{Reason: pamv1.ReasonInvalidServerConfig,
					Message: "ConfigMap " + krb.Krb5ConfigMapRef.Name + " not found in namespace " + namespace}
			}
			return nil, err
		}
		creds.krb5Conf = cm.Data[ConfigMapKeyKrb5]
		creds.version += "/" + cm.ResourceVersion
	}
	return creds, nil
}

// KeepEscrow makes the server's escrow hold creds, the credentials just read for it by Check.
// Nothing read (no auth method, or originals gone) or the escrow itself read leaves the copy as
// it is.
func (c *Connector) KeepEscrow(ctx context.Context, server pamv1.ServerObject, creds *Credentials) error {
	if creds == nil || creds.escrowed {
		return nil
	}
	return c.writeEscrow(ctx, server, creds, false)
}

// refreshEscrow updates an escrow this process keeps when the originals changed.
func (c *Connector) refreshEscrow(ctx context.Context, server pamv1.ServerObject, creds *Credentials) error {
	c.mu.Lock()
	kept := c.escrowed[pamv1.KeyOf(server)]
	c.mu.Unlock()
	if kept == "" || creds.escrowed || kept == creds.version {
		return nil
	}
	return c.writeEscrow(ctx, server, creds, true)
}

// writeEscrow makes the server's escrow hold creds, unless it holds them already or holds what a
// later read found: a read that began first may finish last, with the credentials as they were
// before a rotation. Escrow writes go one at a time, so that check holds until the write is done.
// A refresh writes only while this process keeps an escrow: one dropped since the refresh was
// decided stays dropped.
func (c *Connector) writeEscrow(ctx context.Context, server pamv1.ServerObject, creds *Credentials, refresh bool) error {
	c.escrowWrites.Lock()
	defer c.escrowWrites.Unlock()
	key := pamv1.KeyOf(server)
	c.mu.Lock()
	kept, keptAt := c.escrowed[key], c.escrowedAt[key]
	c.mu.Unlock()
	if kept == creds.version || creds.readAt.Before(keptAt) || (refresh && kept == "") {
		return nil
	}
	desired := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: c.OperatorNamespace, Name: EscrowName(server),
			Labels:      map[string]string{"app.kubernetes.io/managed-by": "pam-operator", escrowComponentLabel: "credential-escrow"},
			Annotations: map[string]string{escrowServerAnno: key, escrowVersionAnno: creds.version}},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{},
	}
	for k, v := range creds.data {
		desired.Data[escrowSecretPrefix+k] = v
	}
	if creds.krb5Conf != "" {
		desired.Data[escrowKrb5Key] = []byte(creds.krb5Conf)
	}
	existing := &corev1.Secret{}
	err := c.LiveReader.Get(ctx, client.ObjectKeyFromObject(desired), existing)
	switch {
	case apierrors.IsNotFound(err):
		if err := c.Writer.Create(ctx, desired); err != nil {
			return err
		}
	case err != nil:
		return err
	case existing.Annotations[escrowVersionAnno] != creds.version:
		patch := client.MergeFrom(existing.DeepCopy())
		existing.Annotations, existing.Labels, existing.Data = desired.Annotations, desired.Labels, desired.Data
		if err := c.Writer.Patch(ctx, existing, patch); err != nil {
			return err
		}
	}
	c.mu.Lock()
	if c.escrowed == nil {
		c.escrowed, c.escrowedAt = map[string]string{}, map[string]time.Time{}
	}
	c.escrowed[key], c.escrowedAt[key] = creds.version, creds.readAt
	c.mu.Unlock()
	return nil
}

// DropEscrow deletes the server's escrow: no elevation needs its credentials any more.
func (c *Connector) DropEscrow(ctx context.Context, server pamv1.ServerObject) error {
	c.escrowWrites.Lock()
	defer c.escrowWrites.Unlock()
	escrow := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: c.OperatorNamespace, Name: EscrowName(server)}}
	key := pamv1.KeyOf(server)
	c.mu.Lock()
	kept, known := c.escrowed[key]
	c.mu.Unlock()
	if known && kept == "" {
		return nil // known to be absent
	}
	if err := c.Writer.Delete(ctx, escrow); client.IgnoreNotFound(err) != nil {
		return err
	}
	c.mu.Lock()
	if c.escrowed == nil {
		c.escrowed, c.escrowedAt = map[string]string{}, map[string]time.Time{}
	}
	c.escrowed[key] = "" // "" records that there is none
	delete(c.escrowedAt, key)
	c.mu.Unlock()
	return nil
}
