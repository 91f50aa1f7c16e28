package ntlm

import (
	"net/http"
	"strings"
)

// The HTTP authentication schemes that carry NTLM.
const (
	SchemeNTLM      = "NTLM"
	SchemeNegotiate = "Negotiate"
)

// challenge is one challenge of WWW-Authenticate: its scheme and the rest (a token, or
// parameters).
type challenge struct {
	scheme string
	params string
}

// parseChallenges parses WWW-Authenticate values (RFC 9110 11.6.1). Several challenges may
// share a value, separated by commas that also separate one challenge's parameters: a part
// whose first word holds "=" continues the challenge before it. Commas in quoted strings do
// not separate. An NTLM token (base64) may end in "=", but never in its first word.
func parseChallenges(values []string) []challenge {
	var out []challenge
	for _, v := range values {
		for _, part := range splitUnquoted(v) {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			word, rest, _ := strings.Cut(part, " ")
			if strings.Contains(word, "=") {
				if n := len(out); n > 0 {
					out[n-1].params = strings.TrimSpace(out[n-1].params + ", " + part)
				}
				continue
			}
			out = append(out, challenge{scheme: word, params: strings.TrimSpace(rest)})
		}
	}
	return out
}

// splitUnquoted splits s at commas outside quoted strings.
func splitUnquoted(s string) []string {
	var parts []string
	start, quoted, escaped := 0, false, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case escaped:
			escaped = false
		case quoted && c == '\\':
			escaped = true
		case c == '"':
			quoted = !quoted
		case c == ',' && !quoted:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// offeredScheme picks the scheme to speak NTLM under from a 401: NTLM when offered, else
// Negotiate (IIS's Negotiate provider accepts raw NTLMSSP tokens), else "".
func offeredScheme(h http.Header) string {
	negotiate := false
	for _, c := range parseChallenges(h.Values("WWW-Authenticate")) {
		switch {
		case strings.EqualFold(c.scheme, SchemeNTLM):
			return SchemeNTLM
		case strings.EqualFold(c.scheme, SchemeNegotiate):
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
	for _, c := range parseChallenges(h.Values("WWW-Authenticate")) {
		if strings.EqualFold(c.scheme, scheme) && isToken68(c.params) {
			return c.params, true
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
