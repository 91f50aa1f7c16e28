package ntlm

import (
	"net/http"
	"strings"

	"github.com/pam-operator/pam-operator/internal/ntlmssp"
	"github.com/pam-operator/pam-operator/internal/pam/auth"
)

// The HTTP authentication schemes that carry NTLM.
const (
	SchemeNTLM      = ntlmssp.SchemeNTLM
	SchemeNegotiate = ntlmssp.SchemeNegotiate
)

// offeredScheme picks the scheme to speak NTLM under from a 401: NTLM when offered, else
// Negotiate (IIS's Negotiate provider accepts raw NTLMSSP tokens), else "".
func offeredScheme(h http.Header) string {
	negotiate := false
	for _, c := range auth.ParseChallenges(h.Values("WWW-Authenticate")) {
		switch {
		case strings.EqualFold(c.Scheme, SchemeNTLM):
			return SchemeNTLM
		case strings.EqualFold(c.Scheme, SchemeNegotiate):
			negotiate = true
		}
	}
	if negotiate {
		return SchemeNegotiate
	}
	return ""
}

// challengeToken returns the token of the first "<scheme> <token>" challenge.
func challengeToken(h http.Header, scheme string) (string, bool) {
	for _, c := range auth.ParseChallenges(h.Values("WWW-Authenticate")) {
		if strings.EqualFold(c.Scheme, scheme) && isToken68(c.Params) {
			return c.Params, true
		}
	}
	return "", false
}

// isToken68 tells whether s is a token68 (RFC 9110 11.2): base64 characters and trailing
// "=" padding, which is what NTLM tokens are.
func isToken68(s string) bool {
	if s == "" {
		return false
	}
	s = strings.TrimRight(s, "=")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~+/", c) >= 0) {
			return false
		}
	}
	return true
}
