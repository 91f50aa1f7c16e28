// Package ntlmssp is the NTLMv2 protocol (MS-NLMP) itself, both halves of it: the messages,
// their cryptography, the client's answer to a CHALLENGE and the server's check of that answer.
// The HTTP client transport (internal/pam/auth/ntlm) and the emulator's server side
// (emulator/ntlmserver) are built on it, so that neither carries the other's code.
//
// Only NTLMv2 is spoken. The AUTHENTICATE carries a MIC and, over https, a channel binding to
// the server's certificate (RFC 5929 tls-server-end-point), which IIS Extended Protection
// checks.
package ntlmssp

import (
	"unicode/utf16"

	"github.com/pam-operator/pam-operator/internal/pam/auth"
)

// method names NTLM in *auth.Error.
const method = "ntlm"

// The HTTP authentication schemes that carry NTLM.
const (
	SchemeNTLM      = "NTLM"
	SchemeNegotiate = "Negotiate"
)

// Negotiate flags (MS-NLMP 2.2.2.5).
const (
	flagUnicode                 uint32 = 0x00000001
	flagRequestTarget           uint32 = 0x00000004
	flagSign                    uint32 = 0x00000010
	flagNTLM                    uint32 = 0x00000200
	flagAlwaysSign              uint32 = 0x00008000
	flagTargetTypeDomain        uint32 = 0x00010000
	flagExtendedSessionSecurity uint32 = 0x00080000
	flagTargetInfo              uint32 = 0x00800000
	flagVersion                 uint32 = 0x02000000
	flag128                     uint32 = 0x20000000
	flagKeyExch                 uint32 = 0x40000000
	flag56                      uint32 = 0x80000000
)

// clientFlags are what the client asks for and accepts: NTLMv2 with extended session
// security, Unicode strings, target info and a version, and 128-bit key exchange (the
// exported session key keys the MIC).
const clientFlags = flagUnicode | flagRequestTarget | flagNTLM | flagAlwaysSign |
	flagExtendedSessionSecurity | flagTargetInfo | flagVersion | flag128 | flagKeyExch

// AV_PAIR identifiers (MS-NLMP 2.2.2.1).
const (
	avEOL             uint16 = 0x0000
	avNbComputerName  uint16 = 0x0001
	avNbDomainName    uint16 = 0x0002
	avDNSComputerName uint16 = 0x0003
	avDNSDomainName   uint16 = 0x0004
	avFlags           uint16 = 0x0006
	avTimestamp       uint16 = 0x0007
	avSingleHost      uint16 = 0x0008
	avTargetName      uint16 = 0x0009
	avChannelBindings uint16 = 0x000a
)

// avFlagMIC is the MsvAvFlags bit saying the AUTHENTICATE carries a MIC.
const avFlagMIC uint32 = 0x00000002

// Message types and the signature every NTLMSSP message starts with.
const (
	typeNegotiate    uint32 = 1
	typeChallenge    uint32 = 2
	typeAuthenticate uint32 = 3
	signature               = "NTLMSSP\x00"
)

// version is the VERSION structure sent in messages: Windows 10 / Server 2022 and NTLM
// revision 15, which is what current Windows sends.
var version = [8]byte{10, 0, 0x7c, 0x4f, 0, 0, 0, 0x0f}

// utf16le encodes s as UTF-16 little-endian, the form of every NTLM string with
// NTLMSSP_NEGOTIATE_UNICODE.
func utf16le(s string) []byte {
	units := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(units))
	for i, u := range units {
		b[2*i] = byte(u)
		b[2*i+1] = byte(u >> 8)
	}
	return b
}

// fromUTF16le decodes UTF-16 little-endian; an odd trailing byte is an error for the caller
// to catch, so it reports ok=false.
func fromUTF16le(b []byte) (string, bool) {
	if len(b)%2 != 0 {
		return "", false
	}
	units := make([]uint16, len(b)/2)
	for i := range units {
		units[i] = uint16(b[2*i]) | uint16(b[2*i+1])<<8
	}
	return string(utf16.Decode(units)), true
}

func authError(message string, err error) error {
	return &auth.Error{Method: method, Message: message, Err: err}
}
