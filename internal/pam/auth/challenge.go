package auth

import (
	"encoding/base64"
	"fmt"
	"strings"
)

// DecodeToken decodes the base64 token of a challenge, after checking that it decodes to at
// most maxLen bytes: a token is refused for its length before anything is made of it, so a
// hostile server cannot make the client decode, allocate or parse more than a real token needs.
func DecodeToken(token string, maxLen int) ([]byte, error) {
	if len(token) > base64.StdEncoding.EncodedLen(maxLen) {
		return nil, fmt.Errorf("a token of %d characters is longer than any real one (at most %d bytes decoded)", len(token), maxLen)
	}
	return base64.StdEncoding.DecodeString(token)
}

// Challenge is one challenge of a WWW-Authenticate header: its scheme and the rest (a token,
// or parameters).
type Challenge struct {
	Scheme string
	Params string
}

// ParseChallenges parses WWW-Authenticate values (RFC 9110 11.6.1). Several challenges may
// share a value, separated by commas that also separate one challenge's parameters: a part
// whose first word holds "=" continues the challenge before it. Commas in quoted strings do
// not separate. A base64 token may end in "=", but never in its first word.
func ParseChallenges(values []string) []Challenge {
	var out []Challenge
	for _, v := range values {
		for _, part := range splitUnquoted(v) {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			word, rest, _ := strings.Cut(part, " ")
			if strings.Contains(word, "=") {
				if n := len(out); n > 0 {
					out[n-1].Params = strings.TrimSpace(out[n-1].Params + ", " + part)
				}
				continue
			}
			out = append(out, Challenge{Scheme: word, Params: strings.TrimSpace(rest)})
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
