package ntlmssp

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// maxMessageLen bounds an NTLM message. Real ones are a few hundred bytes; a hostile peer
// must not make either side allocate or hash without bound.
const maxMessageLen = 64 << 10

// Fixed header lengths: NEGOTIATE with its Version; CHALLENGE with TargetInfoFields and
// Version; AUTHENTICATE with Version and MIC.
const (
	negotiateLen    = 40
	challengeLen    = 56
	authenticateLen = 88
	micOffset       = 72
)

// avPair is one AV_PAIR of target info (MS-NLMP 2.2.2.1).
type avPair struct {
	id    uint16
	value []byte
}

// parseAVPairs reads AV pairs up to MsvAvEOL. Bytes after the EOL are ignored (the client
// blob has four zero bytes there).
func parseAVPairs(b []byte) ([]avPair, error) {
	var pairs []avPair
	for {
		if len(b) < 4 {
			return nil, errors.New("the AV pairs end without MsvAvEOL")
		}
		id := binary.LittleEndian.Uint16(b)
		n := int(binary.LittleEndian.Uint16(b[2:]))
		b = b[4:]
		if id == avEOL {
			return pairs, nil
		}
		if n > len(b) {
			return nil, fmt.Errorf("AV pair %#x claims %d bytes, %d remain", id, n, len(b))
		}
		pairs = append(pairs, avPair{id: id, value: b[:n:n]})
		b = b[n:]
	}
}

// encodeAVPairs writes pairs and the closing MsvAvEOL.
func encodeAVPairs(pairs []avPair) ([]byte, error) {
	var b []byte
	for _, p := range pairs {
		if len(p.value) > 0xffff {
			return nil, fmt.Errorf("AV pair %#x is %d bytes, more than an AV pair holds", p.id, len(p.value))
		}
		b = binary.LittleEndian.AppendUint16(b, p.id)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(p.value)))
		b = append(b, p.value...)
	}
	return append(b, 0, 0, 0, 0), nil
}

// findAV returns the value of the first pair with id.
func findAV(pairs []avPair, id uint16) ([]byte, bool) {
	for _, p := range pairs {
		if p.id == id {
			return p.value, true
		}
	}
	return nil, false
}

// checkHeader checks the signature and message type.
func checkHeader(b []byte, want uint32) error {
	if len(b) < 12 || string(b[:8]) != signature {
		return errors.New("not an NTLMSSP message")
	}
	if got := binary.LittleEndian.Uint32(b[8:]); got != want {
		return fmt.Errorf("NTLM message type %d, want %d", got, want)
	}
	if len(b) > maxMessageLen {
		return fmt.Errorf("NTLM message of %d bytes is larger than %d", len(b), maxMessageLen)
	}
	return nil
}

// field reads the (length, max length, offset) descriptor at off and returns the bytes it
// names, checked against the message. headerEnd is the end of the fixed header: a field may not
// point into it.
func field(b []byte, off, headerEnd int, name string) ([]byte, error) {
	n := int(binary.LittleEndian.Uint16(b[off:]))
	if n == 0 {
		// An empty field's offset is meaningless; Windows sends arbitrary ones.
		return nil, nil
	}
	start := int64(binary.LittleEndian.Uint32(b[off+4:]))
	end := start + int64(n)
	if start < int64(headerEnd) || end > int64(len(b)) {
		return nil, fmt.Errorf("the %s field (%d bytes at offset %d) lies outside the %d-byte message", name, n, start, len(b))
	}
	return b[start:end:end], nil
}

// putField writes a field descriptor at off and appends data to the payload, returning it.
func putField(msg []byte, off int, payload, data []byte) []byte {
	binary.LittleEndian.PutUint16(msg[off:], uint16(len(data)))
	binary.LittleEndian.PutUint16(msg[off+2:], uint16(len(data)))
	binary.LittleEndian.PutUint32(msg[off+4:], uint32(len(msg)+len(payload)))
	return append(payload, data...)
}

// encodeNegotiate builds a NEGOTIATE_MESSAGE without domain or workstation: a client
// outside the domain has neither to offer.
func encodeNegotiate(flags uint32) []byte {
	b := make([]byte, negotiateLen)
	copy(b, signature)
	binary.LittleEndian.PutUint32(b[8:], typeNegotiate)
	binary.LittleEndian.PutUint32(b[12:], flags)
	// Domain and workstation fields stay empty, offset at the end of the header.
	binary.LittleEndian.PutUint32(b[20:], negotiateLen)
	binary.LittleEndian.PutUint32(b[28:], negotiateLen)
	copy(b[32:], version[:])
	return b
}

// parseNegotiate returns the flags of a NEGOTIATE_MESSAGE.
func parseNegotiate(b []byte) (uint32, error) {
	if err := checkHeader(b, typeNegotiate); err != nil {
		return 0, err
	}
	if len(b) < 16 {
		return 0, errors.New("the NEGOTIATE message is truncated")
	}
	return binary.LittleEndian.Uint32(b[12:]), nil
}

// challengeMsg is a parsed CHALLENGE_MESSAGE.
type challengeMsg struct {
	flags           uint32
	serverChallenge []byte
	targetName      []byte
	targetInfo      []avPair
}

// parseChallenge parses a CHALLENGE_MESSAGE. It checks every length and offset: the message
// comes from the network.
func parseChallenge(b []byte) (*challengeMsg, error) {
	if err := checkHeader(b, typeChallenge); err != nil {
		return nil, err
	}
	if len(b) < 32 {
		return nil, fmt.Errorf("the CHALLENGE message is truncated (%d bytes)", len(b))
	}
	c := &challengeMsg{
		flags:           binary.LittleEndian.Uint32(b[20:]),
		serverChallenge: b[24:32:32],
	}
	// The header ends before the payload: at 32 without target info, 48 with it, 56 with
	// a version too.
	headerEnd := 32
	hasInfo := c.flags&flagTargetInfo != 0
	if hasInfo {
		if len(b) < 48 {
			return nil, fmt.Errorf("the CHALLENGE message announces target info but is %d bytes", len(b))
		}
		headerEnd = 48
		if c.flags&flagVersion != 0 && len(b) >= challengeLen {
			headerEnd = challengeLen
		}
	}
	var err error
	if c.targetName, err = field(b, 12, headerEnd, "TargetName"); err != nil {
		return nil, err
	}
	if hasInfo {
		raw, err := field(b, 40, headerEnd, "TargetInfo")
		if err != nil {
			return nil, err
		}
		if len(raw) > 0 {
			if c.targetInfo, err = parseAVPairs(raw); err != nil {
				return nil, fmt.Errorf("the target info: %w", err)
			}
		}
	}
	return c, nil
}

// encodeChallenge builds a CHALLENGE_MESSAGE with a version.
func encodeChallenge(flags uint32, serverChallenge, targetName, targetInfo []byte) []byte {
	b := make([]byte, challengeLen, challengeLen+len(targetName)+len(targetInfo))
	copy(b, signature)
	binary.LittleEndian.PutUint32(b[8:], typeChallenge)
	binary.LittleEndian.PutUint32(b[20:], flags)
	copy(b[24:32], serverChallenge)
	copy(b[48:], version[:])
	var payload []byte
	payload = putField(b, 12, payload, targetName)
	payload = putField(b, 40, payload, targetInfo)
	return append(b, payload...)
}

// authenticateMsg is an AUTHENTICATE_MESSAGE.
type authenticateMsg struct {
	lmResponse   []byte
	ntResponse   []byte
	domain       []byte
	user         []byte
	workstation  []byte
	encryptedKey []byte
	flags        uint32
	// mic is the MIC field, when the message is long enough to hold one and no payload
	// overlaps it; whether the client meant to send one is said by its MsvAvFlags.
	mic []byte
}

// encode builds the message with a zero MIC; the caller computes the MIC over the result
// and writes it at micOffset. Field lengths must fit 16 bits: the callers make sure.
func (m *authenticateMsg) encode() []byte {
	b := make([]byte, authenticateLen)
	copy(b, signature)
	binary.LittleEndian.PutUint32(b[8:], typeAuthenticate)
	binary.LittleEndian.PutUint32(b[60:], m.flags)
	copy(b[64:], version[:])
	var payload []byte
	payload = putField(b, 28, payload, m.domain)
	payload = putField(b, 36, payload, m.user)
	payload = putField(b, 44, payload, m.workstation)
	payload = putField(b, 12, payload, m.lmResponse)
	payload = putField(b, 20, payload, m.ntResponse)
	payload = putField(b, 52, payload, m.encryptedKey)
	return append(b, payload...)
}

// parseAuthenticate parses an AUTHENTICATE_MESSAGE, checking every length and offset.
func parseAuthenticate(b []byte) (*authenticateMsg, error) {
	if err := checkHeader(b, typeAuthenticate); err != nil {
		return nil, err
	}
	if len(b) < 64 {
		return nil, fmt.Errorf("the AUTHENTICATE message is truncated (%d bytes)", len(b))
	}
	m := &authenticateMsg{flags: binary.LittleEndian.Uint32(b[60:])}
	fields := []struct {
		off  int
		name string
		dst  *[]byte
	}{
		{12, "LmChallengeResponse", &m.lmResponse},
		{20, "NtChallengeResponse", &m.ntResponse},
		{28, "DomainName", &m.domain},
		{36, "UserName", &m.user},
		{44, "Workstation", &m.workstation},
		{52, "EncryptedRandomSessionKey", &m.encryptedKey},
	}
	// The payload may start at 64 (no version, no MIC), 72 or 88; the MIC exists only if
	// nothing starts before its end.
	lowest := int64(len(b))
	for _, f := range fields {
		var err error
		if *f.dst, err = field(b, f.off, 64, f.name); err != nil {
			return nil, err
		}
		if len(*f.dst) > 0 {
			lowest = min(lowest, int64(binary.LittleEndian.Uint32(b[f.off+4:])))
		}
	}
	if len(b) >= authenticateLen && lowest >= authenticateLen {
		m.mic = b[micOffset:authenticateLen:authenticateLen]
	}
	return m, nil
}
