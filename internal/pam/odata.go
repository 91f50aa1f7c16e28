package pam

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

const (
	// maxMessageLen bounds what an error message carries into conditions and logs.
	maxMessageLen = 256
	// maxStatusLen bounds a RequestStatus: the documented ones are at most 15 bytes, and an
	// unknown one is shown in status as it came, so a hostile one must not fill it.
	maxStatusLen = 64
)

// parseErrorBody extracts an OData code and message from an error answer. It accepts the OData
// v3 shape {"odata.error":{"code","message":{"value"}}}, the v4 shape {"error":{"code","message"}},
// and anything else (an HTML page from IIS or a proxy, an empty body) as no detail.
func parseErrorBody(body []byte) (code, message string) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return "", ""
	}
	var doc map[string]json.RawMessage
	if json.Unmarshal(body, &doc) != nil {
		return "", ""
	}
	raw, ok := lookupFold(doc, "odata.error")
	if !ok {
		if raw, ok = lookupFold(doc, "error"); !ok {
			return "", ""
		}
	}
	var inner map[string]json.RawMessage
	if json.Unmarshal(raw, &inner) != nil {
		return "", ""
	}
	if c, ok := lookupFold(inner, "code"); ok {
		code = jsonString(c)
	}
	if m, ok := lookupFold(inner, "message"); ok {
		message = jsonString(m)
		if message == "" {
			var v3 map[string]json.RawMessage
			if json.Unmarshal(m, &v3) == nil {
				if val, ok := lookupFold(v3, "value"); ok {
					message = jsonString(val)
				}
			}
		}
	}
	return truncate(code, 64), truncate(message, maxMessageLen)
}

// decodeRequests reads a list answer {"value":[…]} as it arrives, handing each request to each
// in turn. It decodes only the properties it keeps: a list of the account's requests may hold
// thousands, and neither the answer nor the list of them is held whole.
func decodeRequests(r io.Reader, each func(Request)) error {
	return decodeValues(r, func(dec *json.Decoder) error {
		var props requestProps
		if err := dec.Decode(&props); err != nil {
			return err
		}
		req, err := props.request()
		if err != nil {
			return err
		}
		each(*req)
		return nil
	})
}

// maxRoles bounds the roles a list answer may hold: an account is a candidate for a few dozen,
// and the list is held whole.
const maxRoles = 4096

// maxDescriptionLen bounds a role's description, which is only ever shown.
const maxDescriptionLen = 1 << 10

// decodeRoles reads a roles answer {"value":[…]}; more than maxRoles is ErrAnswerTooLarge.
func decodeRoles(r io.Reader) ([]Role, error) {
	var roles []Role
	err := decodeValues(r, func(dec *json.Decoder) error {
		if len(roles) == maxRoles {
			return fmt.Errorf("more than %d roles: %w", maxRoles, ErrAnswerTooLarge)
		}
		var props roleProps
		if err := dec.Decode(&props); err != nil {
			return err
		}
		role, err := props.role()
		if err != nil {
			return err
		}
		roles = append(roles, role)
		return nil
	})
	return roles, err
}

// decodeValues reads a list answer {"value":[…]} as it arrives, calling item to decode each
// element in turn. A "value" property is found whatever its case, as encoding/json would; null
// holds nothing.
func decodeValues(r io.Reader, item func(*json.Decoder) error) error {
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{'); err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	found := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("invalid JSON: %w", err)
		}
		if name, _ := tok.(string); !strings.EqualFold(name, "value") {
			var skipped json.RawMessage
			if err := dec.Decode(&skipped); err != nil {
				return fmt.Errorf("invalid JSON: %w", err)
			}
			continue
		}
		if found {
			return fmt.Errorf("answer has more than one value array")
		}
		found = true
		tok, err = dec.Token()
		if err != nil {
			return fmt.Errorf("invalid JSON: %w", err)
		}
		if tok == nil {
			continue
		}
		if delim, _ := tok.(json.Delim); delim != '[' {
			return fmt.Errorf("value is not an array")
		}
		for i := 0; dec.More(); i++ {
			if err := item(dec); err != nil {
				return fmt.Errorf("value[%d]: %w", i, err)
			}
		}
		if err := expectDelim(dec, ']'); err != nil {
			return fmt.Errorf("invalid JSON: %w", err)
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	if !found {
		return fmt.Errorf("answer has no value array")
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("invalid JSON: data after the answer")
	}
	return nil
}

// expectDelim reads the next token, which must be want.
func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if delim, ok := tok.(json.Delim); !ok || delim != want {
		return fmt.Errorf("expected %q, found %v", want, tok)
	}
	return nil
}

// decodeRequest reads one request object.
func decodeRequest(raw []byte) (*Request, error) {
	var props requestProps
	if err := json.Unmarshal(raw, &props); err != nil {
		return nil, fmt.Errorf("request is not an object: %w", err)
	}
	return props.request()
}

// requestProps are the properties of a request PAM answers with. encoding/json matches the names
// case-insensitively, as PAM's own documentation spells them both RequestId and RequestID.
type requestProps struct {
	RequestID, CreatorID, RoleID, Justification, DisplayName, CreationMethod scalar
	CreationTime, RequestedTime, ExpirationTime                              scalar
	RequestStatus, RequestedStatus, RequestedTTL                             scalar
}

// scalar is a JSON scalar as text (see jsonString): numbers may come as strings, or the reverse.
type scalar string

func (s *scalar) UnmarshalJSON(raw []byte) error {
	*s = scalar(jsonString(raw))
	return nil
}

func (p *requestProps) request() (*Request, error) {
	var err error
	timeProp := func(name string, s scalar) time.Time {
		if s == "" || err != nil {
			return time.Time{}
		}
		var t time.Time
		if t, err = ParseTime(string(s)); err != nil {
			err = fmt.Errorf("%s: %w", name, err)
		}
		return t
	}
	r := &Request{
		ID:             strings.ToLower(string(p.RequestID)),
		CreatorID:      strings.ToLower(string(p.CreatorID)),
		RoleID:         strings.ToLower(string(p.RoleID)),
		Justification:  string(p.Justification),
		DisplayName:    string(p.DisplayName),
		CreationMethod: string(p.CreationMethod),
		CreationTime:   timeProp("CreationTime", p.CreationTime),
		RequestedTime:  timeProp("RequestedTime", p.RequestedTime),
		ExpirationTime: timeProp("ExpirationTime", p.ExpirationTime),
	}
	if err != nil {
		return nil, err
	}
	status := p.RequestStatus
	if status == "" {
		status = p.RequestedStatus
	}
	r.Status = RequestStatus(printable(string(status), maxStatusLen))
	if ttl := string(p.RequestedTTL); ttl != "" {
		if r.RequestedTTL, err = parseSeconds(ttl); err != nil {
			return nil, fmt.Errorf("RequestedTTL: %w", err)
		}
	}
	if r.ID == "" {
		return nil, fmt.Errorf("request has no RequestId")
	}
	return r, nil
}

// roleProps are the properties of a role PAM answers with, matched case-insensitively as
// requestProps are (the tables spell it RoleID, the examples RoleId).
type roleProps struct {
	RoleID, DisplayName, Description, TTL                  scalar
	MFAEnabled, ApprovalEnabled, AvailabilityWindowEnabled scalar
	AvailableFrom, AvailableTo                             scalar
}

func (p *roleProps) role() (Role, error) {
	id, err := NormalizeID(string(p.RoleID))
	if err != nil {
		return Role{}, fmt.Errorf("RoleId: %w", err)
	}
	r := Role{ID: id, DisplayName: string(p.DisplayName), Description: printable(string(p.Description), maxDescriptionLen)}
	if ttl := string(p.TTL); ttl != "" {
		if r.TTL, err = parseSeconds(ttl); err != nil {
			return Role{}, fmt.Errorf("TTL: %w", err)
		}
	}
	flags := []struct {
		name string
		raw  scalar
		to   *bool
	}{
		{"MFAEnabled", p.MFAEnabled, &r.MFAEnabled},
		{"ApprovalEnabled", p.ApprovalEnabled, &r.ApprovalEnabled},
		{"AvailabilityWindowEnabled", p.AvailabilityWindowEnabled, &r.AvailabilityWindowEnabled},
	}
	for _, f := range flags {
		if f.raw == "" {
			continue
		}
		if *f.to, err = strconv.ParseBool(string(f.raw)); err != nil {
			return Role{}, fmt.Errorf("%s %q is not a boolean", f.name, truncate(string(f.raw), 32))
		}
	}
	if r.AvailableFrom, err = parseTimeOfDay(string(p.AvailableFrom)); err != nil {
		return Role{}, fmt.Errorf("AvailableFrom: %w", err)
	}
	if r.AvailableTo, err = parseTimeOfDay(string(p.AvailableTo)); err != nil {
		return Role{}, fmt.Errorf("AvailableTo: %w", err)
	}
	return r, nil
}

// parseSeconds reads a lifetime PAM writes as seconds, a string or a number.
func parseSeconds(s string) (time.Duration, error) {
	secs, err := strconv.ParseFloat(s, 64)
	if err != nil || secs < 0 || secs > 1e9 {
		return 0, fmt.Errorf("%q is not a number of seconds", truncate(s, 32))
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// parseTimeOfDay reads a window bound in the forms ParseTime does, keeping the zone it was
// written in and the clock of a date-less value ("0001-01-01T08:00:00"): only the time of day
// counts.
func parseTimeOfDay(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	t, err := time.Parse("2006-01-02T15:04:05.999999999", s)
	if err != nil {
		return time.Time{}, fmt.Errorf("unrecognised time %q", truncate(s, 40))
	}
	return t, nil
}

// ParseTime reads the timestamp forms PAM answers with: RFC 3339 with any number of fractional
// digits and a zone ("2015-06-23T11:34:38.58Z", "2015-07-11T23:38:09.036164-07:00"), or without
// a zone, taken as UTC. "0001-01-01T00:00:00" means not set and yields the zero time.
func ParseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	t, err := time.Parse("2006-01-02T15:04:05.999999999", s)
	if err != nil {
		return time.Time{}, fmt.Errorf("unrecognised time %q", truncate(s, 40))
	}
	if t.Year() <= 1 {
		return time.Time{}, nil
	}
	return t, nil
}

// lookupFold finds a property by case-insensitive name, preferring an exact match.
func lookupFold(props map[string]json.RawMessage, name string) (json.RawMessage, bool) {
	if v, ok := props[name]; ok {
		return v, true
	}
	for k, v := range props {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return nil, false
}

// jsonString renders a JSON scalar as text: strings unquoted, numbers as written, null as "".
func jsonString(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return ""
	}
	if raw[0] == '"' {
		// Most strings have no escapes: read them without a decoder of their own.
		if len(raw) >= 2 && raw[len(raw)-1] == '"' {
			if inner := raw[1 : len(raw)-1]; bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
				return string(inner)
			}
		}
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
		return ""
	}
	if raw[0] == '{' || raw[0] == '[' {
		return ""
	}
	return string(raw)
}

// printable returns text from PAM made safe to show: invalid UTF-8 and control or format
// characters (bidi overrides among them, which can make a log line or a kubectl column lie)
// become U+FFFD, other white space a space; and it is cut to at most n bytes, an ellipsis
// marking the cut.
func printable(s string, n int) string {
	if len(s) <= n && plainASCII(s) {
		return s
	}
	const ellipsis = "…"
	out := make([]byte, 0, min(len(s), n))
	for _, r := range s {
		switch {
		case unicode.IsPrint(r):
		case unicode.IsSpace(r):
			r = ' '
		default:
			r = utf8.RuneError
		}
		if len(out)+utf8.RuneLen(r) > n {
			m := max(n-len(ellipsis), 0)
			for m > 0 && m < len(out) && !utf8.RuneStart(out[m]) {
				m--
			}
			return string(out[:min(m, len(out))]) + ellipsis
		}
		out = utf8.AppendRune(out, r)
	}
	return string(out)
}

// plainASCII reports whether s is printable ASCII only, which printable leaves as it is.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
