package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
)

// In-use protection, the pattern Kubernetes uses for PersistentVolumeClaims: while an elevation
// may still have to close its request, its server and the server's Secret keep the finalizer
// InUseFinalizer. Deleting a namespace deletes everything in it at once; without this, the
// Secret could go first and every pending close in the namespace would be lost.

// InUseFinalizer holds a server or Secret that a pending close still needs.
const InUseFinalizer = "pam.mim.dev/in-use"

// +kubebuilder:rbac:groups=pam.mim.dev,resources=pamservers;clusterpamservers,verbs=patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=patch

// needsServer reports whether an elevation may still have to call PAM through its server.
func needsServer(el *pamv1.PamElevation) bool {
	return controllerutil.ContainsFinalizer(el, pamv1.ElevationFinalizer) &&
		el.Spec.DeletionPolicy != pamv1.DeletionPolicyOrphan && !isClosed(el)
}

// serverInUse reports whether any elevation still needs the server.
func serverInUse(ctx context.Context, c client.Client, server pamv1.ServerObject) (bool, error) {
	var list pamv1.PamElevationList
	if err := c.List(ctx, &list, client.MatchingFields{serverRefIndex: serverCacheKey(server)}); err != nil {
		return false, err
	}
	for i := range list.Items {
		if needsServer(&list.Items[i]) {
			return true, nil
		}
	}
	return false, nil
}

// protectServer adds or removes the in-use finalizer of a server, and adds it to the server's
// Secret while the server is in use. Secrets are released by SecretReleaser, which knows every
// server that reads them. Secrets are read live through secrets: the operator may get one
// Secret, but not list or watch them.
func protectServer(ctx context.Context, c client.Client, secrets client.Reader, server pamv1.ServerObject, secretNamespace string) error {
	inUse, err := serverInUse(ctx, c, server)
	if err != nil {
		return err
	}
	if inUse != controllerutil.ContainsFinalizer(server, InUseFinalizer) {
		patch := client.MergeFromWithOptions(server.DeepCopyObject().(client.Object), client.MergeFromWithOptimisticLock{})
		if inUse {
			controllerutil.AddFinalizer(server, InUseFinalizer)
		} else {
			controllerutil.RemoveFinalizer(server, InUseFinalizer)
		}
		if err := c.Patch(ctx, server, patch); err != nil {
			return client.IgnoreNotFound(err)
		}
	}
	name := server.ServerSpec().Auth.SecretName()
	if !inUse || name == "" {
		return nil
	}
	secret := secretMetadata(secretNamespace, name)
	if err := secrets.Get(ctx, client.ObjectKeyFromObject(secret), secret); err != nil {
		return client.IgnoreNotFound(err) // a missing Secret is reported in the server's status
	}
	if controllerutil.ContainsFinalizer(secret, InUseFinalizer) || !secret.DeletionTimestamp.IsZero() {
		return nil
	}
	patch := client.MergeFromWithOptions(secret.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.AddFinalizer(secret, InUseFinalizer)
	return client.IgnoreNotFound(c.Patch(ctx, secret, patch))
}

func secretMetadata(namespace, name string) *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	return m
}

// SecretReleaser removes the in-use finalizer from a Secret once no server that reads it is in
// use. It does not watch Secrets, which would need the right to list every Secret in the
// cluster: the changes of servers and elevations that can free a Secret enqueue it, and it reads
// the Secret's metadata live.
type SecretReleaser struct {
	client.Client
	// LiveReader reads Secrets from the API server.
	LiveReader client.Reader
	// ClusterResourceNamespace is where ClusterPamServer Secrets live.
	ClusterResourceNamespace string
}

// Reconcile releases one Secret if nothing needs it any more.
func (r *SecretReleaser) Reconcile(ctx context.Context, req reconcile.Request) (ctrl.Result, error) {
	secret := secretMetadata(req.Namespace, req.Name)
	if err := r.LiveReader.Get(ctx, req.NamespacedName, secret); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !controllerutil.ContainsFinalizer(secret, InUseFinalizer) {
		return ctrl.Result{}, nil
	}
	for _, server := range serversUsingSecret(ctx, r.Client, secret, r.ClusterResourceNamespace) {
		inUse, err := serverInUse(ctx, r.Client, server)
		if err != nil || inUse {
			return ctrl.Result{}, err
		}
	}
	ctrl.LoggerFrom(ctx).Info("Releasing Secret no pending close needs", "secret", req.NamespacedName)
	patch := client.MergeFromWithOptions(secret.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(secret, InUseFinalizer)
	return ctrl.Result{}, client.IgnoreNotFound(r.Patch(ctx, secret, patch))
}

// SetupWithManager watches the servers and elevations whose changes may free a Secret. A server
// that switches to another Secret frees the old one.
func (r *SecretReleaser) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("secret-in-use").
		Watches(&pamv1.PamServer{}, r.serverSecrets()).
		Watches(&pamv1.ClusterPamServer{}, r.serverSecrets()).
		Watches(&pamv1.PamElevation{}, handler.EnqueueRequestsFromMapFunc(r.elevationSecret)).
		Complete(r)
}

// serverSecrets enqueues the Secret a server reads, and on an update also the one it read before.
func (r *SecretReleaser) serverSecrets() handler.EventHandler {
	enqueue := func(q workqueue.TypedRateLimitingInterface[reconcile.Request], o client.Object) {
		server := o.(pamv1.ServerObject)
		if name := server.ServerSpec().Auth.SecretName(); name != "" {
			q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: r.secretNamespace(server), Name: name}})
		}
	}
	return handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(q, e.Object)
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(q, e.ObjectOld)
			enqueue(q, e.ObjectNew)
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(q, e.Object)
		},
	}
}

func (r *SecretReleaser) elevationSecret(ctx context.Context, o client.Object) []reconcile.Request {
	el := o.(*pamv1.PamElevation)
	server, err := (&Connector{Client: r.Client}).GetServer(ctx, el)
	if err != nil {
		return nil
	}
	name := server.ServerSpec().Auth.SecretName()
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: r.secretNamespace(server), Name: name}}}
}

func (r *SecretReleaser) secretNamespace(server pamv1.ServerObject) string {
	if server.GetNamespace() == "" {
		return r.ClusterResourceNamespace
	}
	return server.GetNamespace()
}
