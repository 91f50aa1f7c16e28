package auth

import (
	"reflect"
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
