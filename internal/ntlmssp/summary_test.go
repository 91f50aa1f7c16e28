package ntlmssp

import (
	"bytes"
	"testing"

	. "github.com/onsi/gomega"
)

// TestSummarize: the summary names the flags and AV pairs each side sent, and what the
// channel binding holds.
func TestSummarize(t *testing.T) {
	challenge, err := Challenge(Negotiate(), Target{Domain: "PRIV", Computer: "MIM"}, make([]byte, 8), testNow)
	if err != nil {
		t.Fatal(err)
	}
	g := NewWithT(t)
	s, err := Summarize(challenge)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(s.Flags & flagTargetInfo).NotTo(BeZero())
	g.Expect(s.AVPairs).To(Equal([]uint16{avNbDomainName, avNbComputerName, avTimestamp}))

	creds := Credentials{Domain: "PRIV", Username: "jen", Password: "s3cret!"}
	for _, tc := range []struct {
		name    string
		binding []byte
		want    string
	}{
		{"no pair, as clients without Extended Protection", nil, "absent"},
		{"the zeros of plain http", NoBinding, "none"},
		{"a certificate's hash", bytes.Repeat([]byte{7}, 16), "tls-server-end-point"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			msg, err := Authenticate(ClientInput{Credentials: creds, Negotiate: Negotiate(), Challenge: challenge,
				Binding: tc.binding, TargetName: "HTTP/mim.priv.example", Now: testNow, Rand: seededRand(1)})
			g.Expect(err).NotTo(HaveOccurred())
			s, err := Summarize(msg)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(s.Binding).To(Equal(tc.want))
			g.Expect(s.AVFlags&avFlagMIC).NotTo(BeZero(), "the AUTHENTICATE carries a MIC")
			g.Expect(s.AVPairs).To(ContainElements(avTimestamp, avFlags, avTargetName))
			g.Expect(s.Flags & flagExtendedSessionSecurity).NotTo(BeZero())
		})
	}

	_, err = Summarize(Negotiate())
	g.Expect(err).To(HaveOccurred(), "a NEGOTIATE is the client's own, and has nothing to summarise")
}
