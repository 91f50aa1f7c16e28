package emulator_test

import (
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/pam-operator/pam-operator/emulator"
)

// filterProps has every value type Match takes.
var filterProps = map[string]any{
	"RequestId":      "5ec10e61-cdd1-404e-a18e-740467d87dbf",
	"Justification":  "it's urgent",
	"Empty":          "",
	"DisplayName":    nil,
	"CreationTime":   time.Date(2015, 6, 20, 10, 0, 0, 0, time.UTC),
	"ExpirationTime": time.Time{},
	"RequestedTTL":   int64(3600),
	"RequestStatus":  "Active",
	"MFAEnabled":     false,
}

func TestParseFilter(t *testing.T) {
	cases := []struct {
		reason, filter string
		match          bool
	}{
		{"empty matches everything", "", true},
		{"blank matches everything", "  \t", true},
		{"guid equality ignores case", "RequestId eq guid'5EC10E61-CDD1-404E-A18E-740467D87DBF'", true},
		{"a GUID as a plain string also ignores case", "RequestId eq '5EC10E61-CDD1-404E-A18E-740467D87DBF'", true},
		{"property names ignore case", "requestid eq guid'5ec10e61-cdd1-404e-a18e-740467d87dbf'", true},
		{"keywords ignore case", "RequestStatus EQ 'Active' AND RequestedTTL Gt 1", true},
		{"guid inequality", "RequestId ne guid'5ec10e61-cdd1-404e-a18e-740467d87dbf'", false},
		{"strings compare with case", "RequestStatus eq 'active'", false},
		{"string ordering", "RequestStatus lt 'B'", true},
		{"a doubled quote is one quote", "Justification eq 'it''s urgent'", true},
		{"an empty string", "Empty eq ''", true},
		{"the documentation's datetime window", "CreationTime gt datetime'2015-06-12T04:49:32.431Z' and CreationTime lt datetime'2015-07-13T04:49:32.432Z'", true},
		{"a datetime without a zone is UTC", "CreationTime eq datetime'2015-06-20T10:00:00'", true},
		{"a datetime with an offset", "CreationTime eq datetime'2015-06-20T03:00:00-07:00'", true},
		{"datetimeoffset literals", "CreationTime eq datetimeoffset'2015-06-20T10:00:00Z'", true},
		{"a datetime outside the window", "CreationTime ge datetime'2015-06-21T00:00:00'", false},
		{"numbers", "RequestedTTL le 3600 and RequestedTTL gt 10", true},
		{"a negative number", "RequestedTTL gt -1", true},
		{"a number written as a string, as PAM writes it", "RequestedTTL eq '3600'", true},
		{"booleans", "MFAEnabled eq false", true},
		{"booleans ignore case", "MFAEnabled ne TRUE", true},
		{"null", "DisplayName eq null", true},
		{"an empty string is null", "Empty eq null", true},
		{"the unset time is null", "ExpirationTime eq null and CreationTime ne null", true},
		{"a value is not null", "RequestStatus eq null", false},
		{"null does not order", "DisplayName gt null", false},
		{"parentheses", "(RequestStatus eq 'Active') and (RequestedTTL eq 3600)", true},
		{"nested parentheses", "((RequestStatus eq 'Active' and (MFAEnabled eq false)))", true},
		{"one false term fails the conjunction", "RequestStatus eq 'Active' and RequestedTTL eq 1 and MFAEnabled eq false", false},
		{"an unknown property matches nothing", "Nope eq 'x'", false},
		{"a type mismatch matches nothing", "RequestedTTL eq 'x'", false},
		{"a guid against a number matches nothing", "RequestedTTL eq guid'5ec10e61-cdd1-404e-a18e-740467d87dbf'", false},
		{"spaces, tabs and newlines separate", "RequestStatus\teq\n'Active'", true},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			f, err := emulator.ParseFilter(tc.filter)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(f.Match(filterProps)).To(Equal(tc.match))
		})
	}
}

func TestParseFilterRejects(t *testing.T) {
	cases := []struct{ reason, filter, inError string }{
		{"or is not a PAM operator", "RequestStatus eq 'Active' or RequestStatus eq 'Closed'", "'or' is not supported"},
		{"or inside parentheses", "(a eq 1 or b eq 2)", "'or' is not supported"},
		{"not", "not (a eq 1)", "'not' is not supported"},
		{"functions", "substringof('x', Justification)", "functions such as substringof() are not supported"},
		{"an unterminated string", "Justification eq 'abc", "unterminated"},
		{"an unbalanced quote in the middle", "Justification eq 'it's urgent'", "unterminated"},
		{"an unterminated guid", "RequestId eq guid'5ec10e61", "unterminated"},
		{"a bad guid", "RequestId eq guid'xyz'", "not a GUID"},
		{"a bad datetime", "CreationTime gt datetime'yesterday'", "not a date"},
		{"an unknown literal type", "X eq binary'00'", "unsupported literal type"},
		{"an unknown operator", "RequestedTTL like 3", "unsupported operator"},
		{"a symbolic operator", "RequestedTTL = 3", "unexpected character '='"},
		{"no value", "RequestedTTL eq", "expected a value"},
		{"no operator", "RequestedTTL", "expected an operator"},
		{"the value first", "3 eq RequestedTTL", "expected a property name"},
		{"two properties", "a eq b", "expected a value"},
		{"a decimal", "RequestedTTL eq 3.5", "unexpected character '.'"},
		{"a lone minus", "RequestedTTL eq -", "not an integer"},
		{"a number out of range", "RequestedTTL eq 99999999999999999999", "not an integer"},
		{"a missing parenthesis", "(RequestedTTL eq 3", "missing ')'"},
		{"an extra parenthesis", "RequestedTTL eq 3)", `unexpected ")"`},
		{"empty parentheses", "()", "expected a property name"},
		{"garbage after the expression", "RequestedTTL eq 3 $$", "unexpected character '$'"},
		{"two comparisons without and", "a eq 1 b eq 2", "expected 'and'"},
		{"a dangling and", "RequestedTTL eq 3 and", "ends where a comparison"},
		{"only and", "and", "expected an operator"},
		{"non-ASCII", "Justification eq 'ok' and é eq 1", "unexpected character"},
		{"too deep", strings.Repeat("(", 40) + "a eq 1" + strings.Repeat(")", 40), "nested deeper"},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			_, err := emulator.ParseFilter(tc.filter)
			NewWithT(t).Expect(err).To(MatchError(ContainSubstring(tc.inError)))
		})
	}
}

func TestFilterProperties(t *testing.T) {
	g := NewWithT(t)
	f, err := emulator.ParseFilter("(RequestId eq guid'5ec10e61-cdd1-404e-a18e-740467d87dbf') and requestedTTL gt 1 and (a eq 1 and (b eq 2))")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(f.Properties()).To(Equal([]string{"RequestId", "requestedTTL", "a", "b"}))
	g.Expect(emulator.Filter{}.Properties()).To(BeEmpty())
	g.Expect(emulator.Filter{}.Match(nil)).To(BeTrue(), "the zero Filter matches everything")
}

func FuzzParseFilter(f *testing.F) {
	for _, seed := range []string{
		"",
		"RequestId eq guid'5ec10e61-cdd1-404e-a18e-740467d87dbf'",
		"CreationTime gt datetime'2015-06-12T04:49:32.431Z' and CreationTime lt datetime'2015-07-13T04:49:32.432Z'",
		"(Justification eq 'x''y') and DisplayName ne null and RequestedTTL ge -5",
		"((((RequestStatus eq 'Active'))))",
		"MFAEnabled eq true and ExpirationTime eq datetime'2015-06-12T04:49:32'",
		"a or b",
		"not (a eq 1)",
		"f(x) eq 'y'",
		"'unterminated",
		"guid'",
		"-",
		strings.Repeat("(", 100),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		filter, err := emulator.ParseFilter(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an error must say what was not understood")
			}
			return
		}
		_ = filter.Match(filterProps)
		_ = filter.Match(nil)
		_ = filter.Properties()
	})
}

// Equals finds the id a filter pins, so the emulator can look it up as an index would; anything
// else is left to a scan.
func TestFilterEquals(t *testing.T) {
	const id = "5ec10e61-cdd1-404e-a18e-740467d87dbf"
	for _, tc := range []struct {
		filter string
		want   string
		pinned bool
	}{
		{"RequestId eq guid'" + id + "'", id, true},
		{"CreationTime ge datetime'2026-01-01T00:00:00' and requestid eq '" + id + "'", id, true},
		{"RequestId ne guid'" + id + "'", "", false},
		{"CreationTime ge datetime'2026-01-01T00:00:00'", "", false},
		{"", "", false},
	} {
		f, err := emulator.ParseFilter(tc.filter)
		if err != nil {
			t.Fatalf("%q: %v", tc.filter, err)
		}
		got, ok := f.Equals("RequestId")
		if got != tc.want || ok != tc.pinned {
			t.Errorf("%q: Equals(RequestId) = %q, %v; want %q, %v", tc.filter, got, ok, tc.want, tc.pinned)
		}
	}
}
