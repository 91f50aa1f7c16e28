package ntlm

import (
	"net/http"
	"testing"

	. "github.com/onsi/gomega"
)

func TestOfferedScheme(t *testing.T) {
	cases := []struct {
		name   string
		values []string
		want   string
	}{
		{name: "IIS default: separate headers, Negotiate first", values: []string{"Negotiate", "NTLM"}, want: SchemeNTLM},
		{name: "one header, several challenges", values: []string{"Negotiate, NTLM"}, want: SchemeNTLM},
		{name: "case-insensitive", values: []string{"ntlm"}, want: SchemeNTLM},
		{name: "Negotiate only", values: []string{"Negotiate"}, want: SchemeNegotiate},
		{name: "Negotiate after Basic with parameters", values: []string{`Basic realm="x", charset="UTF-8", Negotiate`}, want: SchemeNegotiate},
		{name: "a scheme name inside a quoted parameter is not offered", values: []string{`Basic realm="NTLM, Negotiate"`}, want: ""},
		{name: "Basic only", values: []string{`Basic realm="PAM"`}, want: ""},
		{name: "nothing", want: ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tc.values {
				h.Add("WWW-Authenticate", v)
			}
			NewWithT(t).Expect(offeredScheme(h)).To(Equal(tc.want))
		})
	}
}

func TestChallengeToken(t *testing.T) {
	g := NewWithT(t)
	h := http.Header{}
	h.Add("WWW-Authenticate", "Negotiate")
	h.Add("WWW-Authenticate", "NTLM TlRMTVNTUAACAAAA+/8=")
	token, ok := challengeToken(h, SchemeNTLM)
	g.Expect(ok).To(BeTrue())
	g.Expect(token).To(Equal("TlRMTVNTUAACAAAA+/8="))
	_, ok = challengeToken(h, SchemeNegotiate)
	g.Expect(ok).To(BeFalse(), "a bare scheme carries no token")

	h = http.Header{"Www-Authenticate": {`NTLM realm="x"`}}
	_, ok = challengeToken(h, SchemeNTLM)
	g.Expect(ok).To(BeFalse(), "parameters are not a token")
}
