package ntlmssp

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// seededRand is a deterministic random source, so messages are reproducible.
func seededRand(seed uint64) *rand.ChaCha8 {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	return rand.NewChaCha8(s)
}

// testChallenge builds a CHALLENGE as the server does, with a timestamp at now.
func testChallenge(t testing.TB, now time.Time) []byte {
	t.Helper()
	info, err := encodeAVPairs([]avPair{
		{id: avNbDomainName, value: utf16le("PRIV")},
		{id: avNbComputerName, value: utf16le("MIM")},
		{id: avDNSDomainName, value: utf16le("priv.example.test")},
		{id: avTimestamp, value: binary.LittleEndian.AppendUint64(nil, filetime(now))},
	})
	if err != nil {
		t.Fatal(err)
	}
	flags := flagUnicode | flagNTLM | flagTargetTypeDomain | flagTargetInfo | flagVersion |
		flagExtendedSessionSecurity | flagAlwaysSign | flag128 | flagKeyExch | flagRequestTarget
	return encodeChallenge(flags, []byte{1, 2, 3, 4, 5, 6, 7, 8}, utf16le("PRIV"), info)
}

// exchange is a complete client side of a handshake, for the server-side checks.
type exchange struct {
	negotiate, challenge, authenticate []byte
}

func newExchange(t testing.TB, creds Credentials, binding []byte) exchange {
	t.Helper()
	negotiate := encodeNegotiate(clientFlags)
	challenge := testChallenge(t, testNow)
	authenticate, err := buildAuthenticate(clientInput{
		creds: creds, negotiate: negotiate, challenge: challenge, binding: binding,
		targetName: "HTTP/mim.priv.example.test", now: testNow, rand: seededRand(1),
	})
	if err != nil {
		t.Fatal(err)
	}
	return exchange{negotiate, challenge, authenticate}
}

// serverFor is the server's view of an exchange, knowing PRIV\jen.
func serverFor(e exchange, now time.Time) serverInput {
	return serverInput{
		negotiate: e.negotiate, challenge: e.challenge, serverChallenge: []byte{1, 2, 3, 4, 5, 6, 7, 8},
		lookup: func(user, domain string) (string, string, bool) {
			if strings.EqualFold(user, "jen") && strings.EqualFold(domain, "PRIV") {
				return "jen", "s3cret!", true
			}
			return "", "", false
		},
		now: now, maxSkew: 5 * time.Minute,
	}
}

var jen = Credentials{Domain: "PRIV", Username: "jen", Password: "s3cret!"}

func TestMessagesRoundTrip(t *testing.T) {
	g := NewWithT(t)
	flags, err := parseNegotiate(encodeNegotiate(clientFlags))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(flags).To(Equal(clientFlags))

	ch, err := parseChallenge(testChallenge(t, testNow))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(ch.serverChallenge).To(Equal([]byte{1, 2, 3, 4, 5, 6, 7, 8}))
	g.Expect(ch.targetName).To(Equal(utf16le("PRIV")))
	ts, ok := findAV(ch.targetInfo, avTimestamp)
	g.Expect(ok).To(BeTrue())
	g.Expect(binary.LittleEndian.Uint64(ts)).To(Equal(filetime(testNow)))

	binding := bytes.Repeat([]byte{7}, 16)
	e := newExchange(t, jen, binding)
	m, err := parseAuthenticate(e.authenticate)
	g.Expect(err).NotTo(HaveOccurred())
	user, domain, ok := m.names()
	g.Expect(ok).To(BeTrue())
	g.Expect(user).To(Equal("jen"))
	g.Expect(domain).To(Equal("PRIV"))
	g.Expect(m.lmResponse).To(Equal(make([]byte, 24)), "with the server's timestamp the LM response is zeros")
	g.Expect(m.encryptedKey).To(HaveLen(16), "key exchange was negotiated")
	g.Expect(m.mic).To(HaveLen(16))

	// The client's AV pairs: the server's, plus flags (MIC), binding and target name.
	avs, err := parseAVPairs(m.ntResponse[16+blobHeaderLen:])
	g.Expect(err).NotTo(HaveOccurred())
	f, _ := findAV(avs, avFlags)
	g.Expect(binary.LittleEndian.Uint32(f)).To(Equal(avFlagMIC))
	cb, _ := findAV(avs, avChannelBindings)
	g.Expect(cb).To(Equal(binding))
	tn, _ := findAV(avs, avTargetName)
	g.Expect(tn).To(Equal(utf16le("HTTP/mim.priv.example.test")))
	ts, _ = findAV(avs, avTimestamp)
	g.Expect(binary.LittleEndian.Uint64(ts)).To(Equal(filetime(testNow)), "the server's timestamp is echoed")
	g.Expect(binary.LittleEndian.Uint64(m.ntResponse[16+8:])).To(Equal(filetime(testNow)), "and used as the blob's time")

	v, err := verifyAuthenticate(serverFor(e, testNow.Add(time.Second)), e.authenticate)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(v.account).To(Equal("jen"))
	g.Expect(v.binding).To(Equal(binding))
}

// TestClientWithoutServerTimestamp: without MsvAvTimestamp the client uses its own clock and
// sends an LMv2 response.
func TestClientWithoutServerTimestamp(t *testing.T) {
	g := NewWithT(t)
	info, _ := encodeAVPairs([]avPair{{id: avNbDomainName, value: utf16le("PRIV")}})
	challenge := encodeChallenge(flagUnicode|flagNTLM|flagTargetInfo|flagVersion, []byte{1, 2, 3, 4, 5, 6, 7, 8}, nil, info)
	msg, err := buildAuthenticate(clientInput{creds: jen, negotiate: encodeNegotiate(clientFlags), challenge: challenge, now: testNow, rand: seededRand(2)})
	g.Expect(err).NotTo(HaveOccurred())
	m, err := parseAuthenticate(msg)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(m.lmResponse).To(HaveLen(24))
	g.Expect(isZero(m.lmResponse)).To(BeFalse())
	g.Expect(m.encryptedKey).To(BeEmpty(), "the server did not offer key exchange")
	g.Expect(binary.LittleEndian.Uint64(m.ntResponse[16+8:])).To(Equal(filetime(testNow)))
}

func TestVerifyAuthenticateRefuses(t *testing.T) {
	binding := bytes.Repeat([]byte{7}, 16)
	cases := []struct {
		name   string
		creds  Credentials
		alter  func(e *exchange)
		now    time.Time
		reason string
	}{
		{name: "wrong password", creds: Credentials{Domain: "PRIV", Username: "jen", Password: "wrong"}, reason: "wrong password"},
		{name: "unknown user", creds: Credentials{Domain: "PRIV", Username: "bob", Password: "x"}, reason: `unknown user PRIV\bob`},
		{name: "another challenge", alter: func(e *exchange) { e.challenge = testChallenge(t, testNow.Add(time.Second)) }, reason: "MIC"},
		{name: "altered negotiate", alter: func(e *exchange) { e.negotiate = encodeNegotiate(clientFlags &^ flagKeyExch) }, reason: "MIC"},
		{name: "altered flags", alter: func(e *exchange) { e.authenticate[60] ^= 0x10 }, reason: "MIC"},
		{name: "altered MIC", alter: func(e *exchange) { e.authenticate[micOffset] ^= 1 }, reason: "MIC"},
		{name: "altered blob", alter: func(e *exchange) { e.authenticate[len(e.authenticate)-20] ^= 1 }, reason: "wrong password"},
		{name: "old response", now: testNow.Add(6 * time.Minute), reason: "more than 5m0s from the server's clock"},
		{name: "NTLMv1", alter: func(e *exchange) { setField(e.authenticate, 20, 24) }, reason: "not NTLMv2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			creds := jen
			if tc.creds.Username != "" {
				creds = tc.creds
			}
			e := newExchange(t, creds, binding)
			if tc.alter != nil {
				tc.alter(&e)
			}
			now := testNow
			if !tc.now.IsZero() {
				now = tc.now
			}
			_, err := verifyAuthenticate(serverFor(e, now), e.authenticate)
			g.Expect(err).To(MatchError(ContainSubstring(tc.reason)))
			g.Expect(err.Error()).NotTo(ContainSubstring("s3cret"))
		})
	}
}

// setField rewrites the length of a field descriptor.
func setField(msg []byte, off int, n uint16) {
	binary.LittleEndian.PutUint16(msg[off:], n)
	binary.LittleEndian.PutUint16(msg[off+2:], n)
}

// badChallenges are malformed CHALLENGE messages, each with what the parser must say.
func badChallenges(t testing.TB) map[string][]byte {
	good := testChallenge(t, testNow)
	with := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	return map[string][]byte{
		"not an NTLMSSP message":  {},
		"not an NTLMSSP message ": []byte("NTLMSSP"),
		"NTLM message type 3":     with(func(b []byte) []byte { b[8] = 3; return b }),
		"is truncated (31 bytes)": good[:31],
		"announces target info":   good[:44],
		"lies outside":            with(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[44:], 0xffffffff); return b }),
		"lies outside ":           with(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[40:], 0xffff); return b }),
		"lies outside  ":          with(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[16:], 8); return b }),
		"lies outside   ":         good[:len(good)-1],
		"without MsvAvEOL": with(func(b []byte) []byte {
			setField(b, 40, binary.LittleEndian.Uint16(b[40:])-4)
			return b[:len(b)-4]
		}),
		"claims 65535 bytes":       with(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[len(b)-4-12+2:], 0xffff); return b }),
		"larger than":              append(append([]byte(nil), good...), make([]byte, maxMessageLen)...),
		"without MsvAvEOL ":        with(func(b []byte) []byte { setField(b, 40, 3); return b }),
		"not accept Unicode":       with(func(b []byte) []byte { b[20] &^= byte(flagUnicode); return b }),
		"claims 65535 bytes, 0 re": with(func(b []byte) []byte { return append(b[:len(b)-4], 0x01, 0x00, 0xff, 0xff) }),
	}
}

// TestParseChallengeRefusesMalformed: every malformed challenge is an error, never a panic.
func TestParseChallengeRefusesMalformed(t *testing.T) {
	for want, msg := range badChallenges(t) {
		t.Run(want, func(t *testing.T) {
			g := NewWithT(t)
			_, err := buildAuthenticate(clientInput{creds: jen, negotiate: encodeNegotiate(clientFlags), challenge: msg, now: testNow, rand: seededRand(3)})
			g.Expect(err).To(MatchError(ContainSubstring(strings.TrimSpace(want))))
		})
	}
}

// FuzzParseChallenge feeds the client arbitrary CHALLENGE messages: parsing and answering
// must fail cleanly or produce an AUTHENTICATE the parser accepts.
func FuzzParseChallenge(f *testing.F) {
	f.Add(testChallenge(f, testNow))
	for _, msg := range badChallenges(f) {
		if len(msg) <= 4096 {
			f.Add(msg)
		}
	}
	spec := encodeChallenge(0xe28a8233, specServerChallenge, utf16le("Server"), nil)
	f.Add(spec)
	negotiate := encodeNegotiate(clientFlags)
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := parseChallenge(data); err != nil {
			return
		}
		msg, err := buildAuthenticate(clientInput{creds: jen, negotiate: negotiate, challenge: data, binding: noBinding, targetName: "HTTP/h", now: testNow, rand: seededRand(4)})
		if err != nil {
			return
		}
		if _, err := parseAuthenticate(msg); err != nil {
			t.Fatalf("our AUTHENTICATE does not parse: %v", err)
		}
	})
}

// FuzzVerifyAuthenticate feeds the server arbitrary AUTHENTICATE messages: they must be
// refused cleanly, never panic, and never be accepted (the fuzzer does not know the password).
func FuzzVerifyAuthenticate(f *testing.F) {
	e := newExchange(f, jen, noBinding)
	f.Add(e.authenticate)
	f.Add(e.authenticate[:64])
	f.Add(e.authenticate[:87])
	f.Add(e.authenticate[:len(e.authenticate)-1])
	f.Add(newExchange(f, Credentials{Domain: "PRIV", Username: "jen", Password: "wrong"}, nil).authenticate)
	f.Add([]byte("NTLMSSP\x00\x03\x00\x00\x00"))
	in := serverFor(e, testNow)
	f.Fuzz(func(t *testing.T, data []byte) {
		// The proof and the MIC cover every byte that matters, so a mutated message that
		// passes can only be the client's own.
		if v, err := verifyAuthenticate(in, data); err == nil && v.account != "jen" {
			t.Fatalf("accepted as %q", v.account)
		}
	})
}
