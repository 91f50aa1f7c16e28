package auth

// Error is a failure to authenticate that retrying will not fix: a wrong or expired password, a
// malformed keytab, an unknown service principal, a server that offers no method we are
// configured for. The PAM client reports it as an authentication error, which the operator
// turns into Stalled with Message as the explanation. Message must say what a person should
// do, and must never contain a credential.
type Error struct {
	// Method is the configured method: "basic", "ntlm" or "kerberos".
	Method string
	// Message explains the failure.
	Message string
	// Err is the underlying cause, when there is one; it must not carry credentials either.
	Err error
	// Refused is true when the KDC or the server refused the credentials themselves (a wrong
	// password or key, an unknown, locked or expired account): trying them again counts
	// towards the account's lockout.
	Refused bool
}

func (e *Error) Error() string { return e.Method + " authentication: " + e.Message }

// Unwrap exposes the cause.
func (e *Error) Unwrap() error { return e.Err }
