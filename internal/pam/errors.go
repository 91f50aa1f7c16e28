package pam

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/pam-operator/pam-operator/internal/dialpolicy"
)

// Class is what a caller should do about an error. Errors are classified once, here, so that
// reconcilers switch on the class and never on message text.
type Class int

const (
	// ClassOther is a definite answer that retrying will not change by itself.
	ClassOther Class = iota
	// ClassRetryable is a network failure, a timeout, 408, 429 or 5xx: try again later.
	ClassRetryable
	// ClassAuth is 401 or 403: the credentials or the account's rights need a person.
	ClassAuth
	// ClassNotFound means PAM does not know the request for this account.
	ClassNotFound
)

// String names the class for logs.
func (c Class) String() string {
	switch c {
	case ClassRetryable:
		return "Retryable"
	case ClassAuth:
		return "Auth"
	case ClassNotFound:
		return "NotFound"
	}
	return "Other"
}

// Error is every failure the HTTP client returns.
type Error struct {
	// Op is the operation: "close", "list", "create".
	Op string
	// Class says what to do about it.
	Class Class
	// StatusCode is the HTTP status, 0 when no answer arrived.
	StatusCode int
	// Code and Message are taken from an OData error body when there was one.
	Code    string
	Message string
	// RetryAfter is the server's Retry-After, 0 when absent.
	RetryAfter time.Duration
	// Err is the underlying transport error, or why a 2xx answer could not be read.
	Err error
	// OutcomeUnknown is set on a create that may have made the request (see
	// ErrCreateOutcomeUnknown).
	OutcomeUnknown bool
}

// ErrHostNotAllowed is under every call refused because the dial policy does not allow where
// it would go: the PAM host, the target behind a proxy, or a KDC. errors.Is finds it in an
// *Error of class Other; its message names the host, the address and the rule.
var ErrHostNotAllowed = dialpolicy.ErrNotAllowed

// ErrAnswerTooLarge is the error under an answer larger than the client reads: a list that
// holds too many requests, to be asked for in narrower windows.
var ErrAnswerTooLarge = errors.New("answer too large")

// ErrCreateOutcomeUnknown is under a create's error when PAM may have made the request: the
// call was sent and then timed out, lost its connection or its answer, was answered 408 or
// 5xx, or was answered 2xx with a body that cannot be read (malformed, empty, too large). The
// class still says whether to retry later; but before creating again the caller lists the
// account's requests to find the one this call may have made. A create refused before it was
// sent (a dial refused or failed, a busy server, a bad role id) or answered with any other
// status made nothing.
var ErrCreateOutcomeUnknown = errors.New("the request may have been made: find it by listing before creating again")

// maxErrorText bounds an error's text. It goes into conditions, Events and logs, and parts of
// it come from the other side: an OData message, a transport error quoting a malformed status
// line, the schemes a 401 offers, a KDC's error text.
const maxErrorText = 1 << 10

// Error describes the failure without volatile detail, so it can go into a condition as is. It
// is at most 1 KiB of printable text, whatever the server sent.
func (e *Error) Error() string {
	msg := "PAM " + e.Op + ": "
	switch {
	case e.StatusCode != 0:
		msg += fmt.Sprintf("HTTP %d %s", e.StatusCode, http.StatusText(e.StatusCode))
		if e.Code != "" {
			msg += " (" + e.Code + ")"
		}
		if e.Message != "" {
			msg += ": " + e.Message
		}
	case e.Class == ClassAuth && e.Message != "":
		msg += e.Message
	case e.Err != nil:
		msg += transportSummary(e.Err)
	default:
		msg += e.Message
	}
	if e.OutcomeUnknown {
		// Kept whole however long the rest is: it is what the reader must act on.
		const unknown = " (the request may have been made)"
		return printable(msg, maxErrorText-len(unknown)) + unknown
	}
	return printable(msg, maxErrorText)
}

// Unwrap exposes the transport error.
func (e *Error) Unwrap() error { return e.Err }

// Is reports ErrCreateOutcomeUnknown for a create whose outcome is unknown, whatever Err is.
func (e *Error) Is(target error) bool {
	return target == ErrCreateOutcomeUnknown && e.OutcomeUnknown
}

// ClassOf returns the class of err; errors not from this package are Other, except context
// deadlines, which are Retryable.
func ClassOf(err error) Class {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Class
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return ClassRetryable
	}
	return ClassOther
}

// RetryAfterOf returns the Retry-After the server asked for, 0 when none.
func RetryAfterOf(err error) time.Duration {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.RetryAfter
	}
	return 0
}

// StatusCodeOf returns the HTTP status of err, 0 when no answer arrived.
func StatusCodeOf(err error) int {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.StatusCode
	}
	return 0
}

func classForStatus(code int) Class {
	switch {
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return ClassAuth
	case code == http.StatusNotFound:
		return ClassNotFound
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		return ClassRetryable
	}
	return ClassOther
}

// parseRetryAfter reads delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil {
		if secs < 0 {
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// transportSummary names a transport failure without addresses or ports that change per call.
func transportSummary(err error) string {
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "timed out waiting for an answer"
	case errors.Is(err, context.Canceled):
		return "call cancelled"
	}
	var refused *dialpolicy.RefusedError
	if errors.As(err, &refused) {
		return refused.Error()
	}
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) {
		return "TLS certificate not trusted: " + certErr.Err.Error() + " (set caBundle to the CA that issued it)"
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return "cannot connect: " + innermost(opErr).Error()
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return "cannot resolve host " + dnsErr.Name
	}
	return "connection failed: " + innermost(err).Error()
}

func innermost(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}
