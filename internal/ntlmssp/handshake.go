package ntlmssp

import (
	"crypto/hmac"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// clientInput is what the client needs to answer a CHALLENGE.
type clientInput struct {
	creds     Credentials
	negotiate []byte // the NEGOTIATE as sent, for the MIC
	challenge []byte // the CHALLENGE as received
	// binding is the MsvAvChannelBindings value; nil leaves the pair out, as clients
	// without Extended Protection do.
	binding []byte
	// targetName is the MsvAvTargetName, e.g. "HTTP/pam.example.com"; empty leaves it out.
	targetName  string
	workstation string
	now         time.Time
	rand        io.Reader
}

// buildAuthenticate answers a CHALLENGE with an NTLMv2 AUTHENTICATE_MESSAGE carrying a MIC
// (MS-NLMP 3.1.5.1.2 and 3.3.2).
func buildAuthenticate(in clientInput) ([]byte, error) {
	ch, err := parseChallenge(in.challenge)
	if err != nil {
		return nil, err
	}
	if ch.flags&flagUnicode == 0 {
		return nil, errors.New("the server does not accept Unicode strings (OEM only)")
	}
	flags := ch.flags&clientFlags | flagUnicode | flagNTLM

	// The server's timestamp, when given, is the blob's time: the client's clock does not
	// matter then, and the LM response is left out (MS-NLMP 3.1.5.1.2).
	ts, hasTS := findAV(ch.targetInfo, avTimestamp)
	var timestamp uint64
	if hasTS && len(ts) == 8 {
		timestamp = binary.LittleEndian.Uint64(ts)
	} else {
		hasTS = false
		timestamp = filetime(in.now)
	}

	avs, err := clientAVPairs(ch.targetInfo, in.binding, in.targetName)
	if err != nil {
		return nil, err
	}
	clientChallenge := make([]byte, 8)
	if _, err := io.ReadFull(in.rand, clientChallenge); err != nil {
		return nil, fmt.Errorf("reading random bytes: %w", err)
	}
	key := ntowfv2(in.creds.Password, in.creds.Username, in.creds.Domain)
	blob := clientBlob(timestamp, clientChallenge, avs)
	proof := ntProofStr(key, ch.serverChallenge, blob)

	m := &authenticateMsg{
		ntResponse:  append(proof, blob...),
		domain:      utf16le(in.creds.Domain),
		user:        utf16le(in.creds.Username),
		workstation: utf16le(in.workstation),
		flags:       flags,
	}
	if hasTS {
		m.lmResponse = make([]byte, 24)
	} else {
		m.lmResponse = lmv2Response(key, ch.serverChallenge, clientChallenge)
	}
	for _, f := range [][]byte{m.ntResponse, m.domain, m.user, m.workstation} {
		if len(f) > 0xffff {
			return nil, errors.New("the target info, user, domain or workstation is too long for an NTLM message")
		}
	}

	// For NTLMv2 the key exchange key is the session base key. With KEY_EXCH the client
	// picks the exported session key and sends it encrypted with that key.
	exported := sessionBaseKey(key, proof)
	if flags&flagKeyExch != 0 {
		random := make([]byte, 16)
		if _, err := io.ReadFull(in.rand, random); err != nil {
			return nil, fmt.Errorf("reading random bytes: %w", err)
		}
		if m.encryptedKey, err = rc4Apply(exported, random); err != nil {
			return nil, err
		}
		exported = random
	}
	msg := m.encode()
	copy(msg[micOffset:authenticateLen], mic(exported, in.negotiate, in.challenge, msg))
	return msg, nil
}

// clientAVPairs copies the server's target info and adds what the client vouches for:
// MsvAvFlags with the MIC bit, the channel binding and the target name. Pairs the client
// sets itself are not copied, so none appears twice.
func clientAVPairs(server []avPair, binding []byte, targetName string) ([]byte, error) {
	flags := avFlagMIC
	var pairs []avPair
	for _, p := range server {
		switch p.id {
		case avFlags:
			if len(p.value) == 4 {
				flags |= binary.LittleEndian.Uint32(p.value)
			}
		case avChannelBindings, avTargetName, avSingleHost:
		default:
			pairs = append(pairs, p)
		}
	}
	pairs = append(pairs, avPair{id: avFlags, value: binary.LittleEndian.AppendUint32(nil, flags)})
	if binding != nil {
		pairs = append(pairs, avPair{id: avChannelBindings, value: binding})
	}
	if targetName != "" {
		pairs = append(pairs, avPair{id: avTargetName, value: utf16le(targetName)})
	}
	return encodeAVPairs(pairs)
}

// serverInput is what the server needs to check an AUTHENTICATE.
type serverInput struct {
	negotiate       []byte // the NEGOTIATE as received
	challenge       []byte // the CHALLENGE as sent
	serverChallenge []byte
	// lookup finds the password of a user as the client named it.
	lookup  func(user, domain string) (account, password string, ok bool)
	now     time.Time
	maxSkew time.Duration
}

// verifiedClient is the outcome of a valid AUTHENTICATE.
type verifiedClient struct {
	account string
	// binding is the client's MsvAvChannelBindings, nil when it sent none.
	binding []byte
}

// verifyAuthenticate checks an AUTHENTICATE against the CHALLENGE this connection got
// (MS-NLMP 3.2.5.1.2): the NTLMv2 proof, the timestamp and, when the client says it sent
// one, the MIC. Errors never carry the password or keys.
func verifyAuthenticate(in serverInput, raw []byte) (*verifiedClient, error) {
	m, err := parseAuthenticate(raw)
	if err != nil {
		return nil, err
	}
	if len(m.ntResponse) < 16+blobHeaderLen+4 {
		if len(m.ntResponse) == 0 && len(m.user) == 0 {
			return nil, errors.New("anonymous authentication is refused")
		}
		return nil, errors.New("the response is not NTLMv2 (NTLMv1 and LM are refused)")
	}
	user, domain, ok := m.names()
	if !ok {
		return nil, errors.New("the user or domain name is not valid UTF-16")
	}
	who := user
	if domain != "" {
		who = domain + `\` + user
	}
	account, password, ok := in.lookup(user, domain)
	if !ok {
		return nil, fmt.Errorf("unknown user %s", who)
	}

	proof, blob := m.ntResponse[:16], m.ntResponse[16:]
	if blob[0] != 1 || blob[1] != 1 {
		return nil, fmt.Errorf("the NTLMv2 response of %s has version %d.%d, want 1.1", who, blob[0], blob[1])
	}
	key := ntowfv2(password, user, domain)
	if !hmac.Equal(proof, ntProofStr(key, in.serverChallenge, blob)) {
		return nil, fmt.Errorf("the NTLMv2 response of %s does not verify: wrong password (or user or domain)", who)
	}
	// The proof covers the blob, so from here on its content is the client's own.
	sent := fromFiletime(binary.LittleEndian.Uint64(blob[8:16]))
	if d := in.now.Sub(sent); d > in.maxSkew || d < -in.maxSkew {
		return nil, fmt.Errorf("the NTLMv2 response of %s is timestamped %s, more than %s from the server's clock", who, sent.UTC().Format(time.RFC3339), in.maxSkew)
	}
	avs, err := parseAVPairs(blob[blobHeaderLen:])
	if err != nil {
		return nil, fmt.Errorf("the NTLMv2 response of %s: %w", who, err)
	}

	exported := sessionBaseKey(key, proof)
	if m.flags&flagKeyExch != 0 && len(m.encryptedKey) > 0 {
		if len(m.encryptedKey) != 16 {
			return nil, fmt.Errorf("the encrypted session key of %s is %d bytes, want 16", who, len(m.encryptedKey))
		}
		if exported, err = rc4Apply(exported, m.encryptedKey); err != nil {
			return nil, err
		}
	}
	if f, ok := findAV(avs, avFlags); ok && len(f) == 4 && binary.LittleEndian.Uint32(f)&avFlagMIC != 0 {
		if m.mic == nil {
			return nil, fmt.Errorf("the AUTHENTICATE of %s announces a MIC but has no room for one", who)
		}
		zeroed := append([]byte(nil), raw...)
		clear(zeroed[micOffset:authenticateLen])
		if !hmac.Equal(m.mic, mic(exported, in.negotiate, in.challenge, zeroed)) {
			return nil, fmt.Errorf("the MIC of %s does not verify: the messages were altered", who)
		}
	}
	v := &verifiedClient{account: account}
	if b, ok := findAV(avs, avChannelBindings); ok {
		if len(b) != 16 {
			return nil, fmt.Errorf("the channel binding of %s is %d bytes, want 16", who, len(b))
		}
		v.binding = b
	}
	return v, nil
}

// names decodes the user and domain names.
func (m *authenticateMsg) names() (user, domain string, ok bool) {
	if m.flags&flagUnicode == 0 {
		// OEM strings: only ASCII is unambiguous without the server's code page.
		return string(m.user), string(m.domain), true
	}
	user, okUser := fromUTF16le(m.user)
	domain, okDomain := fromUTF16le(m.domain)
	return user, domain, okUser && okDomain
}
