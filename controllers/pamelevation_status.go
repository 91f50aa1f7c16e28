package controllers

import (
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/credentials"
	"github.com/pam-operator/pam-operator/internal/pam"
	"github.com/pam-operator/pam-operator/pamapi"
)

// pass collects what one reconcile learned. Phases record facts here; setConditions turns them
// into conditions in one place.
type pass struct {
	now time.Time
	// synced is the request as read from PAM in this pass, nil when it was not read.
	synced *pam.Request
	// syncedLive is true when synced was read in this pass, not taken from a shared batch.
	syncedLive bool
	// problem is why the pass could not finish, nil when it did.
	problem *problem
	// apiErr is a failure of the Kubernetes API; it is returned so controller-runtime backs off.
	apiErr error
	// closing is true when the next pass is due to close: at the expiry, or to retry a close.
	closing bool
	// confirming is true when PAM accepted the close and the read that confirms it is due:
	// it goes after the closes still waiting (confirmClose).
	confirming bool
	// closed is set when the pass found the request no longer open in PAM.
	closed *closure
	// refusedSlot is set when every call slot of the server was taken: the pass stopped there,
	// learned nothing, and is queued again when one frees.
	refusedSlot bool
	// heldByBurst is set when the pass's confirmation waits for a burst of deletions to end
	// (deletionburst.go): it learned nothing, and is queued again then.
	heldByBurst bool
	// written is the object as a write within the pass left it (the create's time, recorded
	// before the call): the status patch at the end counts its changes from there.
	written *pamv1.PamElevation
}

// closure is why and how the request is no longer open in PAM: the Closed condition's reason
// and message.
type closure struct {
	reason, message string
}

// markClosed records that the request is no longer open in PAM; the first reason found stands.
func (p *pass) markClosed(reason, message string) {
	if p.closed == nil {
		p.closed = &closure{reason: reason, message: message}
	}
}

// requestClosed reports whether the request is known to be no longer open: recorded in the
// status, or found by this pass.
func (p *pass) requestClosed(el *pamv1.PamElevation) bool {
	return p.closed != nil || isClosed(el)
}

// problem is a reason the desired state was not reached.
type problem struct {
	reason  string
	message string
	// stalled means a person must act; the operator still retries on the capped schedule.
	stalled bool
	// retryAfter is the server's Retry-After.
	retryAfter time.Duration
}

// fail records a failed step. Errors are classified once, by the PAM client or the connector;
// this only maps classes to reasons.
func (p *pass) fail(err error) {
	if errors.Is(err, pam.ErrServerBusy) {
		p.refusedSlot = true
		return
	}
	if ce, ok := credentials.AsError(err); ok {
		p.problem = &problem{reason: ce.Reason, message: ce.Message, stalled: true}
		return
	}
	if lb, ok := errors.AsType[*credentials.LoginBackoffError](err); ok {
		p.problem = &problem{reason: pamv1.ReasonAuthBackoff, message: lb.Error(), stalled: true, retryAfter: lb.Until.Sub(p.now)}
		return
	}
	// The message names the host, the address and the rule that refused it.
	if errors.Is(err, pam.ErrHostNotAllowed) {
		p.problem = &problem{reason: pamv1.ReasonHostNotAllowed, message: err.Error(), stalled: true}
		return
	}
	switch pam.ClassOf(err) {
	case pam.ClassAuth:
		p.problem = &problem{reason: pamv1.ReasonUnauthorized, stalled: true,
			message: "Authentication to PAM failed: " + err.Error()}
	case pam.ClassNotFound:
		p.problem = &problem{reason: pamv1.ReasonRequestNotFound, stalled: true,
			message: "PAM does not list the request for the server's account: check spec.requestID, and that the server's credentials are those of the account that created the request; to release the object without closing, set spec.deletionPolicy to Orphan"}
	case pam.ClassRetryable:
		p.problem = &problem{reason: pamv1.ReasonPAMUnavailable, message: err.Error(), retryAfter: pam.RetryAfterOf(err)}
	default:
		p.problem = &problem{reason: pamv1.ReasonPAMError, message: err.Error(), stalled: true}
	}
}

// failConnect records why no client could be built: a configuration a person must fix, or a
// failure of the Kubernetes API that controller-runtime retries.
func (p *pass) failConnect(err error) {
	if _, ok := credentials.AsError(err); ok {
		p.fail(err)
		return
	}
	p.apiErr = err
}

// failClose records a failed close: the same classes, with a reason that says a close is due.
func (p *pass) failClose(err error) {
	p.fail(err)
	if p.problem != nil && p.problem.reason == pamv1.ReasonPAMError {
		p.problem.reason = pamv1.ReasonCloseFailed
	}
}

// setConditions derives every condition from the status and the pass. Messages carry no
// timestamps, so an unchanged situation writes an unchanged status.
func setConditions(el *pamv1.PamElevation, p *pass) {
	gen := el.Generation
	set := func(condType string, status metav1.ConditionStatus, reason, message string) {
		meta.SetStatusCondition(&el.Status.Conditions, metav1.Condition{
			Type: condType, Status: status, Reason: reason, Message: message, ObservedGeneration: gen,
		})
	}
	if p.closed != nil && !isClosed(el) {
		set(pamv1.ConditionClosed, metav1.ConditionTrue, p.closed.reason, p.closed.message)
		el.Status.ClosedAt = &metav1.Time{Time: p.now}
	}
	closed := meta.FindStatusCondition(el.Status.Conditions, pamv1.ConditionClosed)
	isClosed := closed != nil && closed.Status == metav1.ConditionTrue

	if !isClosed {
		switch {
		case el.Status.RequestStatus == "":
			set(pamv1.ConditionClosed, metav1.ConditionFalse, pamv1.ReasonSyncing, "The request has not been read from PAM yet")
		case pam.RequestStatus(el.Status.RequestStatus) == pamapi.StatusActive:
			set(pamv1.ConditionClosed, metav1.ConditionFalse, pamv1.ReasonActive, "The request is open in PAM")
		case pendingReason(el) != "":
			set(pamv1.ConditionClosed, metav1.ConditionFalse, pendingReason(el), fmt.Sprintf("The request is %s in PAM", el.Status.RequestStatus))
		case pam.RequestStatus(el.Status.RequestStatus) == pamapi.StatusClosing:
			set(pamv1.ConditionClosed, metav1.ConditionFalse, pamv1.ReasonClosing, "PAM is closing the request")
		case !pam.RequestStatus(el.Status.RequestStatus).Known():
			// Shown as it came (the client bounds and cleans it); treated as open, so it is closed
			// when due and never releases the object.
			set(pamv1.ConditionClosed, metav1.ConditionFalse, pamv1.ReasonPending,
				fmt.Sprintf("The request is %s in PAM, a state that is not documented; it counts as open", el.Status.RequestStatus))
		default:
			set(pamv1.ConditionClosed, metav1.ConditionFalse, pamv1.ReasonPending,
				fmt.Sprintf("The request is %s in PAM", el.Status.RequestStatus))
		}
	}

	switch {
	case p.problem != nil:
		set(pamv1.ConditionReady, metav1.ConditionFalse, p.problem.reason, p.problem.message)
		if p.problem.stalled {
			set(pamv1.ConditionStalled, metav1.ConditionTrue, p.problem.reason, p.problem.message)
			meta.RemoveStatusCondition(&el.Status.Conditions, pamv1.ConditionReconciling)
		} else {
			set(pamv1.ConditionReconciling, metav1.ConditionTrue, p.problem.reason, p.problem.message)
			meta.RemoveStatusCondition(&el.Status.Conditions, pamv1.ConditionStalled)
		}
	case isClosed && closed.Reason == pamv1.ReasonRejected:
		// Never granted, and never will be: a settled result a person must look at.
		set(pamv1.ConditionReady, metav1.ConditionFalse, closed.Reason, closed.Message)
		set(pamv1.ConditionStalled, metav1.ConditionTrue, closed.Reason, closed.Message)
		meta.RemoveStatusCondition(&el.Status.Conditions, pamv1.ConditionReconciling)
	case isClosed:
		set(pamv1.ConditionReady, metav1.ConditionTrue, closed.Reason, closed.Message)
		clearProgress(el)
	case el.Status.RequestStatus == "":
		set(pamv1.ConditionReady, metav1.ConditionFalse, pamv1.ReasonSyncing, "Waiting for the first read of the request from PAM")
		set(pamv1.ConditionReconciling, metav1.ConditionTrue, pamv1.ReasonSyncing, "Waiting for the first read of the request from PAM")
		meta.RemoveStatusCondition(&el.Status.Conditions, pamv1.ConditionStalled)
	case pendingReason(el) != "":
		// Not granted yet: kstatus shows it in progress, and kubectl wait --for=condition=Ready
		// waits for the approval.
		reason := pendingReason(el)
		set(pamv1.ConditionReady, metav1.ConditionFalse, reason, pendingMessages[reason])
		set(pamv1.ConditionReconciling, metav1.ConditionTrue, reason, pendingMessages[reason])
		meta.RemoveStatusCondition(&el.Status.Conditions, pamv1.ConditionStalled)
	default:
		c := meta.FindStatusCondition(el.Status.Conditions, pamv1.ConditionClosed)
		set(pamv1.ConditionReady, metav1.ConditionTrue, c.Reason, c.Message)
		clearProgress(el)
	}

	// A transient failure leaves observedGeneration behind, so kstatus reports progress, not a
	// settled result; a stall is a settled result that needs a person.
	if p.problem == nil || p.problem.stalled {
		el.Status.ObservedGeneration = gen
	}
}

// pendingMessages say who must act while the request is not granted yet.
var pendingMessages = map[string]string{
	pamv1.ReasonProcessing:      "MIM is processing the request; nobody needs to act",
	pamv1.ReasonPendingApproval: "The request waits for an approver of its role to approve it in MIM",
	pamv1.ReasonPendingMFA:      "The request waits for the requesting account to complete its multi-factor authentication in MIM",
}

// pendingReason is the reason of a request PAM has not granted yet, "" for any other state.
func pendingReason(el *pamv1.PamElevation) string {
	switch s := pam.RequestStatus(el.Status.RequestStatus); s {
	case pamapi.StatusProcessing, pamapi.StatusPendingApproval, pamapi.StatusPendingMFA:
		return string(s)
	}
	return ""
}

// waitsForGrant reports whether el's last pass settled with its request not granted yet, and
// nothing wrong: Ready is False for that reason alone.
func waitsForGrant(el *pamv1.PamElevation) bool {
	ready := meta.FindStatusCondition(el.Status.Conditions, pamv1.ConditionReady)
	return ready != nil && ready.Status == metav1.ConditionFalse && ready.Reason == pendingReason(el) && ready.Reason != ""
}

func clearProgress(el *pamv1.PamElevation) {
	meta.RemoveStatusCondition(&el.Status.Conditions, pamv1.ConditionReconciling)
	meta.RemoveStatusCondition(&el.Status.Conditions, pamv1.ConditionStalled)
}

// closedMessage is the usual message of the Closed condition for reason, the request now being
// in status.
func closedMessage(reason string, status pam.RequestStatus) string {
	switch reason {
	case pamv1.ReasonExpired:
		return "Closed by the operator at expiry"
	case pamv1.ReasonDeleted:
		return "Closed by the operator because the object is being deleted"
	case pamv1.ReasonCloseRequested:
		return "Closed by the operator because spec.closed is true"
	case pamv1.ReasonRejected:
		return "An approver rejected the request in MIM: it was never granted"
	}
	return fmt.Sprintf("PAM reports the request %s", status)
}

// isClosed reports whether the request is known to be no longer open in PAM.
func isClosed(el *pamv1.PamElevation) bool {
	return meta.IsStatusConditionTrue(el.Status.Conditions, pamv1.ConditionClosed)
}
