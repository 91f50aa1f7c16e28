// Package pamapi holds the vocabulary of the MIM PAM REST API that both its client (the
// operator) and its emulator speak: the states of a PAM request. It is public so that the
// emulator, which users import into their own tests, can share it.
package pamapi

import "slices"

// RequestStatus is the state of a PAM request, as PAM spells it.
type RequestStatus string

// The request states PAM documents.
const (
	StatusProcessing      RequestStatus = "Processing"
	StatusPendingMFA      RequestStatus = "PendingMFA"
	StatusPendingApproval RequestStatus = "PendingApproval"
	StatusActive          RequestStatus = "Active"
	StatusClosing         RequestStatus = "Closing"
	StatusClosed          RequestStatus = "Closed"
	StatusExpired         RequestStatus = "Expired"
	StatusRejected        RequestStatus = "Rejected"
)

// Statuses are every documented state.
var Statuses = []RequestStatus{StatusProcessing, StatusPendingMFA, StatusPendingApproval, StatusActive,
	StatusClosing, StatusClosed, StatusExpired, StatusRejected}

// Known reports whether s is one of the documented states. Any other (a state a later MIM adds,
// or a hostile server's text) is shown as it came and is never taken as ended.
func (s RequestStatus) Known() bool {
	return slices.Contains(Statuses, s)
}

// Ended reports whether nothing is left to close: the request is Closed, Expired or Rejected.
// An unknown state is not: the operator fails closed.
func (s RequestStatus) Ended() bool {
	return s == StatusClosed || s == StatusExpired || s == StatusRejected
}
