// Package auth holds the transports that authenticate the PAM client: HTTP basic now, the
// Windows methods (NTLM, Kerberos/SPNEGO) beside it.
package auth

import "net/http"

// Basic returns a transport wrapper that sends HTTP basic credentials on every call.
func Basic(username, password string) func(http.RoundTripper) http.RoundTripper {
	return func(next http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
			// A RoundTripper must not modify the caller's request.
			req = req.Clone(req.Context())
			req.SetBasicAuth(username, password)
			return next.RoundTrip(req)
		})
	}
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }
