package controllers

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
)

// TestNamespaceLabelChangeQueuesItsClusterServerElevations: a namespace whose labels change
// queues at once its elevations that use a ClusterPamServer, whose allowedNamespaces may now
// select it or no longer; those on a PamServer and those elsewhere are not queued.
func TestNamespaceLabelChangeQueuesItsClusterServerElevations(t *testing.T) {
	indexers := elevationIndexers()
	indexers[toolscache.NamespaceIndex] = toolscache.MetaNamespaceIndexFunc
	indexer := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, indexers)
	add := func(namespace, name string, kind pamv1.ServerKind) {
		el := &pamv1.PamElevation{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
			Spec: pamv1.PamElevationSpec{RequestID: unitRequestID, ServerRef: pamv1.ServerReference{Kind: kind, Name: "mim"}}}
		if err := indexer.Add(el); err != nil {
			t.Fatal(err)
		}
	}
	add("team-a", "cluster", pamv1.ServerKindClusterPamServer)
	add("team-a", "namespaced", pamv1.ServerKindPamServer)
	add("team-b", "cluster", pamv1.ServerKindClusterPamServer)
	mapper := &elevationMapper{index: &elevationIndex{indexer: indexer}}

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}}
	got := mapper.forNamespace(context.Background(), ns)
	want := []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: "team-a", Name: "cluster"}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("queued (-want +got):\n%s", diff)
	}
}
