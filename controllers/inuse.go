package controllers

import (
	"context"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/credentials"
)

// In-use protection, the pattern Kubernetes uses for PersistentVolumeClaims: while an elevation
// may still have to close its request, its server keeps the finalizer InUseFinalizer, and a copy
// of the server's credentials is kept in escrow. Deleting a namespace deletes everything in it
// at once; without this, the server or its Secret could go first and every pending close in the
// namespace would be lost.

// InUseFinalizer holds a server or Secret that a pending close still needs.
const InUseFinalizer = "pam.mim.dev/in-use"

// +kubebuilder:rbac:groups=pam.mim.dev,resources=pamservers;clusterpamservers,verbs=patch

// needsServer reports whether an elevation may still have to call PAM through its server. One
// its server never allowed tracks nothing, and must not keep the server or its escrow alive.
func needsServer(el *pamv1.PamElevation) bool {
	return controllerutil.ContainsFinalizer(el, pamv1.ElevationFinalizer) &&
		el.Spec.DeletionPolicy != pamv1.DeletionPolicyOrphan && !isClosed(el) && !neverAllowed(el)
}

// tracksRequest reports whether el has read its request from PAM: a close of it is owed.
func tracksRequest(el *pamv1.PamElevation) bool {
	return el.Status.LastSyncTime != nil
}

// neverAllowed reports whether el's server refused it before it ever read its request.
func neverAllowed(el *pamv1.PamElevation) bool {
	if tracksRequest(el) {
		return false
	}
	stalled := meta.FindStatusCondition(el.Status.Conditions, pamv1.ConditionStalled)
	return stalled != nil && stalled.Status == metav1.ConditionTrue && refusedByPolicy(stalled.Reason)
}

// refusedByPolicy reports whether reason says the server may not be used by the elevation.
func refusedByPolicy(reason string) bool {
	return reason == pamv1.ReasonNamespaceNotAllowed || reason == pamv1.ReasonServerNotAllowed
}

// protectServer adds or removes the in-use finalizer of a server, and keeps or drops the
// escrow of its credentials (escrow.go) to match; creds are the credentials just read for it.
func protectServer(ctx context.Context, c client.Client, index *elevationIndex, connector ServerConnector, server pamv1.ServerObject, creds *credentials.Credentials) error {
	inUse := index.inUse(pamv1.KeyOf(server))
	// The escrow exists before the finalizer says the server is protected, and goes only after
	// nothing needs it.
	if inUse {
		if err := connector.KeepEscrow(ctx, server, creds); err != nil {
			return err
		}
	} else if err := connector.DropEscrow(ctx, server); err != nil {
		return err
	}
	if inUse == controllerutil.ContainsFinalizer(server, InUseFinalizer) {
		return nil
	}
	patch := client.MergeFromWithOptions(server.DeepCopyObject().(client.Object), client.MergeFromWithOptimisticLock{})
	if inUse {
		controllerutil.AddFinalizer(server, InUseFinalizer)
	} else {
		controllerutil.RemoveFinalizer(server, InUseFinalizer)
	}
	return client.IgnoreNotFound(c.Patch(ctx, server, patch))
}
