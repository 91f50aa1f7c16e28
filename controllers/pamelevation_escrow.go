package controllers

import (
	corev1 "k8s.io/api/core/v1"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/credentials"
	"github.com/pam-operator/pam-operator/internal/pam"
)

// noteEscrow tells the elevation's users, once, that a call for it is about to go out with the
// copy of its server's credentials kept in escrow: their Secret is gone, which a namespace
// deletion explains and anything else should not. A Warning, so that it shows where people
// look for what needs a look. Once per object and process: the memory goes with the object's
// read record, so a restart or failover may tell it once more.
func (r *PamElevationReconciler) noteEscrow(el *pamv1.PamElevation, pc pam.Client, action string) {
	note, ok := credentials.FromEscrow(pc)
	if !ok || !r.reads.firstEscrowUse(el.UID) {
		return
	}
	r.Recorder.Eventf(el, nil, corev1.EventTypeWarning, pamv1.ReasonCredentialEscrowUsed, action, "%s", note)
}
