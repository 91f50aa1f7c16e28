package credentials

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
)

// Credential escrow protects pending closes from their credentials being deleted first, as a
// namespace deletion does: while a server is in use, the operator keeps a copy of what its auth
// method reads (the Secret's keys that method uses, and a krb5.conf ConfigMap) in a Secret of
// its own namespace, and falls back to it when the original is gone. This needs only `get` on
// Secrets and ConfigMaps elsewhere, where a finalizer on the user's Secret would need `patch` on
// every Secret in the cluster — which could rewrite any of them. The copy is deleted once no
// elevation needs the server.
//
// A copy goes only where its server sent the original when it was read: it is bound to the
// server object's UID and to a digest of every field that says where the credentials go or whom
// to trust (bindingOf), and used only while both match. Otherwise whoever may edit a server
// could delete its Secret, point the server at an endpoint of their own and have the copy sent
// there; and a server re-created under the same name would inherit its predecessor's copy.

// +kubebuilder:rbac:groups="",namespace=system,resources=secrets,verbs=list;create;patch;delete

const (
	escrowPrefix         = "pam-escrow-"
	escrowSecretPrefix   = "secret."
	escrowKrb5Key        = "configmap.krb5.conf"
	escrowServerAnno     = "pam.mim.dev/server"
	escrowServerUIDAnno  = "pam.mim.dev/server-uid"
	escrowBindingAnno    = "pam.mim.dev/binding"
	escrowVersionAnno    = "pam.mim.dev/source-version"
	escrowComponentLabel = "app.kubernetes.io/component"
	escrowComponent      = "credential-escrow"
	escrowManagedByLabel = "app.kubernetes.io/managed-by"
	escrowManagedBy      = "pam-operator"
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
	// escrowed is true when the originals are gone and the copy is used; note then says so,
	// for the Event on the elevations it serves.
	escrowed bool
	note     string
	// missing is the problem the copy stands in for, when escrowed.
	missing *Error
	// readAt is when the read began (set by connect): of two reads, the one that began later
	// holds the newer data.
	readAt time.Time
}

// escrowRecord is what this process knows of a server's escrow.
type escrowRecord struct {
	// version is the source version the escrow holds, "" when there is none.
	version string
	// uid and generation are those of the server object it was written for: with the version
	// they say that the escrow holds what a read for that object found, under its binding.
	uid        types.UID
	generation int64
	// readAt is when the read of what it holds began.
	readAt time.Time
}

// holds reports whether the escrow holds creds, read for this very server object.
func (r escrowRecord) holds(server pamv1.ServerObject, creds *Credentials) bool {
	return r.version != "" && r.version == creds.version && r.uid == server.GetUID() && r.generation == server.GetGeneration()
}

// EscrowName is the name of a server's escrow Secret: a hash, since a server's kind, namespace
// and name together do not fit a Secret name.
func EscrowName(server pamv1.ServerObject) string {
	return escrowNameOf(pamv1.KeyOf(server))
}

func escrowNameOf(serverKey string) string {
	sum := sha256.Sum256([]byte(serverKey))
	return escrowPrefix + hex.EncodeToString(sum[:10])
}

// destination is what the binding digest covers: every field of a server that says where its
// credentials go or whom to trust. The auth spec goes in whole — the method and all its fields —
// so that a field a method gains later is covered too. Timeout, rate limit and version are left
// out: they change neither the host called nor whom it is trusted to be, and a change to them
// must not cost a pending close its copy.
type destination struct {
	URL             string               `json:"url"`
	CABundle        string               `json:"caBundle"`
	SecretNamespace string               `json:"secretNamespace"`
	Auth            *pamv1.PamServerAuth `json:"auth"`
}

// bindingOf is the hex SHA-256 of the server's destination fields. encoding/json writes struct
// fields in their declared order, so equal specs give equal digests.
func (c *Connector) bindingOf(server pamv1.ServerObject) string {
	spec := server.ServerSpec()
	// Strings, slices and pointers to structs of them: marshalling cannot fail.
	data, _ := json.Marshal(destination{URL: spec.URL, CABundle: spec.CABundle,
		SecretNamespace: c.secretNamespace(server), Auth: spec.Auth})
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// escrowKeys are the Secret keys the auth method reads; the escrow keeps no others.
func escrowKeys(auth *pamv1.PamServerAuth) []string {
	switch {
	case auth == nil:
		return nil
	case auth.Basic != nil:
		return []string{SecretKeyUsername, SecretKeyPassword}
	case auth.NTLM != nil:
		return []string{SecretKeyUsername, SecretKeyPassword, SecretKeyDomain}
	case auth.Kerberos != nil:
		return []string{SecretKeyUsername, SecretKeyPassword, SecretKeyKeytab}
	}
	return nil
}

// loadCredentials reads the server's Secret (and ConfigMap) live, or, when they are gone, its
// escrow — only if the escrow is bound to this server as it is now.
func (c *Connector) loadCredentials(ctx context.Context, server pamv1.ServerObject) (*Credentials, error) {
	creds, err := c.readSource(ctx, server)
	problem, missing := AsError(err)
	if !missing {
		return creds, err
	}
	escrow := &corev1.Secret{}
	if getErr := c.LiveReader.Get(ctx, types.NamespacedName{Namespace: c.OperatorNamespace, Name: EscrowName(server)}, escrow); getErr != nil {
		if apierrors.IsNotFound(getErr) {
			return nil, err // nothing kept: report the original problem
		}
		return nil, getErr
	}
	where := c.OperatorNamespace + "/" + escrow.Name
	if escrow.Annotations[escrowServerUIDAnno] != string(server.GetUID()) || escrow.Annotations[escrowBindingAnno] != c.bindingOf(server) {
		// Written for another object of this name, or before the server was pointed elsewhere:
		// the original problem stands, and says why the copy does not help.
		return nil, &Error{Reason: problem.Reason, Message: problem.Message + "; a copy of the credentials is kept in Secret " +
			where + " but belongs to another configuration of the server (its url, caBundle or auth changed, or it was re-created) and is not used"}
	}
	kept := &Credentials{data: map[string][]byte{}, version: "escrow/" + escrow.ResourceVersion,
		source: "the copy kept in Secret " + where, escrowed: true, missing: problem,
		note: problem.Message + "; PAM is called with the copy of the server's credentials kept in Secret " + where}
	spec := server.ServerSpec()
	for _, key := range escrowKeys(spec.Auth) {
		if v, ok := escrow.Data[escrowSecretPrefix+key]; ok {
			kept.data[key] = v
		}
	}
	if krb := spec.Auth.Kerberos; krb != nil && krb.Krb5ConfigMapRef != nil {
		kept.krb5Conf = string(escrow.Data[escrowKrb5Key])
	}
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
// it is: a copy is only ever written from the originals.
func (c *Connector) KeepEscrow(ctx context.Context, server pamv1.ServerObject, creds *Credentials) error {
	if creds == nil || creds.escrowed {
		return nil
	}
	return c.writeEscrow(ctx, server, creds, false)
}

// refreshEscrow updates an escrow this process keeps when the originals changed, or the server
// did: a copy bound to the server as it was would not serve it as it is.
func (c *Connector) refreshEscrow(ctx context.Context, server pamv1.ServerObject, creds *Credentials) error {
	kept := c.escrowRecord(pamv1.KeyOf(server))
	if kept.version == "" || creds.escrowed || kept.holds(server, creds) {
		return nil
	}
	return c.writeEscrow(ctx, server, creds, true)
}

// writeEscrow makes the server's escrow hold creds, unless it holds them already or holds what a
// later read found: a read that began first may finish last, with the credentials as they were
// before a rotation; likewise a read for an older copy of the server object. Escrow writes go
// one at a time, so that check holds until the write is done. A refresh writes only while this
// process keeps an escrow: one dropped since the refresh was decided stays dropped.
func (c *Connector) writeEscrow(ctx context.Context, server pamv1.ServerObject, creds *Credentials, refresh bool) error {
	c.escrowWrites.Lock()
	defer c.escrowWrites.Unlock()
	key := pamv1.KeyOf(server)
	kept := c.escrowRecord(key)
	if kept.holds(server, creds) || creds.readAt.Before(kept.readAt) || (refresh && kept.version == "") ||
		(kept.uid == server.GetUID() && server.GetGeneration() < kept.generation) {
		return nil
	}
	desired := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: c.OperatorNamespace, Name: EscrowName(server),
			Labels: map[string]string{escrowManagedByLabel: escrowManagedBy, escrowComponentLabel: escrowComponent},
			Annotations: map[string]string{escrowServerAnno: key, escrowServerUIDAnno: string(server.GetUID()),
				escrowBindingAnno: c.bindingOf(server), escrowVersionAnno: creds.version}},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{},
	}
	for _, k := range escrowKeys(server.ServerSpec().Auth) {
		if v, ok := creds.data[k]; ok {
			desired.Data[escrowSecretPrefix+k] = v
		}
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
	case !sameAnnotations(existing, desired, escrowServerUIDAnno, escrowBindingAnno, escrowVersionAnno):
		// The whole copy is replaced: a merge patch sets the keys no longer wanted to null.
		patch := client.MergeFrom(existing.DeepCopy())
		existing.Annotations, existing.Labels, existing.Data = desired.Annotations, desired.Labels, desired.Data
		if err := c.Writer.Patch(ctx, existing, patch); err != nil {
			return err
		}
	}
	c.setEscrowRecord(key, escrowRecord{version: creds.version, uid: server.GetUID(), generation: server.GetGeneration(), readAt: creds.readAt})
	return nil
}

func sameAnnotations(a, b client.Object, keys ...string) bool {
	for _, k := range keys {
		if a.GetAnnotations()[k] != b.GetAnnotations()[k] {
			return false
		}
	}
	return true
}

// DropEscrow deletes the server's escrow: no elevation needs its credentials any more, or the
// server is gone.
func (c *Connector) DropEscrow(ctx context.Context, server pamv1.ServerObject) error {
	c.escrowWrites.Lock()
	defer c.escrowWrites.Unlock()
	escrow := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: c.OperatorNamespace, Name: EscrowName(server)}}
	key := pamv1.KeyOf(server)
	c.mu.Lock()
	kept, known := c.escrows[key]
	c.mu.Unlock()
	if known && kept.version == "" {
		return nil // known to be absent
	}
	if err := c.Writer.Delete(ctx, escrow); client.IgnoreNotFound(err) != nil {
		return err
	}
	c.setEscrowRecord(key, escrowRecord{})
	return nil
}

// CollectEscrows deletes the escrows in OperatorNamespace that nothing needs: those a crash, or
// a server deleted while no replica ran, left behind. needed reports whether the escrow written
// for the server with serverKey and uid is still needed; it is asked under the lock escrow
// writes take, so that no escrow is kept between its answer and the deletion, and must not call
// the Connector's escrow methods. Only the escrows' metadata is read.
func (c *Connector) CollectEscrows(ctx context.Context, needed func(ctx context.Context, serverKey string, uid types.UID) (bool, error)) error {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
	if err := c.LiveReader.List(ctx, list, client.InNamespace(c.OperatorNamespace),
		client.MatchingLabels{escrowManagedByLabel: escrowManagedBy, escrowComponentLabel: escrowComponent}); err != nil {
		return err
	}
	var errs []error
	for i := range list.Items {
		errs = append(errs, c.collectEscrow(ctx, &list.Items[i], needed))
	}
	return errors.Join(errs...)
}

func (c *Connector) collectEscrow(ctx context.Context, escrow *metav1.PartialObjectMetadata, needed func(context.Context, string, types.UID) (bool, error)) error {
	c.escrowWrites.Lock()
	defer c.escrowWrites.Unlock()
	key := escrow.Annotations[escrowServerAnno]
	keep, err := needed(ctx, key, types.UID(escrow.Annotations[escrowServerUIDAnno]))
	if err != nil || keep {
		return err
	}
	logf.FromContext(ctx).Info("Deleting credential escrow nothing needs", "escrow", escrow.Name, "server", key)
	// Exactly the escrow judged: one rewritten since is left for a later decision.
	uid, version := escrow.UID, escrow.ResourceVersion
	err = c.Writer.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: escrow.Namespace, Name: escrow.Name}},
		client.Preconditions{UID: &uid, ResourceVersion: &version})
	switch {
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
		return nil
	case err != nil:
		return err
	}
	if key != "" && escrow.Name == escrowNameOf(key) {
		c.setEscrowRecord(key, escrowRecord{})
	}
	return nil
}

// escrowRecord returns what this process knows of the server's escrow.
func (c *Connector) escrowRecord(key string) escrowRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.escrows[key]
}

func (c *Connector) setEscrowRecord(key string, rec escrowRecord) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.escrows == nil {
		c.escrows = map[string]escrowRecord{}
	}
	c.escrows[key] = rec
}
