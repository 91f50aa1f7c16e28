// Package pamapi holds the vocabulary of the MIM PAM REST API that both its client (the
// operator) and its emulator speak: the states of a PAM request. It is public so that the
// emulator, which users import into their own tests, can share it.
package pamapi

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

// Ended reports whether nothing is left to close: the request is Closed, Expired or Rejected.
func (s RequestStatus) Ended() bool {
	return s == StatusClosed || s == StatusExpired || s == StatusRejected
}
