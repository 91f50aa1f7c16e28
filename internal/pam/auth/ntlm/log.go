package ntlm

import (
	"fmt"
	"net/http"

	"github.com/go-logr/logr"

	"github.com/pam-operator/pam-operator/internal/ntlmssp"
)

// logHandshake writes what a handshake negotiated at V(1), with the logger of the request's
// context: the flags and AV pair ids of the server's CHALLENGE and of the AUTHENTICATE, what
// the channel binding held, and the server's answer. A refusal by a real server can then be
// compared with what a Windows client sends (docs/authentication.md). Never a token, name,
// hash or key: ntlmssp.Summary holds none.
func logHandshake(req *http.Request, scheme string, challenge, authenticate []byte, status int) {
	log := logr.FromContextOrDiscard(req.Context()).V(1)
	if !log.Enabled() {
		return
	}
	ch, chErr := ntlmssp.Summarize(challenge)
	au, auErr := ntlmssp.Summarize(authenticate)
	if chErr != nil || auErr != nil {
		return // Both were parsed to build the AUTHENTICATE: this does not happen.
	}
	log.Info("NTLM handshake", "host", req.URL.Host, "scheme", scheme, "status", status,
		"challengeFlags", fmt.Sprintf("%#08x", ch.Flags), "challengeAVPairs", ch.AVPairs,
		"authenticateFlags", fmt.Sprintf("%#08x", au.Flags), "authenticateAVPairs", au.AVPairs,
		"avFlags", fmt.Sprintf("%#x", au.AVFlags), "channelBinding", au.Binding)
}
