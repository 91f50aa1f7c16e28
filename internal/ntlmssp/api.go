package ntlmssp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// NoBinding is the MsvAvChannelBindings value of a client that binds to no channel (plain
// http): 16 zero bytes, which a server accepts as "no binding".
var NoBinding = noBinding

// Negotiate returns the NEGOTIATE_MESSAGE a client opens a handshake with.
func Negotiate() []byte { return encodeNegotiate(clientFlags) }

// ClientInput is what a client needs to answer a CHALLENGE.
type ClientInput struct {
	Credentials Credentials
	// Negotiate is the NEGOTIATE as sent, and Challenge the CHALLENGE as received: the MIC
	// covers both.
	Negotiate, Challenge []byte
	// Binding is the MsvAvChannelBindings value; nil leaves the pair out, as clients without
	// Extended Protection do.
	Binding []byte
	// TargetName is the MsvAvTargetName, e.g. "HTTP/pam.example.com"; empty leaves it out.
	TargetName  string
	Workstation string
	Now         time.Time
	Rand        io.Reader
}

// Authenticate answers a CHALLENGE with an NTLMv2 AUTHENTICATE_MESSAGE carrying a MIC.
func Authenticate(in ClientInput) ([]byte, error) {
	return buildAuthenticate(clientInput{creds: in.Credentials, negotiate: in.Negotiate, challenge: in.Challenge,
		binding: in.Binding, targetName: in.TargetName, workstation: in.Workstation, now: in.Now, rand: in.Rand})
}

// The message types a server receives.
const (
	TypeNegotiate    = typeNegotiate
	TypeAuthenticate = typeAuthenticate
)

// MessageType returns the type of an NTLMSSP message, or an error when raw is not one.
func MessageType(raw []byte) (uint32, error) {
	if len(raw) < 12 || string(raw[:8]) != signature {
		return 0, errors.New("not an NTLMSSP message")
	}
	return binary.LittleEndian.Uint32(raw[8:]), nil
}

// Target is what a server announces of itself in its CHALLENGE.
type Target struct {
	// Domain and Computer are the NetBIOS names; DNSDomain and DNSComputer are announced when
	// set.
	Domain, Computer, DNSDomain, DNSComputer string
}

// Challenge answers a client's NEGOTIATE with a CHALLENGE_MESSAGE carrying serverChallenge
// (8 random bytes), the target and the server's time now.
func Challenge(negotiate []byte, target Target, serverChallenge []byte, now time.Time) ([]byte, error) {
	flags, err := parseNegotiate(negotiate)
	if err != nil {
		return nil, err
	}
	if flags&flagUnicode == 0 {
		return nil, errors.New("the client does not offer Unicode strings")
	}
	if len(serverChallenge) != 8 {
		return nil, fmt.Errorf("a server challenge is 8 bytes, not %d", len(serverChallenge))
	}
	pairs := []avPair{
		{id: avNbDomainName, value: utf16le(target.Domain)},
		{id: avNbComputerName, value: utf16le(target.Computer)},
	}
	if target.DNSDomain != "" {
		pairs = append(pairs, avPair{id: avDNSDomainName, value: utf16le(target.DNSDomain)})
	}
	if target.DNSComputer != "" {
		pairs = append(pairs, avPair{id: avDNSComputerName, value: utf16le(target.DNSComputer)})
	}
	pairs = append(pairs, avPair{id: avTimestamp, value: binary.LittleEndian.AppendUint64(nil, filetime(now))})
	info, err := encodeAVPairs(pairs)
	if err != nil {
		return nil, err
	}
	chFlags := flagUnicode | flagNTLM | flagTargetTypeDomain | flagTargetInfo | flagVersion |
		flagExtendedSessionSecurity | flags&(flagRequestTarget|flagSign|flagAlwaysSign|flag128|flag56|flagKeyExch)
	return encodeChallenge(chFlags, serverChallenge, utf16le(target.Domain), info), nil
}

// ServerInput is what a server needs to check an AUTHENTICATE.
type ServerInput struct {
	// Negotiate is the NEGOTIATE as received and Challenge the CHALLENGE as sent on this
	// connection; ServerChallenge the 8 bytes it carried.
	Negotiate, Challenge, ServerChallenge []byte
	// Lookup finds the account and password of a user as the client named it.
	Lookup  func(user, domain string) (account, password string, ok bool)
	Now     time.Time
	MaxSkew time.Duration
}

// Verified is the outcome of a valid AUTHENTICATE.
type Verified struct {
	Account string
	// Binding is the client's MsvAvChannelBindings, nil when it sent none.
	Binding []byte
}

// Verify checks an AUTHENTICATE against the CHALLENGE its connection got (MS-NLMP 3.2.5.1.2):
// the NTLMv2 proof, the timestamp and, when the client says it sent one, the MIC. Errors never
// carry the password or keys.
func Verify(in ServerInput, raw []byte) (*Verified, error) {
	v, err := verifyAuthenticate(serverInput{negotiate: in.Negotiate, challenge: in.Challenge,
		serverChallenge: in.ServerChallenge, lookup: in.Lookup, now: in.Now, maxSkew: in.MaxSkew}, raw)
	if err != nil {
		return nil, err
	}
	return &Verified{Account: v.account, Binding: v.binding}, nil
}

// IsZero reports whether b holds only zero bytes: a binding of "none".
func IsZero(b []byte) bool { return isZero(b) }
