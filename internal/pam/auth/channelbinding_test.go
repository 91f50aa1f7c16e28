package auth

import (
	"bytes"
	"crypto/elliptic"
	"crypto/md5" //nolint:gosec // See channelbinding.go.
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/binary"
	"testing"

	"github.com/pam-operator/pam-operator/internal/testing/testcert"
)

// TestChannelBinding recomputes RFC 4121 4.1.1.2 and RFC 5929 by hand: MD5 over four zero
// 32-bit fields (no addresses), the little-endian length of the application data and
// "tls-server-end-point:" followed by the certificate's hash, SHA-256 unless the certificate is
// signed with SHA-384 or SHA-512; MD5 and SHA-1 signatures are upgraded to SHA-256.
func TestChannelBinding(t *testing.T) {
	sha256Of := func(b []byte) []byte { s := sha256.Sum256(b); return s[:] }
	sha384Of := func(b []byte) []byte { s := sha512.Sum384(b); return s[:] }
	sha512Of := func(b []byte) []byte { s := sha512.Sum512(b); return s[:] }
	cases := []struct {
		name string
		cert func(t *testing.T) *x509.Certificate
		hash func([]byte) []byte
	}{
		{"ECDSA with SHA-256", realCert(elliptic.P256(), x509.ECDSAWithSHA256), sha256Of},
		{"ECDSA with SHA-384", realCert(elliptic.P384(), x509.ECDSAWithSHA384), sha384Of},
		{"ECDSA with SHA-512", realCert(elliptic.P521(), x509.ECDSAWithSHA512), sha512Of},
		{"SHA-1 signature is upgraded to SHA-256", rawCert(x509.SHA1WithRSA), sha256Of},
		{"MD5 signature is upgraded to SHA-256", rawCert(x509.MD5WithRSA), sha256Of},
		{"SHA-384 RSA signature hashes with SHA-384", rawCert(x509.SHA384WithRSA), sha384Of},
		{"SHA-512 RSA signature hashes with SHA-512", rawCert(x509.SHA512WithRSA), sha512Of},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cert := tc.cert(t)
			if got, want := endpointHash(cert), tc.hash(cert.Raw); !bytes.Equal(got, want) {
				t.Fatalf("endpointHash = %x, want %x", got, want)
			}
			app := append([]byte("tls-server-end-point:"), tc.hash(cert.Raw)...)
			var want bytes.Buffer
			want.Write(make([]byte, 16)) // both address types and lengths: zero
			_ = binary.Write(&want, binary.LittleEndian, uint32(len(app)))
			want.Write(app)
			sum := md5.Sum(want.Bytes()) //nolint:gosec // See the import.
			if got := ChannelBinding(cert); !bytes.Equal(got, sum[:]) {
				t.Errorf("ChannelBinding = %x, want %x", got, sum)
			}
		})
	}
}

// rawCert is a certificate that only has bytes and a signature algorithm, which is all the
// binding reads.
func rawCert(alg x509.SignatureAlgorithm) func(*testing.T) *x509.Certificate {
	return func(*testing.T) *x509.Certificate {
		return &x509.Certificate{Raw: []byte("certificate bytes"), SignatureAlgorithm: alg}
	}
}

// realCert is a self-signed certificate made with the algorithm.
func realCert(curve elliptic.Curve, alg x509.SignatureAlgorithm) func(*testing.T) *x509.Certificate {
	return func(t *testing.T) *x509.Certificate { return testcert.SelfSigned(t, curve, alg) }
}
