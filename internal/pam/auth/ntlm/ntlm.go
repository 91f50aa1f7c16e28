// Package ntlm is the client side of NTLMv2 over HTTP, as IIS's Windows authentication speaks
// it: a transport for the PAM client. The messages and their cryptography are internal/ntlmssp's.
//
// NTLM authenticates a TCP connection, not a request: NEGOTIATE, CHALLENGE and AUTHENTICATE
// travel on one kept-alive connection, after which IIS treats later requests on that
// connection as the authenticated account. The transport pins each handshake to a transport
// that can hold one connection.
//
// Only NTLMv2 is spoken. The AUTHENTICATE carries a MIC and, over https, a channel binding to
// the server's certificate (RFC 5929 tls-server-end-point), which IIS Extended Protection
// checks.
package ntlm

import (
	"github.com/pam-operator/pam-operator/internal/pam/auth"
)

// method names NTLM in *auth.Error.
const method = "ntlm"

func authError(message string, err error) error {
	return &auth.Error{Method: method, Message: message, Err: err}
}
