package ntlmssp

import (
	"bytes" //nolint:gosec // The channel binding is MD5 by definition.
	"encoding/hex"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// The inputs of MS-NLMP 4.2.1 and 4.2.4.
var (
	specUser            = "User"
	specDomain          = "Domain"
	specPassword        = "Password"
	specServerChallenge = unhex("0123456789abcdef")
	specClientChallenge = unhex("aaaaaaaaaaaaaaaa")
	specRandomKey       = bytes.Repeat([]byte{0x55}, 16)
)

// specTargetInfo is the AV pairs of the CHALLENGE in MS-NLMP 4.2.4: NetBIOS domain "Domain",
// NetBIOS server "Server", EOL.
func specTargetInfo(t *testing.T) []byte {
	t.Helper()
	info, err := encodeAVPairs([]avPair{
		{id: avNbDomainName, value: utf16le("Domain")},
		{id: avNbComputerName, value: utf16le("Server")},
	})
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// TestSpecVectors checks the NTLMv2 results of MS-NLMP 4.2.4: the response key, the LMv2
// response, NTProofStr, the session base key and the encrypted session key.
func TestSpecVectors(t *testing.T) {
	g := NewWithT(t)
	key := ntowfv2(specPassword, specUser, specDomain)
	g.Expect(hex.EncodeToString(key)).To(Equal("0c868a403bfd7a93a3001ef22ef02e3f"), "NTOWFv2 (4.2.4.1.1)")

	lm := lmv2Response(key, specServerChallenge, specClientChallenge)
	g.Expect(hex.EncodeToString(lm)).To(Equal("86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa"), "LMv2 response (4.2.4.2.1)")

	// The spec's time is zero.
	blob := clientBlob(0, specClientChallenge, specTargetInfo(t))
	proof := ntProofStr(key, specServerChallenge, blob)
	g.Expect(hex.EncodeToString(proof)).To(Equal("68cd0ab851e51c96aabc927bebef6a1c"), "NTProofStr (4.2.4.2.2)")

	base := sessionBaseKey(key, proof)
	g.Expect(hex.EncodeToString(base)).To(Equal("8de40ccadbc14a82f15cb0ad0de95ca3"), "session base key (4.2.4.1.2)")

	enc, err := rc4Apply(base, specRandomKey)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(hex.EncodeToString(enc)).To(Equal("c5dad2544fc9799094ce1ce90bc9d03e"), "encrypted session key (4.2.4.2.3)")
}

func TestFiletime(t *testing.T) {
	g := NewWithT(t)
	now := time.Date(2026, 5, 4, 3, 2, 1, 123456700, time.UTC)
	g.Expect(fromFiletime(filetime(now)).Equal(now)).To(BeTrue())
	g.Expect(filetime(time.Unix(0, 0))).To(Equal(uint64(116444736000000000)))
	g.Expect(fromFiletime(0).Unix()).To(Equal(int64(0)))
	g.Expect(fromFiletime(^uint64(0)).After(now)).To(BeTrue())
}
