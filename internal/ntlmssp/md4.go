package ntlmssp

import (
	"encoding/binary"
	"math/bits"
)

// md4Sum returns the MD4 digest of data (RFC 1320). NTLM's NT hash is MD4 of the UTF-16
// password; MD4 is written here rather than taken from golang.org/x/crypto/md4, which is
// deprecated, so that NTLM adds no dependency.
func md4Sum(data []byte) [16]byte {
	// Padding: a one bit, zeros up to 56 bytes mod 64, then the bit length (little-endian).
	msg := make([]byte, 0, len(data)+72)
	msg = append(msg, data...)
	msg = append(msg, 0x80)
	for len(msg)%64 != 56 {
		msg = append(msg, 0)
	}
	msg = binary.LittleEndian.AppendUint64(msg, uint64(len(data))<<3)

	a, b, c, d := uint32(0x67452301), uint32(0xefcdab89), uint32(0x98badcfe), uint32(0x10325476)
	var x [16]uint32
	for off := 0; off < len(msg); off += 64 {
		for i := range x {
			x[i] = binary.LittleEndian.Uint32(msg[off+4*i:])
		}
		aa, bb, cc, dd := a, b, c, d

		// Round 1: F(x,y,z) = xy v not(x)z.
		for _, k := range [4]int{0, 4, 8, 12} {
			a = bits.RotateLeft32(a+(b&c|^b&d)+x[k], 3)
			d = bits.RotateLeft32(d+(a&b|^a&c)+x[k+1], 7)
			c = bits.RotateLeft32(c+(d&a|^d&b)+x[k+2], 11)
			b = bits.RotateLeft32(b+(c&d|^c&a)+x[k+3], 19)
		}
		// Round 2: G(x,y,z) = xy v xz v yz, plus sqrt(2).
		for _, k := range [4]int{0, 1, 2, 3} {
			a = bits.RotateLeft32(a+(b&c|b&d|c&d)+x[k]+0x5a827999, 3)
			d = bits.RotateLeft32(d+(a&b|a&c|b&c)+x[k+4]+0x5a827999, 5)
			c = bits.RotateLeft32(c+(d&a|d&b|a&b)+x[k+8]+0x5a827999, 9)
			b = bits.RotateLeft32(b+(c&d|c&a|d&a)+x[k+12]+0x5a827999, 13)
		}
		// Round 3: H(x,y,z) = x xor y xor z, plus sqrt(3).
		for _, k := range [4]int{0, 2, 1, 3} {
			a = bits.RotateLeft32(a+(b^c^d)+x[k]+0x6ed9eba1, 3)
			d = bits.RotateLeft32(d+(a^b^c)+x[k+8]+0x6ed9eba1, 9)
			c = bits.RotateLeft32(c+(d^a^b)+x[k+4]+0x6ed9eba1, 11)
			b = bits.RotateLeft32(b+(c^d^a)+x[k+12]+0x6ed9eba1, 15)
		}
		a, b, c, d = a+aa, b+bb, c+cc, d+dd
	}
	var sum [16]byte
	binary.LittleEndian.PutUint32(sum[0:], a)
	binary.LittleEndian.PutUint32(sum[4:], b)
	binary.LittleEndian.PutUint32(sum[8:], c)
	binary.LittleEndian.PutUint32(sum[12:], d)
	return sum
}
