package kerberos

import (
	"net/http"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
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
