package emulator

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

func TestParseFilter(t *testing.T) {
	created := time.Date(2015, 6, 20, 10, 0, 0, 0, time.UTC)
	props := map[string]any{
		"RequestId":     "5ec10e61-cdd1-404e-a18e-740467d87dbf",
		"Justification": "it's urgent",
		"CreationTime":  created,
		"RequestedTTL":  int64(3600),
		"RequestStatus": "Active",
		"MFAEnabled":    false,
	}
	cases := []struct {
		reason string
		filter string
		match  bool
	}{
		{"empty matches everything", "", true},
		{"guid equality ignores case", "RequestId eq guid'5EC10E61-CDD1-404E-A18E-740467D87DBF'", true},
		{"property names ignore case", "requestid eq guid'5ec10e61-cdd1-404e-a18e-740467d87dbf'", true},
		{"guid inequality", "RequestId ne guid'5ec10e61-cdd1-404e-a18e-740467d87dbf'", false},
		{"string with an escaped quote", "Justification eq 'it''s urgent'", true},
		{"datetime window, the documentation's example",
			"CreationTime gt datetime'2015-06-12T04:49:32.431Z' and CreationTime lt datetime'2015-07-13T04:49:32.432Z'", true},
		{"datetime outside the window", "CreationTime ge datetime'2015-06-21T00:00:00'", false},
		{"number comparison", "RequestedTTL le 3600 and RequestedTTL gt 10", true},
		{"boolean", "MFAEnabled eq false", true},
		{"parentheses", "(RequestStatus eq 'Active') and (RequestedTTL eq 3600)", true},
		{"unknown property matches nothing", "Nope eq 'x'", false},
		{"type mismatch matches nothing", "RequestedTTL eq 'x'", false},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			f, err := ParseFilter(tc.filter)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(f.Match(props)).To(Equal(tc.match))
		})
	}
}

func TestParseFilterRejects(t *testing.T) {
	cases := []struct{ reason, filter, inError string }{
		{"or is not documented", "RequestStatus eq 'Active' or RequestStatus eq 'Closed'", "'or' is not supported"},
		{"unterminated string", "Justification eq 'abc", "unterminated"},
		{"bad guid", "RequestId eq guid'xyz'", "not a GUID"},
		{"bad datetime", "CreationTime gt datetime'yesterday'", "not a date"},
		{"unknown operator", "RequestedTTL like 3", "unsupported operator"},
		{"missing value", "RequestedTTL eq", "expected a value"},
		{"missing parenthesis", "(RequestedTTL eq 3", "missing ')'"},
		{"garbage", "RequestedTTL eq 3 $$", "unexpected character"},
		{"dangling and", "RequestedTTL eq 3 and", "ends where a comparison"},
		{"unknown literal type", "X eq binary'00'", "unsupported literal type"},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			_, err := ParseFilter(tc.filter)
			NewWithT(t).Expect(err).To(MatchError(ContainSubstring(tc.inError)))
		})
	}
}

func FuzzParseFilter(f *testing.F) {
	for _, seed := range []string{
		"RequestId eq guid'5ec10e61-cdd1-404e-a18e-740467d87dbf'",
		"CreationTime gt datetime'2015-06-12T04:49:32.431Z' and CreationTime lt datetime'2015-07-13T04:49:32.432Z'",
		"(a eq 'x''y') and b ne null and c ge -5",
		"((((a eq 1))))",
		"a or b",
	} {
		f.Add(seed)
	}
	props := map[string]any{"a": "x", "b": int64(1), "c": time.Now(), "d": true, "e": nil}
	f.Fuzz(func(t *testing.T, s string) {
		filter, err := ParseFilter(s)
		if err == nil {
			_ = filter.Match(props)
		}
	})
}
