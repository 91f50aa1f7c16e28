package gsskrb5

import (
	"testing"

	"github.com/jcmturner/gokrb5/v8/types"
	. "github.com/onsi/gomega"
)

// TestGSSChecksum: the authenticator checksum carries the channel binding and the context flags,
// and reads back as written; no binding is sixteen zeros.
func TestGSSChecksum(t *testing.T) {
	g := NewWithT(t)
	bnd := []byte("0123456789abcdef")
	ck := types.Checksum{CksumType: gssChecksumType, Checksum: gssChecksum(bnd, RequestedFlags)}
	got, flags, err := ChecksumBinding(ck)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got).To(Equal(bnd))
	g.Expect(flags).To(BeEquivalentTo(RequestedFlags))

	got, _, err = ChecksumBinding(types.Checksum{CksumType: gssChecksumType, Checksum: gssChecksum(nil, 0)})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(IsZero(got)).To(BeTrue(), "no binding is sixteen zeros")

	_, _, err = ChecksumBinding(types.Checksum{CksumType: 16, Checksum: make([]byte, 24)})
	g.Expect(err).To(HaveOccurred())
}
