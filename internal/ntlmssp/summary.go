package ntlmssp

import (
	"encoding/binary"
	"fmt"
)

// Summary is what a CHALLENGE or an AUTHENTICATE says about the handshake, for a debug log:
// flags and the ids of AV pairs only, never a name, challenge, response, hash or key. Compared
// with what Windows clients send, it tells why a server refuses a handshake (a flag it wants,
// a MIC it checks, a channel binding Extended Protection requires).
type Summary struct {
	// Flags are the message's NegotiateFlags (MS-NLMP 2.2.2.5).
	Flags uint32
	// AVPairs are the ids of the AV pairs (MS-NLMP 2.2.2.1), in order: a CHALLENGE's target
	// info, or those in an AUTHENTICATE's NTLMv2 response.
	AVPairs []uint16
	// AVFlags is an AUTHENTICATE's MsvAvFlags; 0x2 says it carries a MIC.
	AVFlags uint32
	// Binding says what an AUTHENTICATE's MsvAvChannelBindings holds: "absent", "none" (the
	// zeros of a client bound to no channel) or "tls-server-end-point" (a certificate's hash).
	Binding string
}

// Summarize summarises a CHALLENGE or an AUTHENTICATE.
func Summarize(raw []byte) (Summary, error) {
	typ, err := MessageType(raw)
	if err != nil {
		return Summary{}, err
	}
	var s Summary
	var pairs []avPair
	switch typ {
	case typeChallenge:
		ch, err := parseChallenge(raw)
		if err != nil {
			return Summary{}, err
		}
		s.Flags, pairs = ch.flags, ch.targetInfo
	case typeAuthenticate:
		m, err := parseAuthenticate(raw)
		if err != nil {
			return Summary{}, err
		}
		s.Flags = m.flags
		if len(m.ntResponse) >= 16+blobHeaderLen {
			if pairs, err = parseAVPairs(m.ntResponse[16+blobHeaderLen:]); err != nil {
				return Summary{}, fmt.Errorf("the NTLMv2 response's AV pairs: %w", err)
			}
		}
		s.Binding = "absent"
		if b, ok := findAV(pairs, avChannelBindings); ok {
			s.Binding = "tls-server-end-point"
			if isZero(b) {
				s.Binding = "none"
			}
		}
		if f, ok := findAV(pairs, avFlags); ok && len(f) == 4 {
			s.AVFlags = binary.LittleEndian.Uint32(f)
		}
	default:
		return Summary{}, fmt.Errorf("NTLM message type %d is not a CHALLENGE or AUTHENTICATE", typ)
	}
	for _, p := range pairs {
		s.AVPairs = append(s.AVPairs, p.id)
	}
	return s, nil
}
