// Package gsskrb5 builds and reads the GSS-API Kerberos tokens (RFC 4121) inside SPNEGO
// (RFC 4178), both halves of the exchange: the client's initial token with its AP-REQ and the
// check of the server's AP-REP, and the server's reading of that token and its AP-REP answer.
// The operator's Negotiate transport (internal/pam/auth/kerberos) and the emulator's verifier
// (emulator/kerberosserver) are built on it.
package gsskrb5

import (
	//nolint:gosec // RFC 4121 fixes MD5 for the channel-binding hash.
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jcmturner/gofork/encoding/asn1"
	"github.com/jcmturner/gokrb5/v8/asn1tools"
	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/gssapi"
	"github.com/jcmturner/gokrb5/v8/iana/asnAppTag"
	"github.com/jcmturner/gokrb5/v8/iana/flags"
	"github.com/jcmturner/gokrb5/v8/iana/keyusage"
	"github.com/jcmturner/gokrb5/v8/iana/msgtype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/jcmturner/gokrb5/v8/types"
)

// The tokens are built with gokrb5's message types and crypto. gokrb5's own token builder
// (spnego.NewKRB5TokenAPREQ) writes an authenticator checksum whose channel-binding field
// is always zero and cannot be given one, and gokrb5 can neither write nor check an AP-REP.

// RequestedFlags are the GSS-API context flags requested in the authenticator checksum (RFC
// 4121 4.1.1.1): mutual authentication, integrity and confidentiality, 0x32.
const RequestedFlags = gssapi.ContextFlagMutual | gssapi.ContextFlagInteg | gssapi.ContextFlagConf

// gssChecksumType is the checksum type of the RFC 4121 authenticator checksum (0x8003).
const gssChecksumType = 0x8003

// Token IDs of RFC 4121 4.1: AP-REQ and AP-REP inside an initial context token.
var (
	tokenAPReq = []byte{0x01, 0x00}
	tokenAPRep = []byte{0x02, 0x00}
)

// gssChecksum builds the authenticator checksum of RFC 4121 4.1.1: length of Bnd (16),
// Bnd, and the context flags. A nil binding is sent as zeros ("no channel binding").
func gssChecksum(binding []byte, flags uint32) []byte {
	b := make([]byte, 24)
	binary.LittleEndian.PutUint32(b[0:4], 16)
	copy(b[4:20], binding)
	binary.LittleEndian.PutUint32(b[20:24], flags)
	return b
}

// ChecksumBinding returns the Bnd field and flags of an authenticator checksum.
func ChecksumBinding(ck types.Checksum) (bnd []byte, flags uint32, err error) {
	if ck.CksumType != gssChecksumType || len(ck.Checksum) < 24 {
		return nil, 0, errors.New("the authenticator has no GSS-API checksum")
	}
	if binary.LittleEndian.Uint32(ck.Checksum[0:4]) != 16 {
		return nil, 0, errors.New("the authenticator's channel-binding field is not 16 bytes")
	}
	return ck.Checksum[4:20], binary.LittleEndian.Uint32(ck.Checksum[20:24]), nil
}

// IsZero tells whether b holds only zero bytes.
func IsZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// wrapKRB5 wraps a Kerberos message into an RFC 4121 initial context token: the Kerberos
// mechanism's OID, a token ID and the message, under [APPLICATION 0].
func wrapKRB5(tokenID, msg []byte) ([]byte, error) {
	oid, err := asn1.Marshal(gssapi.OIDKRB5.OID())
	if err != nil {
		return nil, err
	}
	b := append(oid, tokenID...)
	b = append(b, msg...)
	return asn1tools.AddASNAppTag(b, 0), nil
}

// InitToken builds the SPNEGO NegTokenInit carrying an AP-REQ for tkt, with an
// authenticator made at authTime whose checksum carries binding. It returns the token.
func InitToken(tkt messages.Ticket, key types.EncryptionKey, cname types.PrincipalName, crealm string, authTime time.Time, binding []byte) ([]byte, error) {
	auth := types.Authenticator{
		AVNO:   5,
		CRealm: crealm,
		CName:  cname,
		Cksum: types.Checksum{
			CksumType: gssChecksumType,
			Checksum:  gssChecksum(binding, RequestedFlags),
		},
		CTime: authTime.Truncate(time.Second),
		Cusec: authTime.Nanosecond() / 1000,
	}
	seq, err := randomSeq()
	if err != nil {
		return nil, err
	}
	auth.SeqNumber = seq
	apReq, err := messages.NewAPReq(tkt, key, auth)
	if err != nil {
		return nil, err
	}
	types.SetFlag(&apReq.APOptions, flags.APOptionMutualRequired)
	msg, err := apReq.Marshal()
	if err != nil {
		return nil, err
	}
	mech, err := wrapKRB5(tokenAPReq, msg)
	if err != nil {
		return nil, err
	}
	tok := spnego.SPNEGOToken{
		Init: true,
		NegTokenInit: spnego.NegTokenInit{
			MechTypes:      []asn1.ObjectIdentifier{gssapi.OIDKRB5.OID()},
			MechTokenBytes: mech,
		},
	}
	return tok.Marshal()
}

// randomSeq returns a random initial sequence number for an authenticator.
func randomSeq() (int64, error) {
	var b [4]byte
	if _, err := crand.Read(b[:]); err != nil {
		return 0, err
	}
	return int64(binary.BigEndian.Uint32(b[:]) & 0x3fffffff), nil
}

// APRepToken builds the SPNEGO NegTokenResp a server returns on success: accept-completed,
// with an AP-REP proving it decrypted the ticket (it echoes the authenticator's time,
// encrypted in the session key).
func APRepToken(key types.EncryptionKey, auth types.Authenticator) ([]byte, error) {
	part := messages.EncAPRepPart{CTime: auth.CTime, Cusec: auth.Cusec, SequenceNumber: auth.SeqNumber}
	b, err := asn1.Marshal(part)
	if err != nil {
		return nil, err
	}
	b = asn1tools.AddASNAppTag(b, asnAppTag.EncAPRepPart)
	enc, err := crypto.GetEncryptedData(b, key, keyusage.AP_REP_ENCPART, 0)
	if err != nil {
		return nil, err
	}
	rep := messages.APRep{PVNO: 5, MsgType: msgtype.KRB_AP_REP, EncPart: enc}
	rb, err := asn1.Marshal(rep)
	if err != nil {
		return nil, err
	}
	mech, err := wrapKRB5(tokenAPRep, asn1tools.AddASNAppTag(rb, asnAppTag.APREP))
	if err != nil {
		return nil, err
	}
	resp := spnego.NegTokenResp{
		NegState:      asn1.Enumerated(spnego.NegStateAcceptCompleted),
		SupportedMech: gssapi.OIDKRB5.OID(),
		ResponseToken: mech,
	}
	return resp.Marshal()
}

// AcceptCompletedToken is the NegTokenResp of a server that authenticated the client
// without being asked to prove itself.
func AcceptCompletedToken() ([]byte, error) {
	resp := spnego.NegTokenResp{
		NegState:      asn1.Enumerated(spnego.NegStateAcceptCompleted),
		SupportedMech: gssapi.OIDKRB5.OID(),
	}
	return resp.Marshal()
}

// VerifyAPRep checks a server's NegTokenResp: when it carries an AP-REP, the AP-REP must
// decrypt with the session key and echo the authenticator's time. It returns whether an
// AP-REP was there.
func VerifyAPRep(token []byte, key types.EncryptionKey, authTime time.Time) (bool, error) {
	var st spnego.SPNEGOToken
	if err := st.Unmarshal(token); err != nil {
		return false, fmt.Errorf("the server's Negotiate answer does not parse: %w", err)
	}
	if !st.Resp || len(st.NegTokenResp.ResponseToken) == 0 {
		return false, nil
	}
	if st.NegTokenResp.State() == spnego.NegStateReject {
		return false, errors.New("the server's Negotiate answer rejects the authentication")
	}
	var mt spnego.KRB5Token
	if err := mt.Unmarshal(st.NegTokenResp.ResponseToken); err != nil {
		return false, fmt.Errorf("the server's Kerberos answer does not parse: %w", err)
	}
	if !mt.IsAPRep() {
		return false, errors.New("the server's Kerberos answer is not an AP-REP")
	}
	plain, err := crypto.DecryptEncPart(mt.APRep.EncPart, key, keyusage.AP_REP_ENCPART)
	if err != nil {
		return true, errors.New("the server's AP-REP is not encrypted in the session key")
	}
	var part messages.EncAPRepPart
	if err := part.Unmarshal(plain); err != nil {
		return true, fmt.Errorf("the server's AP-REP does not parse: %w", err)
	}
	if !part.CTime.Equal(authTime.Truncate(time.Second)) || part.Cusec != authTime.Nanosecond()/1000 {
		return true, errors.New("the server's AP-REP answers another authenticator")
	}
	return true, nil
}

// MechToken returns the Kerberos token inside a SPNEGO NegTokenInit, or the token itself
// when the client sent a raw Kerberos token.
func MechToken(raw []byte) ([]byte, error) {
	var st spnego.SPNEGOToken
	if err := st.Unmarshal(raw); err != nil {
		var k5 spnego.KRB5Token
		if k5.Unmarshal(raw) == nil {
			return raw, nil
		}
		return nil, fmt.Errorf("the token is neither SPNEGO nor Kerberos: %w", err)
	}
	if !st.Init || len(st.NegTokenInit.MechTypes) == 0 {
		return nil, errors.New("the SPNEGO token is not an initial token")
	}
	first := st.NegTokenInit.MechTypes[0]
	if !first.Equal(gssapi.OIDKRB5.OID()) && !first.Equal(gssapi.OIDMSLegacyKRB5.OID()) {
		return nil, errors.New("the SPNEGO token does not offer Kerberos first (NTLM is not accepted)")
	}
	if len(st.NegTokenInit.MechTokenBytes) == 0 {
		return nil, errors.New("the SPNEGO token carries no Kerberos token")
	}
	return st.NegTokenInit.MechTokenBytes, nil
}

// CheckSPN checks the form service/host of a service principal name.
func CheckSPN(spn string) error {
	if strings.Contains(spn, "@") {
		return fmt.Errorf("servicePrincipalName %q contains a realm; write it as service/host, e.g. HTTP/pam.contoso.com", spn)
	}
	parts := strings.Split(spn, "/")
	if len(parts) < 2 || parts[0] == "" || parts[1] == "" || strings.ContainsAny(spn, " \t") {
		return fmt.Errorf("servicePrincipalName %q is not of the form service/host, e.g. HTTP/pam.contoso.com", spn)
	}
	return nil
}
