package pam

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/pam-operator/pam-operator/pamapi"
)

func TestParseErrorBody(t *testing.T) {
	cases := []struct {
		reason    string
		body      string
		code, msg string
	}{
		{"OData v3, as ASP.NET Web API writes it",
			`{"odata.error":{"code":"","message":{"lang":"en-US","value":"The request is not open."}}}`, "", "The request is not open."},
		{"OData v3 with a code",
			`{"odata.error":{"code":"RequestNotFound","message":{"lang":"en-US","value":"No such request"}}}`, "RequestNotFound", "No such request"},
		{"OData v4", `{"error":{"code":"Forbidden","message":"Access denied"}}`, "Forbidden", "Access denied"},
		{"property names in another case", `{"Error":{"Code":"X","Message":"y"}}`, "X", "y"},
		{"IIS HTML page", `<html><body><h1>401 - Unauthorized</h1></body></html>`, "", ""},
		{"empty", ``, "", ""},
		{"invalid JSON", `{"odata.error":`, "", ""},
		{"message of the wrong type", `{"error":{"code":1,"message":[1,2]}}`, "1", ""},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			code, msg := parseErrorBody([]byte(tc.body))
			g.Expect(code).To(Equal(tc.code))
			g.Expect(msg).To(Equal(tc.msg))
		})
	}
}

func TestDecodeRequest(t *testing.T) {
	g := NewWithT(t)
	// The documentation's own examples: string TTL, an offset with 7 fractional digits, the
	// unset expiry without a zone, and property names spelled two ways.
	body := `{"odata.metadata":"http://localhost:8086/api/pamresources/$metadata#pamrequests","value":[
	  {"RequestId":"5EC10E61-CDD1-404E-A18E-740467D87DBF","CreatorID":"7c8a2a9d-0f5a-4b1a-9d50-0d5b3c2f1e11",
	   "Justification":null,"CreationTime":"2015-07-11T23:38:09.0361640-07:00","CreationMethod":"PAM Web API",
	   "ExpirationTime":"0001-01-01T00:00:00","RoleId":"2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d",
	   "RequestedTTL":"3600","RequestedTime":"2015-06-23T11:34:38.58Z","RequestStatus":"PendingApproval"},
	  {"RequestID":"0c4f4c2e-8f0d-4b8e-9a36-2f1c3d2b7a10","RoleID":"2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d",
	   "RequestedTTL":7200,"ExpirationTime":"2015-06-23T13:34:38Z","RequestedStatus":"Active"}
	]}`
	reqs, err := decodeAll([]byte(body))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(reqs).To(HaveLen(2))

	first := reqs[0]
	g.Expect(first.ID).To(Equal("5ec10e61-cdd1-404e-a18e-740467d87dbf"))
	g.Expect(first.Status).To(Equal(pamapi.StatusPendingApproval))
	g.Expect(first.RequestedTTL).To(Equal(time.Hour))
	g.Expect(first.ExpirationTime.IsZero()).To(BeTrue())
	g.Expect(first.Justification).To(BeEmpty())
	g.Expect(first.CreationTime).To(Equal(time.Date(2015, 7, 12, 6, 38, 9, 36164000, time.UTC)))
	g.Expect(first.RequestedTime).To(Equal(time.Date(2015, 6, 23, 11, 34, 38, 580000000, time.UTC)))

	second := reqs[1]
	g.Expect(second.ID).To(Equal("0c4f4c2e-8f0d-4b8e-9a36-2f1c3d2b7a10"))
	g.Expect(second.Status).To(Equal(pamapi.StatusActive))
	g.Expect(second.RequestedTTL).To(Equal(2 * time.Hour))
	g.Expect(second.ExpirationTime).To(Equal(time.Date(2015, 6, 23, 13, 34, 38, 0, time.UTC)))
}

// TestUnknownRequestStatus: a state PAM does not document is kept as it came, so that status
// shows it, but bounded and made printable, and never taken as ended.
func TestUnknownRequestStatus(t *testing.T) {
	for _, st := range pamapi.Statuses {
		if !st.Known() {
			t.Errorf("%s is documented, but not Known", st)
		}
	}
	cases := []struct {
		reason string
		json   string // the property's value as PAM writes it
		want   string
	}{
		{"a new state is kept", `"Exploded"`, "Exploded"},
		{"control and bidi characters are replaced", `"Act\u001b[2Jive\u202e\n"`, "Act\ufffd[2Jive\ufffd "},
		{"invalid UTF-8 is replaced", "\"Clo\xffsed\"", "Clo\ufffdsed"},
		{"1 MiB is cut to 64 bytes", `"` + strings.Repeat("X", 1<<20) + `"`, strings.Repeat("X", maxStatusLen-len("…")) + "…"},
		{"a cut never splits a character", `"` + strings.Repeat("é", 1<<10) + `"`, strings.Repeat("é", (maxStatusLen-len("…"))/2) + "…"},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			reqs, err := decodeAll([]byte(`{"value":[{"RequestId":"a","RequestStatus":` + tc.json + `}]}`))
			g.Expect(err).NotTo(HaveOccurred())
			got := reqs[0].Status
			g.Expect(string(got)).To(Equal(tc.want))
			g.Expect(len(got)).To(BeNumerically("<=", maxStatusLen))
			g.Expect(got.Known()).To(BeFalse())
			g.Expect(got.Ended()).To(BeFalse(), "an unknown state is never the end")
		})
	}
}

// decodeAll decodes a whole list answer.
func decodeAll(body []byte) ([]Request, error) {
	var reqs []Request
	err := decodeRequests(bytes.NewReader(body), func(r Request) { reqs = append(reqs, r) })
	return reqs, err
}

// A value of null holds no requests; other properties, whatever they hold, are skipped.
func TestDecodeRequestsSkipsOtherProperties(t *testing.T) {
	g := NewWithT(t)
	reqs, err := decodeAll([]byte(`{"odata.metadata":{"nested":[1,2,{"value":[]}]},"VALUE":null,"odata.count":3}`))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(reqs).To(BeEmpty())
	reqs, err = decodeAll([]byte(`{"value":[{"RequestId":"A"}],"odata.nextLink":"x"}`))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(reqs).To(HaveLen(1))
	g.Expect(reqs[0].ID).To(Equal("a"))
}

func TestDecodeRequestsRejectsBadAnswers(t *testing.T) {
	cases := []struct{ reason, body string }{
		{"not JSON", `<html></html>`},
		{"no value", `{"odata.metadata":"x"}`},
		{"value not an array", `{"value":{}}`},
		{"request without id", `{"value":[{"RequestStatus":"Active"}]}`},
		{"unparseable time", `{"value":[{"RequestId":"x","CreationTime":"yesterday"}]}`},
		{"TTL not a number", `{"value":[{"RequestId":"x","RequestedTTL":"an hour"}]}`},
		{"cut short", `{"value":[{"RequestId":"x"}`},
		{"two value arrays", `{"value":[],"Value":[{"RequestId":"x"}]}`},
		{"data after the answer", `{"value":[]} {"value":[]}`},
		{"an array", `[{"RequestId":"x"}]`},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			_, err := decodeAll([]byte(tc.body))
			NewWithT(t).Expect(err).To(HaveOccurred())
		})
	}
}

func TestGUIDLiteral(t *testing.T) {
	cases := []struct {
		reason, in, want string
		ok               bool
	}{
		{"lower case", "5ec10e61-cdd1-404e-a18e-740467d87dbf", "guid'5ec10e61-cdd1-404e-a18e-740467d87dbf'", true},
		{"upper case is normalised", "5EC10E61-CDD1-404E-A18E-740467D87DBF", "guid'5ec10e61-cdd1-404e-a18e-740467d87dbf'", true},
		{"braces", "{5ec10e61-cdd1-404e-a18e-740467d87dbf}", "", false},
		{"quote injection", "5ec10e61-cdd1-404e-a18e-740467d87db'", "", false},
		{"empty", "", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			got, err := GUIDLiteral(tc.in)
			if !tc.ok {
				g.Expect(err).To(HaveOccurred())
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got).To(Equal(tc.want))
		})
	}
}

func FuzzParseErrorBody(f *testing.F) {
	f.Add([]byte(`{"odata.error":{"code":"","message":{"lang":"en-US","value":"x"}}}`))
	f.Add([]byte(`{"error":{"code":"c","message":"m"}}`))
	f.Add([]byte(`<html></html>`))
	f.Fuzz(func(t *testing.T, body []byte) {
		_, msg := parseErrorBody(body)
		if len(msg) > maxMessageLen+len("…") {
			t.Fatalf("message not bounded: %d bytes", len(msg))
		}
	})
}

func FuzzDecodeRequests(f *testing.F) {
	f.Add([]byte(`{"value":[{"RequestId":"a","RequestedTTL":"3600","ExpirationTime":"0001-01-01T00:00:00"}]}`))
	f.Add([]byte(`{"value":[{"requestid":"a","CreationTime":"2015-07-11T23:38:09.036164-07:00"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		_, _ = decodeAll(body)
	})
}

func FuzzGUIDLiteral(f *testing.F) {
	f.Add("5ec10e61-cdd1-404e-a18e-740467d87dbf")
	f.Add("5EC10E61-CDD1-404E-A18E-740467D87DBF")
	f.Add("5ec10e61-cdd1-404e-a18e-740467d87db'")
	f.Add("{5ec10e61-cdd1-404e-a18e-740467d87dbf}")
	f.Fuzz(func(t *testing.T, id string) {
		lit, err := GUIDLiteral(id)
		if err != nil {
			return
		}
		// Whatever came in, what goes into a URL is exactly guid'<36 lower-case hex and dashes>'.
		inner := strings.TrimSuffix(strings.TrimPrefix(lit, "guid'"), "'")
		if len(lit) != 42 || len(inner) != 36 || strings.Trim(inner, "0123456789abcdef-") != "" {
			t.Fatalf("GUIDLiteral(%q) = %q", id, lit)
		}
	})
}

// BenchmarkDecodeRequests decodes a list of 10,000 requests, the answer a periodic sync of a
// server with that many open elevations gets.
func BenchmarkDecodeRequests(b *testing.B) {
	var body bytes.Buffer
	body.WriteString(`{"odata.metadata":"http://pam/api/pamresources/$metadata#pamrequests","value":[`)
	for i := range 10000 {
		if i > 0 {
			body.WriteByte(',')
		}
		fmt.Fprintf(&body, `{"RequestId":"5ec10e61-cdd1-404e-a18e-%012d","CreatorID":"7c8a2a9d-0f5a-4b1a-9d50-0d5b3c2f1e11",`+
			`"Justification":"ticket %d","CreationTime":"2026-11-29T10:00:00.0361640Z","CreationMethod":"PAM Web API",`+
			`"ExpirationTime":"2026-11-29T18:00:00Z","RoleId":"2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d",`+
			`"RequestedTTL":"28800","RequestedTime":"2026-11-29T10:00:00Z","RequestStatus":"Active"}`, i, i)
	}
	body.WriteString(`]}`)
	b.SetBytes(int64(body.Len()))
	b.ReportAllocs()
	for b.Loop() {
		if err := decodeRequests(bytes.NewReader(body.Bytes()), func(Request) {}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDecodeRoles: a role as the documentation describes it (TTL a string of seconds) and as a
// tolerant reader meets it (a number, booleans as strings, the tables' spelling RoleID), and
// window bounds whose time of day must survive: an offset kept, a date-less clock kept.
func TestDecodeRoles(t *testing.T) {
	g := NewWithT(t)
	body := `{"odata.metadata":"…#pamroles","value":[
	  {"RoleId":"5EC10E61-CDD1-404E-A18E-740467D87DBF","DisplayName":"SQL File Access","Description":"db\u001b[2J",
	   "TTL":"3600","AvailableFrom":"2015-09-25T08:00:00-07:00","AvailableTo":"0001-01-01T17:30:00",
	   "MFAEnabled":true,"ApprovalEnabled":"True","AvailabilityWindowEnabled":true},
	  {"RoleID":"2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d","DisplayName":" Ops ","TTL":7200,
	   "AvailableFrom":"0001-01-01T00:00:00","MFAEnabled":null}
	]}`
	roles, err := decodeRoles(strings.NewReader(body))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(roles).To(HaveLen(2))

	first := roles[0]
	g.Expect(first.ID).To(Equal("5ec10e61-cdd1-404e-a18e-740467d87dbf"))
	g.Expect(first.DisplayName).To(Equal("SQL File Access"))
	g.Expect(first.Description).To(Equal("db\ufffd[2J"), "shown only: made printable")
	g.Expect(first.TTL).To(Equal(time.Hour))
	g.Expect([]bool{first.MFAEnabled, first.ApprovalEnabled, first.AvailabilityWindowEnabled}).To(Equal([]bool{true, true, true}))
	g.Expect(first.AvailableFrom.Format("15:04 -07:00")).To(Equal("08:00 -07:00"), "the time of day on PAM's clock")
	g.Expect(first.AvailableTo.Format("15:04")).To(Equal("17:30"), "a date-less bound keeps its clock")

	second := roles[1]
	g.Expect(second.ID).To(Equal("2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d"))
	g.Expect(second.DisplayName).To(Equal(" Ops "), "a name is matched exactly: kept as sent")
	g.Expect(second.TTL).To(Equal(2 * time.Hour))
	g.Expect(second.MFAEnabled || second.ApprovalEnabled || second.AvailabilityWindowEnabled).To(BeFalse())
	g.Expect(second.AvailableFrom.IsZero()).To(BeTrue(), "PAM's unset time")
	g.Expect(second.AvailableTo.IsZero()).To(BeTrue(), "absent")
}

func TestDecodeRolesRefuses(t *testing.T) {
	cases := []struct {
		reason, role, inError string
	}{
		{"no id", `{"DisplayName":"x"}`, "RoleId"},
		{"an id that is not a GUID", `{"RoleId":"admins"}`, "not a GUID"},
		{"a TTL that is not seconds", `{"RoleId":"` + testRoleID + `","TTL":"1h"}`, "TTL"},
		{"a negative TTL", `{"RoleId":"` + testRoleID + `","TTL":-5}`, "TTL"},
		{"a flag that is not a boolean", `{"RoleId":"` + testRoleID + `","MFAEnabled":"maybe"}`, "MFAEnabled"},
		{"a bound that is not a time", `{"RoleId":"` + testRoleID + `","AvailableTo":"5pm"}`, "AvailableTo"},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			_, err := decodeRoles(strings.NewReader(`{"value":[` + tc.role + `]}`))
			NewWithT(t).Expect(err).To(MatchError(And(ContainSubstring("value[0]"), ContainSubstring(tc.inError))))
		})
	}
}

const testRoleID = "2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d"
