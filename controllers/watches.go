package controllers

import (
	"context"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
)

// serverSecretIndex maps servers to the Secret their auth method reads.
const serverSecretIndex = ".spec.auth.secretRef"

// SetupIndexes registers the field indexes the watches use: elevations by server, and both
// server kinds by Secret name.
func SetupIndexes(ctx context.Context, mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &pamv1.PamElevation{}, serverRefIndex, func(o client.Object) []string {
		return []string{o.(*pamv1.PamElevation).ServerKey()}
	}); err != nil {
		return err
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &pamv1.PamElevation{}, requestIDIndex, func(o client.Object) []string {
		return []string{normalizedID(o.(*pamv1.PamElevation))}
	}); err != nil {
		return err
	}
	extract := func(o client.Object) []string {
		if name := o.(pamv1.ServerObject).ServerSpec().Auth.SecretName(); name != "" {
			return []string{name}
		}
		return nil
	}
	for _, obj := range []client.Object{&pamv1.PamServer{}, &pamv1.ClusterPamServer{}} {
		if err := mgr.GetFieldIndexer().IndexField(ctx, obj, serverSecretIndex, extract); err != nil {
			return err
		}
	}
	return nil
}

// elevationMapper turns changes of servers into requests for the elevations that
// depend on them, through field indexes rather than list scans.
type elevationMapper struct {
	client.Client
}

// forServer maps a PamServer or ClusterPamServer to its elevations.
func (m *elevationMapper) forServer(ctx context.Context, o client.Object) []reconcile.Request {
	return m.elevationsOf(ctx, serverCacheKey(o.(pamv1.ServerObject)))
}

func (m *elevationMapper) elevationsOf(ctx context.Context, serverKey string) []reconcile.Request {
	var list pamv1.PamElevationList
	if err := m.List(ctx, &list, client.MatchingFields{serverRefIndex: serverKey}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing elevations of a server", "server", serverKey)
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return reqs
}

// serversUsingSecret finds the PamServers in the Secret's namespace, and the ClusterPamServers
// when it is the cluster resource namespace, whose auth method reads the Secret.
func serversUsingSecret(ctx context.Context, c client.Client, secret client.Object, clusterResourceNamespace string) []pamv1.ServerObject {
	var servers []pamv1.ServerObject
	var namespaced pamv1.PamServerList
	if err := c.List(ctx, &namespaced, client.InNamespace(secret.GetNamespace()),
		client.MatchingFields{serverSecretIndex: secret.GetName()}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing PamServers of a Secret", "secret", client.ObjectKeyFromObject(secret))
	}
	for i := range namespaced.Items {
		servers = append(servers, &namespaced.Items[i])
	}
	if secret.GetNamespace() == clusterResourceNamespace {
		var cluster pamv1.ClusterPamServerList
		if err := c.List(ctx, &cluster, client.MatchingFields{serverSecretIndex: secret.GetName()}); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Listing ClusterPamServers of a Secret", "secret", client.ObjectKeyFromObject(secret))
		}
		for i := range cluster.Items {
			servers = append(servers, &cluster.Items[i])
		}
	}
	return servers
}
