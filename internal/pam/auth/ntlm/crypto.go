package ntlm

import (
	"crypto/hmac"
	"crypto/md5" //nolint:gosec // MS-NLMP and RFC 4121 fix HMAC-MD5 and MD5; there is no choice.
	"crypto/rc4" //nolint:gosec // MS-NLMP fixes RC4 for the key exchange.
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/binary"
	"hash"
	"strings"
	"time"
)

func hmacMD5(key []byte, data ...[]byte) []byte {
	m := hmac.New(md5.New, key)
	for _, d := range data {
		m.Write(d)
	}
	return m.Sum(nil)
}

// ntowfv2 is NTOWFv2 (MS-NLMP 3.3.2): HMAC-MD5 keyed with the NT hash (MD4 of the UTF-16
// password) of the upper-cased user name and the domain as given. It is also LMOWFv2.
func ntowfv2(password, user, domain string) []byte {
	nt := md4Sum(utf16le(password))
	return hmacMD5(nt[:], utf16le(strings.ToUpper(user)+domain))
}

// clientBlob is the NTLMv2_CLIENT_CHALLENGE ("temp" in MS-NLMP 3.3.2): versions, time,
// client challenge and the AV pairs (which end with MsvAvEOL).
func clientBlob(timestamp uint64, clientChallenge, avPairs []byte) []byte {
	b := make([]byte, 0, 28+len(avPairs)+4)
	b = append(b, 1, 1, 0, 0, 0, 0, 0, 0)
	b = binary.LittleEndian.AppendUint64(b, timestamp)
	b = append(b, clientChallenge...)
	b = append(b, 0, 0, 0, 0)
	b = append(b, avPairs...)
	return append(b, 0, 0, 0, 0)
}

// blobHeaderLen is the fixed part of a client blob before the AV pairs.
const blobHeaderLen = 28

// ntProofStr is the HMAC that proves knowledge of the password over the server's challenge
// and the client blob.
func ntProofStr(responseKey, serverChallenge, blob []byte) []byte {
	return hmacMD5(responseKey, serverChallenge, blob)
}

// lmv2Response is the LMv2 response, sent only when the server gave no timestamp.
func lmv2Response(responseKey, serverChallenge, clientChallenge []byte) []byte {
	return append(hmacMD5(responseKey, serverChallenge, clientChallenge), clientChallenge...)
}

// sessionBaseKey is the NTLMv2 session base key, which is also the key exchange key.
func sessionBaseKey(responseKey, proof []byte) []byte {
	return hmacMD5(responseKey, proof)
}

// rc4Apply is RC4K of MS-NLMP 6: it encrypts and decrypts the exported session key.
func rc4Apply(key, data []byte) ([]byte, error) {
	c, err := rc4.NewCipher(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(data))
	c.XORKeyStream(out, data)
	return out, nil
}

// mic is the message integrity code over the three messages, with the AUTHENTICATE's MIC
// field zeroed (MS-NLMP 3.1.5.1.2).
func mic(exportedSessionKey, negotiate, challenge, authenticate []byte) []byte {
	return hmacMD5(exportedSessionKey, negotiate, challenge, authenticate)
}

// bindingPrefix starts the application data of a tls-server-end-point channel binding.
const bindingPrefix = "tls-server-end-point:"

// channelBinding is the MsvAvChannelBindings value for a server certificate: MD5 of a
// gss_channel_bindings_struct with no addresses and, as application data,
// "tls-server-end-point:" and the certificate's hash (RFC 5929 4.1). That is what Windows
// clients send and IIS Extended Protection checks.
func channelBinding(cert *x509.Certificate) []byte {
	app := append([]byte(bindingPrefix), endpointHash(cert)...)
	// initiator_addrtype, initiator_address.length, acceptor_addrtype,
	// acceptor_address.length: all zero; then application_data.length and its bytes.
	buf := make([]byte, 16, 20+len(app))
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(app)))
	buf = append(buf, app...)
	sum := md5.Sum(buf) //nolint:gosec // See the import.
	return sum[:]
}

// endpointHash is the RFC 5929 tls-server-end-point hash: the hash of the certificate's
// signature algorithm, except that MD5 and SHA-1 become SHA-256. Algorithms without a hash
// of their own (Ed25519) use SHA-256 too, as Windows does.
func endpointHash(cert *x509.Certificate) []byte {
	var h hash.Hash
	switch cert.SignatureAlgorithm {
	case x509.SHA384WithRSA, x509.ECDSAWithSHA384, x509.SHA384WithRSAPSS:
		h = sha512.New384()
	case x509.SHA512WithRSA, x509.ECDSAWithSHA512, x509.SHA512WithRSAPSS:
		h = sha512.New()
	default:
		h = sha256.New()
	}
	h.Write(cert.Raw)
	return h.Sum(nil)
}

// noBinding is what a client sends over plain http: 16 zero bytes, as Windows does.
var noBinding = make([]byte, 16)

// filetimeEpochDelta is 1601-01-01 to 1970-01-01 in 100-nanosecond intervals.
const filetimeEpochDelta = 116444736000000000

// filetime converts t to a Windows FILETIME, the form of NTLM timestamps.
func filetime(t time.Time) uint64 {
	return uint64(t.UnixNano()/100 + filetimeEpochDelta)
}

// fromFiletime converts a Windows FILETIME to a time.
func fromFiletime(ft uint64) time.Time {
	// Timestamps before 1970 or absurdly far ahead are nonsense here; clamp rather than
	// overflow so the caller's window check refuses them.
	if ft < filetimeEpochDelta {
		return time.Unix(0, 0)
	}
	ticks := ft - filetimeEpochDelta
	if ticks > uint64(1<<62)/100 {
		return time.Unix(1<<40, 0)
	}
	return time.Unix(0, int64(ticks)*100)
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
