package auth

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseChallenges(t *testing.T) {
	cases := []struct {
		name   string
		values []string
		want   []Challenge
	}{
		{"one value per scheme", []string{"Negotiate", "NTLM"}, []Challenge{{Scheme: "Negotiate"}, {Scheme: "NTLM"}}},
		{"schemes sharing a value", []string{"Negotiate, NTLM"}, []Challenge{{Scheme: "Negotiate"}, {Scheme: "NTLM"}}},
		{"a token ending in =", []string{"NTLM TlRMTVNTUAACAAAA=="}, []Challenge{{Scheme: "NTLM", Params: "TlRMTVNTUAACAAAA=="}}},
		{"parameters continue their challenge", []string{`Basic realm="PAM", charset="UTF-8", NTLM`},
			[]Challenge{{Scheme: "Basic", Params: `realm="PAM", charset="UTF-8"`}, {Scheme: "NTLM"}}},
		{"a comma in a quoted string", []string{`Basic realm="a, b", Negotiate`},
			[]Challenge{{Scheme: "Basic", Params: `realm="a, b"`}, {Scheme: "Negotiate"}}},
		{"an escaped quote", []string{`Basic realm="a\", b", NTLM`},
			[]Challenge{{Scheme: "Basic", Params: `realm="a\", b"`}, {Scheme: "NTLM"}}},
		{"empty parts", []string{"", " , Negotiate"}, []Challenge{{Scheme: "Negotiate"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParseChallenges(tc.values); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseChallenges(%q) = %#v, want %#v", tc.values, got, tc.want)
			}
		})
	}
}

func TestDecodeToken(t *testing.T) {
	const maxLen = 8
	cases := []struct {
		name, token string
		ok          bool
	}{
		{"at the bound", "AAAAAAAAAAA=", true},
		{"one block past the bound", "AAAAAAAAAAAAAAAA", false},
		{"a megabyte", strings.Repeat("A", 1<<20), false},
		{"not base64", "!!!!", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeToken(tc.token, maxLen)
			if (err == nil) != tc.ok {
				t.Fatalf("DecodeToken(%.20q) error = %v, want ok %v", tc.token, err, tc.ok)
			}
			if len(got) > maxLen {
				t.Errorf("decoded %d bytes, more than %d", len(got), maxLen)
			}
		})
	}
}
