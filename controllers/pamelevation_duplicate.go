package controllers

// Duplicates: two elevations that name the same request.

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
)

// trackedElsewhere returns the namespace/name of another PamElevation that owns the same
// request, "" when this one does. The owner is the one that read the request from PAM first;
// between two that both have or have not, the older, then the first by name. An owner that has
// synced is never displaced by a newcomer, whatever the timestamps' one-second resolution says.
func (r *PamElevationReconciler) trackedElsewhere(ctx context.Context, el *pamv1.PamElevation) (string, error) {
	id := normalizedID(el)
	self := client.ObjectKeyFromObject(el).String()
	var owner string
	err := r.index.byRequest(id, func(other *pamv1.PamElevation) {
		if owner != "" {
			return
		}
		key := client.ObjectKeyFromObject(other).String()
		if other.UID == el.UID || key == self {
			return
		}
		if ownsBefore(other, key, el, self) {
			owner = key
		}
	})
	return owner, err
}

func ownsBefore(a *pamv1.PamElevation, aKey string, b *pamv1.PamElevation, bKey string) bool {
	aSynced, bSynced := a.Status.LastSyncTime != nil, b.Status.LastSyncTime != nil
	if aSynced != bSynced {
		return aSynced
	}
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return aKey < bKey
}
