package kerberos

import (
	//nolint:gosec // RFC 4121 fixes MD5 for the channel-binding hash.
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
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

// This file builds and reads the GSS-API Kerberos tokens (RFC 4121) inside SPNEGO
// (RFC 4178) ourselves, with gokrb5's message types and crypto. gokrb5's own token builder
// (spnego.NewKRB5TokenAPREQ) writes an authenticator checksum whose channel-binding field
// is always zero and cannot be given one, and gokrb5 can neither write nor check an AP-REP.

// GSS-API context flags requested in the authenticator checksum (RFC 4121 4.1.1.1).
const requestedFlags = gssapi.ContextFlagMutual | gssapi.ContextFlagInteg | gssapi.ContextFlagConf

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

// checksumBinding returns the Bnd field and flags of an authenticator checksum.
func checksumBinding(ck types.Checksum) (bnd []byte, flags uint32, err error) {
	if ck.CksumType != gssChecksumType || len(ck.Checksum) < 24 {
		return nil, 0, errors.New("the authenticator has no GSS-API checksum")
	}
	if binary.LittleEndian.Uint32(ck.Checksum[0:4]) != 16 {
		return nil, 0, errors.New("the authenticator's channel-binding field is not 16 bytes")
	}
	return ck.Checksum[4:20], binary.LittleEndian.Uint32(ck.Checksum[20:24]), nil
}

// isZero tells whether b holds only zero bytes.
func isZero(b []byte) bool {
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

// initToken builds the SPNEGO NegTokenInit carrying an AP-REQ for tkt, with an
// authenticator made at authTime whose checksum carries binding. It returns the token.
func initToken(tkt messages.Ticket, key types.EncryptionKey, cname types.PrincipalName, crealm string, authTime time.Time, binding []byte) ([]byte, error) {
	auth := types.Authenticator{
		AVNO:   5,
		CRealm: crealm,
		CName:  cname,
		Cksum: types.Checksum{
			CksumType: gssChecksumType,
			Checksum:  gssChecksum(binding, requestedFlags),
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

// apRepToken builds the SPNEGO NegTokenResp a server returns on success: accept-completed,
// with an AP-REP proving it decrypted the ticket (it echoes the authenticator's time,
// encrypted in the session key).
func apRepToken(key types.EncryptionKey, auth types.Authenticator) ([]byte, error) {
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

// acceptCompletedToken is the NegTokenResp of a server that authenticated the client
// without being asked to prove itself.
func acceptCompletedToken() ([]byte, error) {
	resp := spnego.NegTokenResp{
		NegState:      asn1.Enumerated(spnego.NegStateAcceptCompleted),
		SupportedMech: gssapi.OIDKRB5.OID(),
	}
	return resp.Marshal()
}

// verifyAPRep checks a server's NegTokenResp: when it carries an AP-REP, the AP-REP must
// decrypt with the session key and echo the authenticator's time. It returns whether an
// AP-REP was there.
func verifyAPRep(token []byte, key types.EncryptionKey, authTime time.Time) (bool, error) {
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
