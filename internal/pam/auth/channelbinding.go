package auth

import (
	"crypto/md5" //nolint:gosec // MD5 is what the channel-binding hash is defined with.
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/binary"
	"hash"
)

// bindingPrefix starts the application data of a tls-server-end-point channel binding.
const bindingPrefix = "tls-server-end-point:"

// ChannelBinding is the 16-byte hash that binds an NTLM AUTHENTICATE (MsvAvChannelBindings) or a
// Kerberos authenticator (the Bnd field of RFC 4121 4.1.1.2) to the TLS certificate a server
// presented: MD5 of a gss_channel_bindings_struct with no addresses and, as application data,
// "tls-server-end-point:" and the certificate's hash (RFC 5929 4.1). That is what Windows
// clients send and IIS Extended Protection checks.
func ChannelBinding(cert *x509.Certificate) []byte {
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
