package ntlmssp

import (
	"crypto/hmac"
	"crypto/md5" //nolint:gosec // MS-NLMP and RFC 4121 fix HMAC-MD5 and MD5; there is no choice.
	"crypto/rc4" //nolint:gosec // MS-NLMP fixes RC4 for the key exchange.
	"encoding/binary"
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
