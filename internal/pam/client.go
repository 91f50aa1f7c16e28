// Package pam is a client for the Microsoft Identity Manager PAM REST API. It knows nothing of
// Kubernetes: the controllers turn its answers and typed errors into conditions.
package pam

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/pam-operator/pam-operator/pamapi"
)

// RequestStatus is the state of a PAM request, as PAM spells it.
type RequestStatus = pamapi.RequestStatus

// Request is a PAM request as the list and create calls return it.
type Request struct {
	ID             string
	CreatorID      string
	RoleID         string
	Justification  string
	DisplayName    string
	CreationMethod string
	CreationTime   time.Time
	RequestedTime  time.Time
	// ExpirationTime is zero when PAM has not set it (pending or rejected requests).
	ExpirationTime time.Time
	RequestedTTL   time.Duration
	Status         RequestStatus
}

// CreateOptions are the properties of a new elevation request.
type CreateOptions struct {
	RoleID        string
	TTL           time.Duration
	Justification string
	// RequestedTime is when the elevation should start; zero means now.
	RequestedTime time.Time
}

// Role is a PAM role the calling account may request, as the roles call returns it.
type Role struct {
	// ID is the role's GUID, lower case.
	ID string
	// DisplayName is the role's name as PAM sent it, unaltered, so that a name can be matched
	// exactly; a caller that shows it bounds it first.
	DisplayName string
	// Description is PAM's text made printable and cut to 1 KiB.
	Description string
	// TTL is the role's default lifetime of an elevation; 0 when PAM sent none.
	TTL                       time.Duration
	MFAEnabled                bool
	ApprovalEnabled           bool
	AvailabilityWindowEnabled bool
	// AvailableFrom and AvailableTo bound the times of day at which the role may be requested,
	// when AvailabilityWindowEnabled. MIM compares only their time of day, on its own clock:
	// they keep the zone PAM wrote them in. Zero when absent or unset, which reads as midnight.
	AvailableFrom, AvailableTo time.Time
}

// Client talks to one MIM PAM REST API as one account.
//
// Contract: Close may be sent again after an unknown outcome (a timeout, a dropped connection)
// and its answer for a request that is already closed is not documented, so callers confirm
// every outcome with Get before concluding anything. Get returns an error of class NotFound
// when PAM does not list the request for this account; that proves nothing about the request
// itself (it may belong to another account).
//
// Create is not idempotent: sent twice, it makes two requests. When its outcome is unknown
// (errors.Is(err, ErrCreateOutcomeUnknown)) the request may exist; the caller finds it with
// List (FilterCreatedByRoleSince, FilterJustification) before it creates again.
type Client interface {
	// Close ends the request; nil means PAM answered 200.
	Close(ctx context.Context, requestID string) error
	// Get reads one request of the calling account.
	Get(ctx context.Context, requestID string) (*Request, error)
	// List reads the calling account's requests matching an OData filter ("" for all), handing
	// each to each as it is read. An error may come after some were handed over.
	List(ctx context.Context, filter string, each func(Request)) error
	// Create requests an elevation into a PAM role. PAM answers 201 or 200 with the request.
	Create(ctx context.Context, opts CreateOptions) (*Request, error)
	// Roles lists the roles the calling account may request.
	Roles(ctx context.Context) ([]Role, error)
}

var guidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// NormalizeID returns a request id in the canonical lower-case form PAM's examples use, or an
// error when it is not a GUID of the 8-4-4-4-12 form.
func NormalizeID(id string) (string, error) {
	if !guidPattern.MatchString(id) {
		return "", fmt.Errorf("%q is not a GUID of the form 8-4-4-4-12", id)
	}
	return strings.ToLower(id), nil
}

// GUIDLiteral renders an id as an OData v3 GUID literal, guid'…', as used in keys and filters.
func GUIDLiteral(id string) (string, error) {
	norm, err := NormalizeID(id)
	if err != nil {
		return "", err
	}
	return "guid'" + norm + "'", nil
}

// FilterByID is the OData filter that selects one request.
func FilterByID(id string) (string, error) {
	lit, err := GUIDLiteral(id)
	if err != nil {
		return "", err
	}
	return "RequestId eq " + lit, nil
}

// FilterCreatedSince is the OData filter that selects the requests created at or after t.
func FilterCreatedSince(t time.Time) string {
	return "CreationTime ge " + datetimeLiteral(t)
}

// FilterCreatedBetween selects the requests created at or after from and before to, so that
// windows that share their bounds hold each request once.
func FilterCreatedBetween(from, to time.Time) string {
	return FilterCreatedSince(from) + " and CreationTime lt " + datetimeLiteral(to)
}

// FilterCreatedByRoleSince selects the requests for a role created at or after since: where a
// create whose outcome is unknown would be. since is on PAM's clock: allow for skew.
func FilterCreatedByRoleSince(roleID string, since time.Time) (string, error) {
	lit, err := GUIDLiteral(roleID)
	if err != nil {
		return "", err
	}
	return "RoleId eq " + lit + " and " + FilterCreatedSince(since), nil
}

// FilterJustification selects the requests whose justification is exactly j. Join it to
// another filter with " and ".
func FilterJustification(j string) string {
	return "Justification eq " + StringLiteral(j)
}

// StringLiteral renders s as an OData string literal: in single quotes, a quote doubled.
func StringLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

func datetimeLiteral(t time.Time) string {
	return "datetime'" + t.UTC().Format("2006-01-02T15:04:05.000Z") + "'"
}
