package controllers

// Duplicates: two elevations that name the same request.

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/pamapi"
)

// trackedElsewhere returns the name of another PamElevation that owns the same request, "" when
// this one does. Another one can own it only if it is in the same namespace, uses the same
// server, has read the request open and is not being deleted: a tenant that knows another's
// request ID can otherwise stop that close by naming it first (docs/security.md). Between two
// that both qualify, the one that read the request first owns it; between two that both have or
// have not, the older, then the first by name. An owner that has synced is never displaced by a
// newcomer, whatever the timestamps' one-second resolution says.
func (r *PamElevationReconciler) trackedElsewhere(ctx context.Context, el *pamv1.PamElevation) (string, error) {
	id := requestIDOf(el)
	if id == "" {
		return "", nil // nothing requested yet
	}
	var owner string
	err := r.index.byRequest(id, func(other *pamv1.PamElevation) {
		if owner != "" || other.UID == el.UID || other.Name == el.Name || !canOwnFor(other, el) {
			return
		}
		if ownsBefore(other, el) {
			owner = other.Name
		}
	})
	return owner, err
}

// canOwnFor reports whether other may hold el's request in el's stead.
func canOwnFor(other, el *pamv1.PamElevation) bool {
	return other.Namespace == el.Namespace &&
		kindOf(other) == kindOf(el) && other.Spec.ServerRef.Name == el.Spec.ServerRef.Name &&
		other.Status.LastSyncTime != nil && !pamapi.RequestStatus(other.Status.RequestStatus).Ended() &&
		other.DeletionTimestamp.IsZero()
}

func ownsBefore(a, b *pamv1.PamElevation) bool {
	aSynced, bSynced := a.Status.LastSyncTime != nil, b.Status.LastSyncTime != nil
	if aSynced != bSynced {
		return aSynced
	}
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return client.ObjectKeyFromObject(a).String() < client.ObjectKeyFromObject(b).String()
}

// kindOf is the kind of server el uses, with the default filled in.
func kindOf(el *pamv1.PamElevation) pamv1.ServerKind {
	if el.Spec.ServerRef.Kind == "" {
		return pamv1.ServerKindPamServer
	}
	return el.Spec.ServerRef.Kind
}
