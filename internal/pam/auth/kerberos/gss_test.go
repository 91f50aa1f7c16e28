package kerberos

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/md5" //nolint:gosec // RFC 4121's hash, recomputed independently.
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/jcmturner/gokrb5/v8/types"
)

func TestWantsNegotiate(t *testing.T) {
	cases := []struct {
		reason string
		status int
		values []string
		want   bool
	}{
		{"IIS offering both, Negotiate first", 401, []string{"Negotiate", "NTLM"}, true},
		{"Negotiate second", 401, []string{"NTLM", "Negotiate"}, true},
		{"lower case", 401, []string{"negotiate"}, true},
		{"several challenges in one value", 401, []string{`Basic realm="pam", Negotiate`}, true},
		{"with a continuation token", 401, []string{"Negotiate oQcwBaADCgEC"}, true},
		{"NTLM only", 401, []string{"NTLM"}, false},
		{"Negotiate only inside a quoted parameter", 401, []string{`Basic realm="Negotiate, please"`}, false},
		{"Negotiate as a parameter name", 401, []string{`Basic negotiate=yes`}, false},
		{"no challenge", 401, nil, false},
		{"not a 401", 403, []string{"Negotiate"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			resp := &http.Response{StatusCode: tc.status, Header: http.Header{}}
			for _, v := range tc.values {
				resp.Header.Add("WWW-Authenticate", v)
			}
			NewWithT(t).Expect(wantsNegotiate(resp)).To(Equal(tc.want))
		})
	}
}

func TestNegotiateToken(t *testing.T) {
	g := NewWithT(t)
	tok, ok := negotiateToken([]string{"NTLM", "Negotiate oRQwEqADCgEAoQsGCSqGSIb3EgECAg=="})
	g.Expect(ok).To(BeTrue())
	g.Expect(tok).To(Equal("oRQwEqADCgEAoQsGCSqGSIb3EgECAg=="))
	_, ok = negotiateToken([]string{"Negotiate"})
	g.Expect(ok).To(BeFalse())
}

// TestChannelBinding recomputes RFC 4121 4.1.1.2 and RFC 5929 by hand: MD5 over four
// zero 32-bit fields (no addresses), the little-endian length of the application data and
// "tls-server-end-point:" followed by the certificate's hash, SHA-256 unless the
// certificate is signed with SHA-384 or SHA-512.
func TestChannelBinding(t *testing.T) {
	cases := []struct {
		reason string
		alg    x509.SignatureAlgorithm
		curve  elliptic.Curve
		hash   func([]byte) []byte
	}{
		{"ECDSA with SHA-256", x509.ECDSAWithSHA256, elliptic.P256(), func(b []byte) []byte { s := sha256.Sum256(b); return s[:] }},
		{"ECDSA with SHA-384", x509.ECDSAWithSHA384, elliptic.P384(), func(b []byte) []byte { s := sha512.Sum384(b); return s[:] }},
		{"ECDSA with SHA-512", x509.ECDSAWithSHA512, elliptic.P521(), func(b []byte) []byte { s := sha512.Sum512(b); return s[:] }},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			cert := selfSigned(t, tc.curve, tc.alg)
			app := append([]byte("tls-server-end-point:"), tc.hash(cert.Raw)...)
			s := make([]byte, 20, 20+len(app))
			s[16] = byte(len(app)) // < 256
			want := md5.Sum(append(s, app...))
			g.Expect(channelBinding(cert)).To(Equal(want[:]))
		})
	}
}

func TestGSSChecksum(t *testing.T) {
	g := NewWithT(t)
	bnd := []byte("0123456789abcdef")
	ck := types.Checksum{CksumType: gssChecksumType, Checksum: gssChecksum(bnd, requestedFlags)}
	got, flags, err := checksumBinding(ck)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got).To(Equal(bnd))
	g.Expect(flags).To(BeEquivalentTo(requestedFlags))

	got, _, err = checksumBinding(types.Checksum{CksumType: gssChecksumType, Checksum: gssChecksum(nil, 0)})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(isZero(got)).To(BeTrue(), "no binding is sixteen zeros")

	_, _, err = checksumBinding(types.Checksum{CksumType: 16, Checksum: make([]byte, 24)})
	g.Expect(err).To(HaveOccurred())
}

func TestKDCAddress(t *testing.T) {
	cases := []struct{ in, want, err string }{
		{"dc1.priv.contoso.com", "dc1.priv.contoso.com:88", ""},
		{"dc1:8888", "dc1:8888", ""},
		{"10.0.0.1", "10.0.0.1:88", ""},
		{"::1", "[::1]:88", ""},
		{"[::1]", "[::1]:88", ""},
		{"[::1]:750", "[::1]:750", ""},
		{" ", "", "empty"},
		{"dc1:0", "", "not host:port"},
		{":88", "", "not host:port"},
	}
	for _, tc := range cases {
		got, err := kdcAddress(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("kdcAddress(%q) error = %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("kdcAddress(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func selfSigned(t *testing.T, curve elliptic.Curve, alg x509.SignatureAlgorithm) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:       big.NewInt(1),
		NotBefore:          time.Now().Add(-time.Hour),
		NotAfter:           time.Now().Add(time.Hour),
		SignatureAlgorithm: alg,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
