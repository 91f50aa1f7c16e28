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

// Client talks to one MIM PAM REST API as one account.
//
// Contract: Close may be sent again after an unknown outcome (a timeout, a dropped connection)
// and its answer for a request that is already closed is not documented, so callers confirm
// every outcome with Get before concluding anything. Get returns an error of class NotFound
// when PAM does not list the request for this account; that proves nothing about the request
// itself (it may belong to another account).
type Client interface {
	// Close ends the request; nil means PAM answered 200.
	Close(ctx context.Context, requestID string) error
	// Get reads one request of the calling account.
	Get(ctx context.Context, requestID string) (*Request, error)
	// List reads the calling account's requests matching an OData filter ("" for all), handing
	// each to each as it is read. An error may come after some were handed over.
	List(ctx context.Context, filter string, each func(Request)) error
	// Create requests an elevation into a PAM role.
	Create(ctx context.Context, opts CreateOptions) (*Request, error)
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

func datetimeLiteral(t time.Time) string {
	return "datetime'" + t.UTC().Format("2006-01-02T15:04:05.000Z") + "'"
}
