package emulator_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/pamapi"
)

const (
	jen = `PRIV\jen`
	ann = `PRIV\ann`
	bob = `PRIV\bob` // a requester who is nobody's approver
)

var passwords = map[string]string{jen: "jen-pw", ann: "ann-pw", bob: "bob-pw"}

// start is the fake clock's initial time; the fractional seconds exercise the time format.
var start = time.Date(2015, 6, 23, 11, 34, 38, 580_000_000, time.UTC)

// fakeClock is a settable clock for expiry tests.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type fixture struct {
	emu   *emulator.Server
	srv   *httptest.Server
	clock *fakeClock
}

// newFixture serves an emulator over real HTTP with jen, ann and bob as accounts and a fake clock,
// unless opts says otherwise.
func newFixture(t *testing.T, opts emulator.Options) *fixture {
	t.Helper()
	if opts.Users == nil {
		opts.Users = passwords
	}
	clock := &fakeClock{now: start}
	if opts.Now == nil {
		opts.Now = clock.Now
	}
	emu := emulator.New(opts)
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	return &fixture{emu: emu, srv: srv, clock: clock}
}

type response struct {
	status int
	body   string
	header http.Header
}

// send sends one request as user ("" for none) with Content-Length set as Go's client does.
func (f *fixture) send(t *testing.T, user, method, path, body string) response {
	t.Helper()
	resp, err := f.try(context.Background(), user, method, path, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// try is send that hands back the transport error, for faults that break the connection.
func (f *fixture) try(ctx context.Context, user, method, path, body string) (response, error) {
	req, err := http.NewRequestWithContext(ctx, method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if user != "" {
		req.SetBasicAuth(user, passwords[user])
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, body: string(data), header: resp.Header}, err
}

func (f *fixture) list(t *testing.T, user, filter string) []map[string]any {
	t.Helper()
	path := "/api/pamresources/pamrequests"
	if filter != "" {
		path += "?$filter=" + url.QueryEscape(filter)
	}
	resp := f.send(t, user, http.MethodGet, path, "")
	if resp.status != http.StatusOK {
		t.Fatalf("list %q: %d %s", filter, resp.status, resp.body)
	}
	return decodeList(t, resp.body)
}

func (f *fixture) seed(owner string) string {
	return f.emu.AddRequest(emulator.Request{Owner: owner, RoleID: someRole, RequestedTTL: time.Hour}).ID
}

const someRole = "2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d"

func decodeObject(t *testing.T, body string) map[string]any {
	t.Helper()
	var obj map[string]any
	if err := json.Unmarshal([]byte(body), &obj); err != nil {
		t.Fatalf("not a JSON object: %v: %s", err, body)
	}
	return obj
}

func decodeList(t *testing.T, body string) []map[string]any {
	t.Helper()
	var doc struct {
		Value []map[string]any `json:"value"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil || doc.Value == nil {
		t.Fatalf("not an OData list: %v: %s", err, body)
	}
	return doc.Value
}

// odataMessage returns the message of an OData v3 error body, failing the test for any other body.
func odataMessage(t *testing.T, body string) string {
	t.Helper()
	var doc struct {
		Error *struct {
			Code    string
			Message struct{ Lang, Value string }
		} `json:"odata.error"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil || doc.Error == nil || doc.Error.Code == "" ||
		doc.Error.Message.Lang != "en-US" {
		t.Fatalf("not an OData v3 error: %s", body)
	}
	return doc.Error.Message.Value
}

func closePath(id string) string { return "/api/pamresources/pamrequests(guid'" + id + "')/Close" }

func TestCreateRequest(t *testing.T) {
	f := newFixture(t, emulator.Options{})
	role := f.emu.AddRole(emulator.Role{DisplayName: "SQL File Access", TTL: 2 * time.Hour})
	guarded := f.emu.AddRole(emulator.Role{DisplayName: "Domain Admins", ApprovalEnabled: true, Approvers: []string{ann}})
	cases := []struct {
		reason, query, body string
		status              int
		requestStatus       string
		expiration          string
		requestedTime       string
		inError             string
	}{
		{reason: "properties as query parameters, as one documentation page shows",
			query: "RoleId=" + role.ID + "&RequestedTTL=3600&Justification=fix", status: 201,
			requestStatus: "Active", expiration: "2015-06-23T12:34:38.58Z"},
		{reason: "properties in a JSON body, names in any case, the TTL a number",
			body: `{"roleid":"` + strings.ToUpper(role.ID) + `","requestedTTL":600,"JUSTIFICATION":null}`, status: 201,
			requestStatus: "Active", expiration: "2015-06-23T11:44:38.58Z"},
		{reason: "the TTL as a string, a requested start time",
			body: `{"RoleId":"` + role.ID + `","RequestedTTL":"60","RequestedTime":"2015-06-23T12:00:00Z"}`, status: 201,
			requestStatus: "Active", expiration: "2015-06-23T11:35:38.58Z", requestedTime: "2015-06-23T12:00:00Z"},
		{reason: "a role with approval leaves the request pending, its expiry unset without a zone",
			query: "RoleId=" + guarded.ID + "&RequestedTTL=600", status: 201,
			requestStatus: "PendingApproval", expiration: "0001-01-01T00:00:00"},
		{reason: "an unknown role", query: "RoleId=" + someRole + "&RequestedTTL=60", status: 400, inError: "No PAM role"},
		{reason: "no role", query: "RequestedTTL=60", status: 400, inError: "RoleId is required"},
		{reason: "a role id that is not a GUID", query: "RoleId=admins&RequestedTTL=60", status: 400, inError: "GUID"},
		{reason: "no TTL", query: "RoleId=" + role.ID, status: 400, inError: "RequestedTTL is required"},
		{reason: "a TTL that is not seconds", query: "RoleId=" + role.ID + "&RequestedTTL=1h", status: 400, inError: "RequestedTTL"},
		{reason: "a TTL beyond the role's", query: "RoleId=" + role.ID + "&RequestedTTL=7201", status: 400, inError: "exceeds"},
		{reason: "a bad requested time", query: "RoleId=" + role.ID + "&RequestedTTL=60&RequestedTime=soon", status: 400, inError: "RequestedTime"},
		{reason: "a body that is not a JSON object", body: `["x"]`, status: 400, inError: "not a JSON object"},
		{reason: "a property of the wrong JSON type", body: `{"RoleId":"` + role.ID + `","RequestedTTL":true}`, status: 400, inError: "RequestedTTL"},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			path := "/api/pamresources/pamrequests"
			if tc.query != "" {
				path += "?" + tc.query
			}
			resp := f.send(t, jen, http.MethodPost, path, tc.body)
			g.Expect(resp.status).To(Equal(tc.status), resp.body)
			g.Expect(resp.header.Get("Content-Type")).To(HavePrefix("application/json"))
			if tc.status != 201 {
				g.Expect(odataMessage(t, resp.body)).To(ContainSubstring(tc.inError))
				return
			}
			created := decodeObject(t, resp.body)
			g.Expect(created).To(HaveKeyWithValue("odata.metadata", f.srv.URL+"/api/pamresources/$metadata#pamrequests/@Element"))
			g.Expect(created).To(HaveKeyWithValue("RequestStatus", tc.requestStatus))
			g.Expect(created).To(HaveKeyWithValue("ExpirationTime", tc.expiration))
			g.Expect(created).To(HaveKeyWithValue("CreationTime", "2015-06-23T11:34:38.58Z"))
			g.Expect(created["RequestedTTL"]).To(BeAssignableToTypeOf(""), "PAM writes the TTL as a string")
			if tc.requestedTime != "" {
				g.Expect(created).To(HaveKeyWithValue("RequestedTime", tc.requestedTime))
			}
			stored, ok := f.emu.Request(created["RequestId"].(string))
			g.Expect(ok).To(BeTrue())
			g.Expect(stored.Owner).To(Equal(jen))
			g.Expect(string(stored.Status)).To(Equal(tc.requestStatus))
		})
	}
}

func TestRequestSerialisation(t *testing.T) {
	g := NewWithT(t)
	f := newFixture(t, emulator.Options{})
	active := f.emu.AddRequest(emulator.Request{Owner: jen, RoleID: strings.ToUpper(someRole), RequestedTTL: time.Hour, Justification: "it's urgent"})
	f.emu.AddRequest(emulator.Request{Owner: jen, RoleID: someRole, RequestedTTL: time.Hour, Status: pamapi.StatusPendingApproval})

	items := f.list(t, jen, "")
	g.Expect(items).To(HaveLen(2), "in creation order")
	var keys []string
	for k := range items[0] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	g.Expect(keys).To(Equal([]string{"CreationMethod", "CreationTime", "CreatorID", "ExpirationTime", "Justification",
		"RequestId", "RequestStatus", "RequestedTTL", "RequestedTime", "RoleId"}), "the properties of the PAM examples, DisplayName omitted")
	g.Expect(items[0]).To(Equal(map[string]any{
		"RequestId":      active.ID,
		"CreatorID":      active.CreatorID,
		"Justification":  "it's urgent",
		"CreationTime":   "2015-06-23T11:34:38.58Z",
		"CreationMethod": "PAM Web API",
		"ExpirationTime": "2015-06-23T12:34:38.58Z",
		"RoleId":         someRole,
		"RequestedTTL":   "3600",
		"RequestedTime":  "2015-06-23T11:34:38.58Z",
		"RequestStatus":  "Active",
	}))
	g.Expect(items[1]).To(HaveKeyWithValue("ExpirationTime", "0001-01-01T00:00:00"), "a pending request has no expiry")

	resp := f.send(t, jen, http.MethodGet, "/api/pamresources/pamrequests", "")
	g.Expect(decodeObject(t, resp.body)).To(HaveKeyWithValue("odata.metadata", f.srv.URL+"/api/pamresources/$metadata#pamrequests"))
}

func TestListFilter(t *testing.T) {
	f := newFixture(t, emulator.Options{})
	first := f.seed(jen)
	second := f.seed(jen)
	f.seed(ann)
	f.emu.SetRequestStatus(second, pamapi.StatusClosed)
	cases := []struct {
		reason, user, filter string
		want                 []string // request ids, in order; nil with inError
		inError              string
	}{
		{reason: "no filter lists only the caller's own requests", user: jen, want: []string{first, second}},
		{reason: "another account sees only its own", user: bob, want: []string{}},
		{reason: "by RequestId, the GUID in upper case", user: jen, filter: "RequestId eq guid'" + strings.ToUpper(first) + "'", want: []string{first}},
		{reason: "by RequestID as the property tables spell it", user: jen, filter: "RequestID eq guid'" + second + "'", want: []string{second}},
		{reason: "by status", user: jen, filter: "RequestStatus eq 'Closed'", want: []string{second}},
		{reason: "by a time window, the documentation's example", user: jen,
			filter: "CreationTime gt datetime'2015-06-12T04:49:32.431Z' and CreationTime lt datetime'2015-07-13T04:49:32.432Z'", want: []string{first, second}},
		{reason: "by the TTL, a number", user: jen, filter: "RequestedTTL ge 3600 and RequestStatus ne 'Closed'", want: []string{first}},
		{reason: "or is not a PAM operator", user: jen, filter: "RequestStatus eq 'Active' or RequestStatus eq 'Closed'", inError: "'or' is not supported"},
		{reason: "an unknown property", user: jen, filter: "Colour eq 'red'", inError: "could not find a property named 'Colour'"},
		{reason: "garbage", user: jen, filter: "RequestId eq guid'x' $", inError: "not a GUID"},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			path := "/api/pamresources/pamrequests"
			if tc.filter != "" {
				path += "?$filter=" + url.QueryEscape(tc.filter)
			}
			resp := f.send(t, tc.user, http.MethodGet, path, "")
			if tc.inError != "" {
				g.Expect(resp.status).To(Equal(http.StatusBadRequest))
				g.Expect(odataMessage(t, resp.body)).To(ContainSubstring(tc.inError))
				return
			}
			g.Expect(resp.status).To(Equal(http.StatusOK), resp.body)
			ids := []string{}
			for _, item := range decodeList(t, resp.body) {
				ids = append(ids, item["RequestId"].(string))
			}
			g.Expect(ids).To(Equal(tc.want))
		})
	}
}

func TestCloseRequest(t *testing.T) {
	f := newFixture(t, emulator.Options{})
	open := f.seed(jen)
	others := f.seed(ann)
	expiring := f.emu.AddRequest(emulator.Request{Owner: jen, RoleID: someRole, RequestedTTL: time.Minute}).ID
	pending := f.emu.AddRequest(emulator.Request{Owner: jen, RoleID: someRole, RequestedTTL: time.Minute, Status: pamapi.StatusPendingApproval}).ID
	closing := f.emu.AddRequest(emulator.Request{Owner: jen, RoleID: someRole, RequestedTTL: time.Hour, Status: pamapi.StatusClosing}).ID
	upper := f.seed(jen)
	f.clock.Add(2 * time.Minute) // expiring is now past its expiry

	// In order: the cases share the emulator, and the second close depends on the first.
	cases := []struct {
		reason, user, path string
		status             int
		inError            string
		id                 string
		after              pamapi.RequestStatus
	}{
		{"the owner closes an Active request: 200 with no body", jen, closePath(open), 200, "", open, pamapi.StatusClosed},
		{"closing it again: 400, the request stays Closed", jen, closePath(open), 400, "not open", open, pamapi.StatusClosed},
		{"another account's request is not found", jen, closePath(others), 404, "No request", others, pamapi.StatusActive},
		{"an unknown id is not found", jen, closePath("00000000-0000-4000-8000-000000000000"), 404, "No request", "", ""},
		{"an expired request is not open", jen, closePath(expiring), 400, "Expired", expiring, pamapi.StatusExpired},
		{"a pending request can be withdrawn", jen, closePath(pending), 200, "", pending, pamapi.StatusClosed},
		{"a request already closing is closed", jen, closePath(closing), 200, "", closing, pamapi.StatusClosed},
		{"the key's GUID in upper case", jen, closePath(strings.ToUpper(upper)), 200, "", upper, pamapi.StatusClosed},
		{"a key that is not a GUID", jen, "/api/pamresources/pamrequests(guid'abc')/Close", 400, "not a GUID", "", ""},
		{"a key without guid''", jen, "/api/pamresources/pamrequests(" + open + ")/Close", 400, "GUID literal", "", ""},
		{"a key with double quotes", jen, `/api/pamresources/pamrequests(guid"` + open + `")/Close`, 400, "GUID literal", "", ""},
		{"a key missing its parenthesis", jen, "/api/pamresources/pamrequests(guid'" + open + "'/Close", 400, "GUID literal", "", ""},
		{"a key with a space", jen, "/api/pamresources/pamrequests( guid'" + open + "')/Close", 400, "GUID literal", "", ""},
		{"a key with the reference page's typo", jen, "/api/pamresources/pamrequests({" + open + ")/Close", 400, "GUID literal", "", ""},
		{"a key with a trailing character", jen, "/api/pamresources/pamrequests(guid'" + open + "')x/Close", 400, "GUID literal", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			resp := f.send(t, tc.user, http.MethodPost, tc.path, "")
			g.Expect(resp.status).To(Equal(tc.status), resp.body)
			if tc.inError == "" {
				g.Expect(resp.body).To(BeEmpty())
			} else {
				g.Expect(odataMessage(t, resp.body)).To(ContainSubstring(tc.inError))
			}
			if tc.id != "" {
				r, ok := f.emu.Request(tc.id)
				g.Expect(ok).To(BeTrue())
				g.Expect(r.Status).To(Equal(tc.after))
			}
		})
	}

	g := NewWithT(t)
	attempts, successes := f.emu.CloseCalls(open)
	g.Expect([]int{attempts, successes}).To(Equal([]int{2, 1}), "two attempts, one that closed")
	attempts, successes = f.emu.CloseCalls(strings.ToUpper(others))
	g.Expect([]int{attempts, successes}).To(Equal([]int{1, 0}), "ids are case-insensitive")
	g.Expect(f.list(t, jen, "RequestId eq guid'"+open+"'")).To(ConsistOf(HaveKeyWithValue("RequestStatus", "Closed")))
}

func TestSetPassword(t *testing.T) {
	g := NewWithT(t)
	f := newFixture(t, emulator.Options{})
	asJen := func(password string) int {
		req, err := http.NewRequest(http.MethodGet, f.srv.URL+"/api/pamresources/pamrequests", nil)
		g.Expect(err).NotTo(HaveOccurred())
		req.SetBasicAuth(jen, password)
		resp, err := f.srv.Client().Do(req)
		g.Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		return resp.StatusCode
	}
	g.Expect(asJen(passwords[jen])).To(Equal(http.StatusOK))

	f.emu.SetPassword(jen, "changed")
	g.Expect(asJen(passwords[jen])).To(Equal(http.StatusUnauthorized), "the old password is refused")
	g.Expect(asJen("changed")).To(Equal(http.StatusOK))
	g.Expect(f.send(t, ann, http.MethodGet, "/api/pamresources/pamrequests", "").status).To(Equal(http.StatusOK), "other accounts keep theirs")
}

// TestTrustedUserHeader: behind a proxy that authenticates, the caller is the account the
// proxy names in the header, basic credentials count for nothing, and "only the creator may
// close" holds per named account.
func TestTrustedUserHeader(t *testing.T) {
	f := newFixture(t, emulator.Options{TrustedUserHeader: "X-Remote-User"})
	jens := f.seed(jen)
	as := func(header string, basic bool, path string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, f.srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if header != "" {
			req.Header.Set("X-Remote-User", header)
		}
		if basic {
			req.SetBasicAuth(jen, passwords[jen])
		}
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	cases := []struct {
		reason, header string
		basic          bool
		want           int
	}{
		{"no header: 401, whatever basic credentials say", "", true, http.StatusUnauthorized},
		{"another account cannot close jen's request", ann, false, http.StatusNotFound},
		{"jen closes her own request", jen, false, http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			if got := as(tc.header, tc.basic, closePath(jens)); got != tc.want {
				t.Errorf("status %d, want %d", got, tc.want)
			}
		})
	}
	calls := f.emu.Calls()
	if got := calls[len(calls)-1].User; got != jen {
		t.Errorf("the call log names %q, want %q", got, jen)
	}
}

func TestPostWithoutLengthGets411(t *testing.T) {
	f := newFixture(t, emulator.Options{})
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(jen+":"+passwords[jen]))

	viaClient := func(prepare func(*http.Request)) func(t *testing.T, id string) int {
		return func(t *testing.T, id string) int {
			req, err := http.NewRequest(http.MethodPost, f.srv.URL+closePath(id), io.NopCloser(strings.NewReader("")))
			if err != nil {
				t.Fatal(err)
			}
			req.SetBasicAuth(jen, passwords[jen])
			prepare(req)
			resp, err := f.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
	}
	// raw writes the request by hand, to send no Content-Length and no Transfer-Encoding at all.
	raw := func(lengthHeader string) func(t *testing.T, id string) int {
		return func(t *testing.T, id string) int {
			conn, err := net.Dial("tcp", f.srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: pam\r\nAuthorization: %s\r\n%sConnection: close\r\n\r\n", closePath(id), basic, lengthHeader)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
	}
	cases := []struct {
		reason string
		send   func(t *testing.T, id string) int
		status int
	}{
		{"unknown length: Go's client sends it chunked", viaClient(func(r *http.Request) { r.ContentLength = -1 }), 411},
		{"explicitly chunked", viaClient(func(r *http.Request) { r.ContentLength = -1; r.TransferEncoding = []string{"chunked"} }), 411},
		{"no length header at all, as curl -X POST sends", raw(""), 411},
		{"Content-Length: 0 written by hand", raw("Content-Length: 0\r\n"), 200},
		{"Go's client with an empty body sends Content-Length: 0", viaClient(func(r *http.Request) { r.Body = http.NoBody; r.ContentLength = 0 }), 200},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			id := f.seed(jen)
			g.Expect(tc.send(t, id)).To(Equal(tc.status))
			r, _ := f.emu.Request(id)
			if tc.status == 411 {
				g.Expect(r.Status).To(Equal(pamapi.StatusActive), "a refused close has no effect")
			} else {
				g.Expect(r.Status).To(Equal(pamapi.StatusClosed))
			}
		})
	}
}

func TestProtocol(t *testing.T) {
	f := newFixture(t, emulator.Options{})
	id := f.seed(jen)
	cases := []struct {
		reason, user, method, path string
		password                   string // overrides the user's own
		status                     int
		contentType                string
		inBody                     string
		header, headerValue        string
	}{
		{reason: "no credentials: IIS's HTML 401", method: "GET", path: "/api/pamresources/pamrequests",
			status: 401, contentType: "text/html", inBody: "<html", header: "WWW-Authenticate", headerValue: `Basic realm="PAM"`},
		{reason: "a wrong password: the same HTML 401", user: jen, password: "guess", method: "GET", path: "/api/pamresources/pamrequests",
			status: 401, contentType: "text/html", inBody: "401 - Unauthorized", header: "WWW-Authenticate", headerValue: `Basic realm="PAM"`},
		{reason: "an unknown account", user: "PRIV\\eve", password: "x", method: "GET", path: "/api/pamresources/pamroles", status: 401, contentType: "text/html"},
		{reason: "authentication comes before routing, as in IIS", method: "GET", path: "/api/pamresources/nothing", status: 401, contentType: "text/html"},
		{reason: "an unsupported version is named", user: jen, method: "GET", path: "/api/pamresources/pamrequests?v=2",
			status: 400, contentType: "application/json", inBody: `\"2\" is not supported`},
		{reason: "an empty version is not version 1", user: jen, method: "GET", path: "/api/pamresources/pamrequests?v=", status: 400, inBody: "UnsupportedApiVersion"},
		{reason: "version 1", user: jen, method: "GET", path: "/api/pamresources/pamrequests?v=1", status: 200, contentType: "application/json", inBody: id},
		{reason: "no version: the newest answers", user: jen, method: "GET", path: "/api/pamresources/pamrequests", status: 200, inBody: id},
		{reason: "IIS routes case-insensitively", user: jen, method: "GET", path: "/API/PamResources/PamRequests?v=1", status: 200, inBody: id},
		{reason: "an unknown path", user: jen, method: "GET", path: "/api/pamresources/nothing", status: 404, contentType: "application/json", inBody: "odata.error"},
		{reason: "the root", user: jen, method: "GET", path: "/", status: 404, inBody: "odata.error"},
		{reason: "an unknown action", user: jen, method: "POST", path: "/api/pamresources/pamrequests(guid'" + id + "')/Open", status: 404, inBody: "odata.error"},
		{reason: "close is a POST", user: jen, method: "GET", path: closePath(id), status: 405, inBody: "odata.error", header: "Allow", headerValue: "POST"},
		{reason: "requests are listed and created, nothing else", user: jen, method: "DELETE", path: "/api/pamresources/pamrequests",
			status: 405, header: "Allow", headerValue: "GET, POST"},
		{reason: "roles are only listed", user: jen, method: "POST", path: "/api/pamresources/pamroles", status: 405, header: "Allow", headerValue: "GET"},
		{reason: "a query that does not parse", user: jen, method: "GET", path: "/api/pamresources/pamrequests?$filter=%zz", status: 400, inBody: "query string"},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			req, err := http.NewRequest(tc.method, f.srv.URL+tc.path, http.NoBody)
			g.Expect(err).NotTo(HaveOccurred())
			if tc.user != "" {
				pw := passwords[tc.user]
				if tc.password != "" {
					pw = tc.password
				}
				req.SetBasicAuth(tc.user, pw)
			}
			resp, err := f.srv.Client().Do(req)
			g.Expect(err).NotTo(HaveOccurred())
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			g.Expect(resp.StatusCode).To(Equal(tc.status), string(body))
			g.Expect(resp.Header.Get("Content-Type")).To(HavePrefix(tc.contentType))
			g.Expect(string(body)).To(ContainSubstring(tc.inBody))
			if tc.header != "" {
				g.Expect(resp.Header.Get(tc.header)).To(Equal(tc.headerValue))
			}
			if resp.StatusCode >= 400 && strings.HasPrefix(tc.contentType, "application/json") {
				odataMessage(t, string(body))
			}
		})
	}
	r, _ := f.emu.Request(id)
	NewWithT(t).Expect(r.Status).To(Equal(pamapi.StatusActive), "none of these closed anything")
}

func TestMountedUnderAPrefix(t *testing.T) {
	emu := emulator.New(emulator.Options{})
	id := emu.AddRequest(emulator.Request{RoleID: someRole, RequestedTTL: time.Hour}).ID
	mux := http.NewServeMux()
	mux.Handle("/mim/pam/", http.StripPrefix("/mim/pam", emu))
	mux.Handle("/bare/", http.StripPrefix("/bare/", emu)) // leaves the path without its leading slash
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, prefix := range []string{"/mim/pam", "/bare"} {
		t.Run(prefix, func(t *testing.T) {
			g := NewWithT(t)
			resp, err := srv.Client().Get(srv.URL + prefix + "/api/pamresources/pamrequests?v=1")
			g.Expect(err).NotTo(HaveOccurred())
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			g.Expect(resp.StatusCode).To(Equal(200), string(body))
			doc := decodeObject(t, string(body))
			g.Expect(doc).To(HaveKeyWithValue("odata.metadata", srv.URL+prefix+"/api/pamresources/$metadata#pamrequests"),
				"the metadata URL keeps the prefix the client used")
			g.Expect(string(body)).To(ContainSubstring(id), "no Users: everyone is the anonymous account that owns it")
		})
	}
}

func TestExpiry(t *testing.T) {
	g := NewWithT(t)
	f := newFixture(t, emulator.Options{})
	role := f.emu.AddRole(emulator.Role{DisplayName: "Ops"})
	resp := f.send(t, jen, http.MethodPost, "/api/pamresources/pamrequests", `{"RoleId":"`+role.ID+`","RequestedTTL":"60"}`)
	g.Expect(resp.status).To(Equal(http.StatusCreated), resp.body)
	id := decodeObject(t, resp.body)["RequestId"].(string)

	f.clock.Add(59 * time.Second)
	g.Expect(f.list(t, jen, "RequestStatus eq 'Active'")).To(HaveLen(1), "still inside its TTL")
	f.clock.Add(time.Second)
	g.Expect(f.list(t, jen, "RequestStatus eq 'Expired'")).To(HaveLen(1), "Active turns Expired once ExpirationTime is reached")
	r, _ := f.emu.Request(strings.ToUpper(id))
	g.Expect(r.Status).To(Equal(pamapi.StatusExpired))
	g.Expect(r.ExpirationTime).To(Equal(start.Add(time.Minute)))

	seeded := f.seed(jen)
	f.clock.Add(time.Hour)
	resp = f.send(t, jen, http.MethodPost, closePath(seeded), "")
	g.Expect(resp.status).To(Equal(http.StatusBadRequest), "expiry is applied before a close, too")
	r, _ = f.emu.Request(seeded)
	g.Expect(r.Status).To(Equal(pamapi.StatusExpired))
}

func TestApprovals(t *testing.T) {
	f := newFixture(t, emulator.Options{})
	guarded := f.emu.AddRole(emulator.Role{DisplayName: "Domain Admins", ApprovalEnabled: true, Approvers: []string{ann}})

	create := func(t *testing.T) (id string) {
		resp := f.send(t, jen, http.MethodPost, "/api/pamresources/pamrequests", `{"RoleId":"`+guarded.ID+`","RequestedTTL":"600","Justification":"patch"}`)
		NewWithT(t).Expect(resp.status).To(Equal(http.StatusCreated), resp.body)
		return decodeObject(t, resp.body)["RequestId"].(string)
	}
	approvals := func(t *testing.T, user, filter string) []map[string]any {
		path := "/api/pamresources/pamrequeststoapprove"
		if filter != "" {
			path += "?$filter=" + url.QueryEscape(filter)
		}
		resp := f.send(t, user, http.MethodGet, path, "")
		NewWithT(t).Expect(resp.status).To(Equal(http.StatusOK), resp.body)
		return decodeList(t, resp.body)
	}
	decide := func(t *testing.T, user, approvalID, decision string) response {
		return f.send(t, user, http.MethodPost, "/api/pamresources/pamrequeststoapprove(guid'"+approvalID+"')/"+decision, "")
	}

	cases := []struct {
		reason, decision string
		want             pamapi.RequestStatus
		expires          bool
	}{
		{"an approved request becomes Active and expires its TTL after the approval", "Approve", pamapi.StatusActive, true},
		{"a rejected request ends Rejected, without an expiry", "Reject", pamapi.StatusRejected, false},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			id := create(t)
			f.clock.Add(time.Minute) // the approval comes later than the request

			g.Expect(approvals(t, jen, "")).To(BeEmpty(), "the requester is not an approver")
			pending := approvals(t, ann, "FIMRequestID eq guid'"+strings.ToUpper(id)+"'")
			g.Expect(pending).To(HaveLen(1))
			item := pending[0]
			g.Expect(item).To(HaveKeyWithValue("RoleName", "Domain Admins"))
			g.Expect(item).To(HaveKeyWithValue("Requestor", jen))
			g.Expect(item).To(HaveKeyWithValue("Justification", "patch"))
			g.Expect(item).To(HaveKeyWithValue("RequestedTTL", "600"))
			g.Expect(item).To(HaveKeyWithValue("FIMRequestID", map[string]any{"Value": id}))
			g.Expect(item).To(HaveKeyWithValue("RequestorID", HaveKeyWithValue("Value", HaveLen(36))))
			g.Expect(item).To(HaveKey("CreationTime"))
			g.Expect(item).To(HaveKey("RequestedTime"))
			approvalID := item["ApprovalObjectID"].(map[string]any)["Value"].(string)

			resp := decide(t, bob, approvalID, tc.decision)
			g.Expect(resp.status).To(Equal(http.StatusNotFound), "only the role's approvers decide")
			resp = decide(t, ann, strings.ToUpper(approvalID), tc.decision)
			g.Expect(resp.status).To(Equal(http.StatusOK), resp.body)
			g.Expect(resp.body).To(BeEmpty())
			resp = decide(t, ann, approvalID, tc.decision)
			g.Expect(resp.status).To(Equal(http.StatusNotFound), "the approval is gone once decided")
			g.Expect(approvals(t, ann, "")).To(BeEmpty())

			r, _ := f.emu.Request(id)
			g.Expect(r.Status).To(Equal(tc.want))
			if tc.expires {
				g.Expect(r.ExpirationTime).To(Equal(f.clock.Now().Add(10 * time.Minute)))
			} else {
				g.Expect(r.ExpirationTime.IsZero()).To(BeTrue())
			}
		})
	}

	t.Run("a withdrawn request leaves the approver's list", func(t *testing.T) {
		g := NewWithT(t)
		id := create(t)
		g.Expect(approvals(t, ann, "")).To(HaveLen(1))
		g.Expect(f.send(t, jen, http.MethodPost, closePath(id), "").status).To(Equal(http.StatusOK))
		g.Expect(approvals(t, ann, "")).To(BeEmpty())
	})
	t.Run("a malformed approval key", func(t *testing.T) {
		g := NewWithT(t)
		resp := decide(t, ann, "not-a-guid", "Approve")
		g.Expect(resp.status).To(Equal(http.StatusBadRequest))
		g.Expect(odataMessage(t, resp.body)).To(ContainSubstring("not a GUID"))
	})
	t.Run("an approval filter over an unknown property", func(t *testing.T) {
		resp := f.send(t, ann, http.MethodGet, "/api/pamresources/pamrequeststoapprove?$filter="+url.QueryEscape("Colour eq 'red'"), "")
		NewWithT(t).Expect(resp.status).To(Equal(http.StatusBadRequest))
	})
}

func TestRoles(t *testing.T) {
	f := newFixture(t, emulator.Options{})
	ops := f.emu.AddRole(emulator.Role{DisplayName: "Ops", Description: "operators", TTL: time.Hour})
	admins := f.emu.AddRole(emulator.Role{ID: "5EC10E61-CDD1-404E-A18E-740467D87DBF", DisplayName: "Domain Admins", ApprovalEnabled: true, MFAEnabled: true})
	cases := []struct {
		reason, filter string
		want           []string
		status         int
	}{
		{"every role, in the order added", "", []string{ops.ID, admins.ID}, 200},
		{"by a boolean", "ApprovalEnabled eq true", []string{admins.ID}, 200},
		{"by name", "DisplayName eq 'Ops'", []string{ops.ID}, 200},
		{"by TTL in seconds", "TTL gt 60", []string{ops.ID}, 200},
		{"by id, any case", "roleid eq guid'5ec10e61-cdd1-404e-a18e-740467d87dbf'", []string{admins.ID}, 200},
		{"an unknown property", "RequestStatus eq 'Active'", nil, 400},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			path := "/api/pamresources/pamroles"
			if tc.filter != "" {
				path += "?$filter=" + url.QueryEscape(tc.filter)
			}
			resp := f.send(t, bob, http.MethodGet, path, "")
			g.Expect(resp.status).To(Equal(tc.status), resp.body)
			if tc.status != 200 {
				return
			}
			ids := []string{}
			for _, item := range decodeList(t, resp.body) {
				ids = append(ids, item["RoleId"].(string))
			}
			g.Expect(ids).To(Equal(tc.want))
		})
	}
	g := NewWithT(t)
	g.Expect(admins.ID).To(Equal("5ec10e61-cdd1-404e-a18e-740467d87dbf"), "ids are stored in lower case")
	resp := f.send(t, bob, http.MethodGet, "/api/pamresources/pamroles", "")
	g.Expect(decodeList(t, resp.body)[0]).To(Equal(map[string]any{
		"RoleId": ops.ID, "DisplayName": "Ops", "Description": "operators", "TTL": "3600",
		"AvailableFrom": "0001-01-01T00:00:00", "AvailableTo": "0001-01-01T00:00:00",
		"MFAEnabled": false, "ApprovalEnabled": false, "AvailabilityWindowEnabled": false,
	}))

	windowed := f.emu.AddRole(emulator.Role{DisplayName: "Office hours", AvailabilityWindowEnabled: true,
		AvailableFrom: time.Date(2015, 9, 25, 8, 0, 0, 0, time.UTC), AvailableTo: time.Date(2015, 9, 25, 17, 0, 0, 0, time.UTC)})
	resp = f.send(t, bob, http.MethodGet, "/api/pamresources/pamroles?$filter="+url.QueryEscape("AvailabilityWindowEnabled eq true"), "")
	g.Expect(decodeList(t, resp.body)).To(ConsistOf(And(
		HaveKeyWithValue("RoleId", windowed.ID), HaveKeyWithValue("AvailabilityWindowEnabled", true),
		HaveKeyWithValue("AvailableFrom", "2015-09-25T08:00:00Z"), HaveKeyWithValue("AvailableTo", "2015-09-25T17:00:00Z"))))
}

// create posts a request for role as jen and returns its id and status, failing on any answer
// but 201.
func (f *fixture) create(t *testing.T, roleID, ttlSeconds string) (id string, status string) {
	t.Helper()
	resp := f.send(t, jen, http.MethodPost, "/api/pamresources/pamrequests", `{"RoleId":"`+roleID+`","RequestedTTL":"`+ttlSeconds+`"}`)
	if resp.status != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.status, resp.body)
	}
	created := decodeObject(t, resp.body)
	return created["RequestId"].(string), created["RequestStatus"].(string)
}

// approvalsOf lists, over HTTP, the request ids pending user's approval.
func (f *fixture) approvalsOf(t *testing.T, user string) []string {
	t.Helper()
	resp := f.send(t, user, http.MethodGet, "/api/pamresources/pamrequeststoapprove", "")
	ids := []string{}
	for _, item := range decodeList(t, resp.body) {
		ids = append(ids, item["FIMRequestID"].(map[string]any)["Value"].(string))
	}
	return ids
}

// TestGates walks a created request through Processing, MFA and approval as its role sets
// them, reading each state back over HTTP.
func TestGates(t *testing.T) {
	type step struct {
		// do moves the request on; nil only reads it.
		do   func(f *fixture, id string) error
		want pamapi.RequestStatus
		// approval: whether ann sees it pending her approval.
		approval bool
	}
	advance := func(f *fixture, id string) error { return f.emu.Advance(id) }
	mfa := func(f *fixture, id string) error { return f.emu.CompleteMFA(strings.ToUpper(id)) }
	approve := func(f *fixture, id string) error { return f.emu.Approve(id, ann) }
	reject := func(f *fixture, id string) error { return f.emu.Reject(id, ann) }
	later := func(d time.Duration) func(*fixture, string) error {
		return func(f *fixture, _ string) error { f.clock.Add(d); return nil }
	}
	cases := []struct {
		reason string
		role   emulator.Role
		steps  []step
		// expires is how long after creation an Active request ends; 0: not Active at the end.
		expires time.Duration
	}{
		{reason: "MFA alone: PendingMFA, then Active from the answer",
			role: emulator.Role{MFAEnabled: true},
			steps: []step{{want: pamapi.StatusPendingMFA}, {do: later(time.Minute), want: pamapi.StatusPendingMFA},
				{do: mfa, want: pamapi.StatusActive}},
			expires: time.Minute + 10*time.Minute},
		{reason: "MFA before approval",
			role: emulator.Role{MFAEnabled: true, ApprovalEnabled: true, Approvers: []string{ann}},
			steps: []step{{want: pamapi.StatusPendingMFA}, {do: mfa, want: pamapi.StatusPendingApproval, approval: true},
				{do: approve, want: pamapi.StatusActive}},
			expires: 10 * time.Minute},
		{reason: "held in Processing until Advance, however long",
			role: emulator.Role{HoldProcessing: true},
			steps: []step{{want: pamapi.StatusProcessing}, {do: later(time.Hour), want: pamapi.StatusProcessing},
				{do: advance, want: pamapi.StatusActive}},
			expires: time.Hour + 10*time.Minute},
		{reason: "held in Processing, then MFA and approval",
			role: emulator.Role{HoldProcessing: true, MFAEnabled: true, ApprovalEnabled: true, Approvers: []string{ann}},
			steps: []step{{want: pamapi.StatusProcessing}, {do: advance, want: pamapi.StatusPendingMFA},
				{do: mfa, want: pamapi.StatusPendingApproval, approval: true}, {do: reject, want: pamapi.StatusRejected}}},
		{reason: "timed Processing ends by itself, the expiry counted from its end, not the read",
			role: emulator.Role{Processing: 30 * time.Second},
			steps: []step{{want: pamapi.StatusProcessing}, {do: later(29 * time.Second), want: pamapi.StatusProcessing},
				{do: later(16 * time.Second), want: pamapi.StatusActive}},
			expires: 30*time.Second + 10*time.Minute},
		{reason: "timed Processing ends early on Advance",
			role: emulator.Role{Processing: time.Hour},
			steps: []step{{want: pamapi.StatusProcessing}, {do: later(time.Second), want: pamapi.StatusProcessing},
				{do: advance, want: pamapi.StatusActive}},
			expires: time.Second + 10*time.Minute},
		{reason: "timed Processing ends in PendingApproval, which the approver's list shows",
			role:  emulator.Role{Processing: time.Minute, ApprovalEnabled: true, Approvers: []string{ann}},
			steps: []step{{want: pamapi.StatusProcessing}, {do: later(time.Minute), want: pamapi.StatusPendingApproval, approval: true}}},
		{reason: "timed Processing whose elevation has run out by the time it is read",
			role:  emulator.Role{Processing: time.Minute},
			steps: []step{{want: pamapi.StatusProcessing}, {do: later(time.Minute + 10*time.Minute), want: pamapi.StatusExpired}}},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			f := newFixture(t, emulator.Options{})
			tc.role.DisplayName = "Gated"
			role := f.emu.AddRole(tc.role)
			id, status := f.create(t, role.ID, "600")
			g.Expect(status).To(Equal(string(tc.steps[0].want)), "the create's answer")
			for i, st := range tc.steps {
				if st.do != nil {
					g.Expect(st.do(f, id)).To(Succeed(), "step %d", i)
				}
				items := f.list(t, jen, "RequestId eq guid'"+id+"'")
				g.Expect(items).To(HaveLen(1))
				g.Expect(items[0]).To(HaveKeyWithValue("RequestStatus", string(st.want)), "step %d", i)
				if st.approval {
					g.Expect(f.approvalsOf(t, ann)).To(Equal([]string{id}), "step %d", i)
				} else {
					g.Expect(f.approvalsOf(t, ann)).To(BeEmpty(), "step %d", i)
				}
			}
			r, _ := f.emu.Request(id)
			if tc.expires > 0 {
				g.Expect(r.ExpirationTime).To(Equal(start.Add(tc.expires)))
			} else if r.Status != pamapi.StatusExpired {
				g.Expect(r.ExpirationTime.IsZero()).To(BeTrue(), "no expiry before it is Active")
			}
		})
	}
}

func TestGateMethodsRefuse(t *testing.T) {
	f := newFixture(t, emulator.Options{})
	guarded := f.emu.AddRole(emulator.Role{DisplayName: "Guarded", ApprovalEnabled: true, Approvers: []string{ann}})
	open := f.emu.AddRole(emulator.Role{DisplayName: "Open"})
	pending, _ := f.create(t, guarded.ID, "60")
	active, _ := f.create(t, open.ID, "60")
	const unknown = "00000000-0000-4000-8000-000000000000"
	cases := []struct {
		reason  string
		call    func() error
		inError string
	}{
		{"approval by someone who is not the role's approver", func() error { return f.emu.Approve(pending, bob) }, "does not approve"},
		{"rejection by the requester", func() error { return f.emu.Reject(pending, jen) }, "does not approve"},
		{"approval of a request not pending approval", func() error { return f.emu.Approve(active, ann) }, "is Active, not PendingApproval"},
		{"MFA for a request not pending MFA", func() error { return f.emu.CompleteMFA(pending) }, "not PendingMFA"},
		{"Advance of a request not Processing", func() error { return f.emu.Advance(active) }, "not Processing"},
		{"an unknown request", func() error { return f.emu.Approve(unknown, ann) }, "no request"},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			NewWithT(t).Expect(tc.call()).To(MatchError(ContainSubstring(tc.inError)))
		})
	}
	g := NewWithT(t)
	r, _ := f.emu.Request(pending)
	g.Expect(r.Status).To(Equal(pamapi.StatusPendingApproval), "a refused call changes nothing")
	g.Expect(f.approvalsOf(t, ann)).To(Equal([]string{pending}))
}

func TestAvailabilityWindow(t *testing.T) {
	// Only the time of day counts: the bounds' dates are arbitrary, as in MIM.
	at := func(hour, minute int) time.Time { return time.Date(2001, 2, 3, hour, minute, 0, 0, time.UTC) }
	cases := []struct {
		reason   string
		from, to time.Time
		enabled  bool
		// startAt is the requested start's time of day; zero: now, 11:34 on the fake clock.
		startAt time.Time
		ok      bool
	}{
		{"now inside office hours", at(8, 0), at(17, 0), true, time.Time{}, true},
		{"now before the window", at(12, 0), at(17, 0), true, time.Time{}, false},
		{"a requested start after the window", at(8, 0), at(17, 0), true, at(18, 0), false},
		{"its first minute is inside", at(8, 0), at(17, 0), true, at(8, 0), true},
		{"its end is outside", at(8, 0), at(17, 0), true, at(17, 0), false},
		{"a night window spans midnight: late", at(22, 0), at(6, 0), true, at(23, 30), true},
		{"a night window spans midnight: early", at(22, 0), at(6, 0), true, at(5, 59), true},
		{"a night window spans midnight: midday", at(22, 0), at(6, 0), true, time.Time{}, false},
		{"bounds without the switch do nothing", at(12, 0), at(13, 0), false, at(18, 0), true},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			f := newFixture(t, emulator.Options{})
			role := f.emu.AddRole(emulator.Role{DisplayName: "Windowed", AvailabilityWindowEnabled: tc.enabled, AvailableFrom: tc.from, AvailableTo: tc.to})
			body := `{"RoleId":"` + role.ID + `","RequestedTTL":"60"`
			if !tc.startAt.IsZero() {
				startAt := time.Date(start.Year(), start.Month(), start.Day()+1, tc.startAt.Hour(), tc.startAt.Minute(), 0, 0, time.UTC)
				body += `,"RequestedTime":"` + startAt.Format(time.RFC3339) + `"`
			}
			resp := f.send(t, jen, http.MethodPost, "/api/pamresources/pamrequests", body+"}")
			if tc.ok {
				g.Expect(resp.status).To(Equal(http.StatusCreated), resp.body)
				g.Expect(f.list(t, jen, "")).To(HaveLen(1))
				return
			}
			g.Expect(resp.status).To(Equal(http.StatusBadRequest))
			g.Expect(odataMessage(t, resp.body)).To(And(ContainSubstring("'Windowed' is available only from"),
				ContainSubstring(tc.from.Format("15:04:05")+" to "+tc.to.Format("15:04:05"))))
			g.Expect(f.list(t, jen, "")).To(BeEmpty(), "nothing was created")
		})
	}
}

// TestFindACreateByFilter: the list that finds a create whose answer was lost — by role,
// creation time and the justification the operator wrote — selects exactly it.
func TestFindACreateByFilter(t *testing.T) {
	f := newFixture(t, emulator.Options{})
	const otherRole = "7d3c2b1a-2222-4a2b-8c3d-4e5f6a7b8c9d"
	const marker = "INC-4711: it's urgent [pam-operator team-a/sql-admins 0f3e]"
	add := func(roleID, justification string, age time.Duration) string {
		return f.emu.AddRequest(emulator.Request{Owner: jen, RoleID: roleID, Justification: justification,
			RequestedTTL: time.Hour, CreationTime: start.Add(-age)}).ID
	}
	wanted := add(someRole, marker, time.Minute)
	add(someRole, marker, time.Hour)                    // too old: an earlier elevation's
	add(otherRole, marker, time.Minute)                 // another role
	add(someRole, "INC-4711: it's urgent", time.Minute) // another justification, a prefix of it
	add(someRole, strings.ToUpper(marker), time.Minute) // strings compare case-sensitively
	quoted := "'" + strings.ReplaceAll(marker, "'", "''") + "'"
	filter := "RoleId eq guid'" + strings.ToUpper(someRole) + "' and CreationTime ge datetime'" +
		start.Add(-5*time.Minute).Format("2006-01-02T15:04:05.000Z") + "' and Justification eq " + quoted
	items := f.list(t, jen, filter)
	g := NewWithT(t)
	g.Expect(items).To(HaveLen(1))
	g.Expect(items[0]).To(HaveKeyWithValue("RequestId", wanted))
	g.Expect(items[0]).To(HaveKeyWithValue("Justification", marker))
}

func TestSeeding(t *testing.T) {
	g := NewWithT(t)
	emu := emulator.New(emulator.Options{Now: func() time.Time { return start }})
	role := emu.AddRole(emulator.Role{DisplayName: "Ops"})
	g.Expect(role.ID).To(MatchRegexp(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`), "a random lower-case v4 GUID")

	r := emu.AddRequest(emulator.Request{Owner: jen, RoleID: role.ID, RequestedTTL: time.Hour})
	g.Expect(r.ID).To(MatchRegexp(`^[0-9a-f-]{36}$`))
	g.Expect(r.Status).To(Equal(pamapi.StatusActive))
	g.Expect(r.CreationTime).To(Equal(start))
	g.Expect(r.ExpirationTime).To(Equal(start.Add(time.Hour)))
	g.Expect(r.CreatorID).To(HaveLen(36))

	pending := emu.AddRequest(emulator.Request{Owner: jen, RequestedTTL: time.Hour, Status: pamapi.StatusPendingApproval})
	g.Expect(pending.ExpirationTime.IsZero()).To(BeTrue(), "only an Active request gets an expiry")
	noTTL := emu.AddRequest(emulator.Request{Owner: jen})
	g.Expect(noTTL.ExpirationTime.IsZero()).To(BeTrue(), "no TTL, no expiry")

	got, ok := emu.Request(strings.ToUpper(r.ID))
	g.Expect(ok).To(BeTrue())
	g.Expect(got).To(Equal(r))
	g.Expect(emu.Requests()).To(Equal([]emulator.Request{r, pending, noTTL}), "every account's, in creation order")
	_, ok = emu.Request("00000000-0000-4000-8000-000000000000")
	g.Expect(ok).To(BeFalse())

	g.Expect(emu.SetRequestStatus(r.ID, pamapi.StatusClosed)).To(BeTrue())
	got, _ = emu.Request(r.ID)
	g.Expect(got.Status).To(Equal(pamapi.StatusClosed))
	g.Expect(emu.SetRequestStatus("00000000-0000-4000-8000-000000000000", pamapi.StatusClosed)).To(BeFalse())
	g.Expect(emu.SetRequestStatus(pending.ID, pamapi.StatusActive)).To(BeTrue())
	got, _ = emu.Request(pending.ID)
	g.Expect(got.ExpirationTime).To(Equal(start.Add(time.Hour)), "made Active, it expires its TTL from now")
}

func TestFaults(t *testing.T) {
	t.Run("a status with Retry-After for the next N calls, then the real answer", func(t *testing.T) {
		g := NewWithT(t)
		f := newFixture(t, emulator.Options{})
		id := f.seed(jen)
		f.emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointCloseRequest, Status: 503, RetryAfter: "3", Times: 2})
		for range 2 {
			resp := f.send(t, jen, http.MethodPost, closePath(id), "")
			g.Expect(resp.status).To(Equal(503))
			g.Expect(resp.header.Get("Retry-After")).To(Equal("3"))
			g.Expect(odataMessage(t, resp.body)).To(ContainSubstring("Service Unavailable"))
		}
		g.Expect(f.send(t, jen, http.MethodPost, closePath(id), "").status).To(Equal(200))
		attempts, successes := f.emu.CloseCalls(id)
		g.Expect([]int{attempts, successes}).To(Equal([]int{3, 1}))
		g.Expect(f.emu.Calls()[0].Fault).To(Equal("status 503 retry-after 3"))
		g.Expect(f.emu.Calls()[2].Fault).To(BeEmpty())
	})
	t.Run("a fault for one endpoint leaves the others alone; \"\" means every endpoint", func(t *testing.T) {
		g := NewWithT(t)
		f := newFixture(t, emulator.Options{})
		f.emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointCloseRequest, Status: 500})
		g.Expect(f.send(t, jen, http.MethodGet, "/api/pamresources/pamrequests", "").status).To(Equal(200))
		f.emu.InjectFault(emulator.Fault{Status: 502})
		g.Expect(f.send(t, jen, http.MethodGet, "/api/pamresources/pamroles", "").status).To(Equal(502))
		g.Expect(f.send(t, jen, http.MethodPost, closePath(f.seed(jen)), "").status).To(Equal(500), "the first fault added wins")
		f.emu.ClearFaults()
		g.Expect(f.send(t, jen, http.MethodGet, "/api/pamresources/pamroles", "").status).To(Equal(200))
	})
	t.Run("a fraction of calls, the same ones for the same seed", func(t *testing.T) {
		g := NewWithT(t)
		run := func(seed int64) []int {
			f := newFixture(t, emulator.Options{Seed: seed})
			f.emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointListRequests, Status: 500, Fraction: 0.3})
			var statuses []int
			for range 200 {
				statuses = append(statuses, f.send(t, jen, http.MethodGet, "/api/pamresources/pamrequests", "").status)
			}
			return statuses
		}
		failures := func(statuses []int) int {
			n := 0
			for _, s := range statuses {
				if s == 500 {
					n++
				}
			}
			return n
		}
		first := run(42)
		g.Expect(failures(first)).To(BeNumerically("~", 60, 25))
		g.Expect(run(42)).To(Equal(first), "reproducible")
		g.Expect(run(7)).NotTo(Equal(first), "another seed, other calls")
	})
	t.Run("a fraction with Times counts only the calls it hit", func(t *testing.T) {
		g := NewWithT(t)
		f := newFixture(t, emulator.Options{Seed: 1})
		f.emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointListRoles, Status: 500, Fraction: 0.5, Times: 3})
		hits := 0
		for range 100 {
			if f.send(t, jen, http.MethodGet, "/api/pamresources/pamroles", "").status == 500 {
				hits++
			}
		}
		g.Expect(hits).To(Equal(3))
	})
	t.Run("a delay, then the real answer", func(t *testing.T) {
		g := NewWithT(t)
		f := newFixture(t, emulator.Options{})
		f.emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointListRequests, Delay: 50 * time.Millisecond, Times: 1})
		began := time.Now()
		g.Expect(f.send(t, jen, http.MethodGet, "/api/pamresources/pamrequests", "").status).To(Equal(200))
		g.Expect(time.Since(began)).To(BeNumerically(">=", 50*time.Millisecond))
		g.Expect(f.emu.Calls()).To(ConsistOf(And(
			HaveField("Fault", "delay 50ms"), HaveField("Status", 200))))
	})
	t.Run("a delay ends when the client gives up", func(t *testing.T) {
		g := NewWithT(t)
		f := newFixture(t, emulator.Options{})
		f.emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointListRequests, Delay: time.Hour, Times: 1})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := f.try(ctx, jen, http.MethodGet, "/api/pamresources/pamrequests", "")
		g.Expect(err).To(MatchError(context.DeadlineExceeded))
		// An hour's delay that did not hold the handler: it returned and logged the call.
		g.Eventually(f.emu.Calls, 10*time.Second).Should(ConsistOf(And(
			HaveField("Fault", "delay 1h0m0s"), HaveField("Status", 0))))
	})
	t.Run("a delayed POST with a body ends when the client gives up, too", func(t *testing.T) {
		g := NewWithT(t)
		f := newFixture(t, emulator.Options{})
		role := f.emu.AddRole(emulator.Role{DisplayName: "Ops"})
		f.emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointCreateRequest, Delay: time.Hour, Times: 1})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := f.try(ctx, jen, http.MethodPost, "/api/pamresources/pamrequests", `{"RoleId":"`+role.ID+`","RequestedTTL":"60"}`)
		g.Expect(err).To(MatchError(context.DeadlineExceeded))
		g.Eventually(f.emu.Calls, 10*time.Second).Should(ConsistOf(And(
			HaveField("Fault", "delay 1h0m0s"), HaveField("Status", 0), HaveField("Effective", false))))
	})
	t.Run("a delay and a status combine", func(t *testing.T) {
		g := NewWithT(t)
		f := newFixture(t, emulator.Options{})
		f.emu.InjectFault(emulator.Fault{Delay: time.Millisecond, Status: 408, Times: 1})
		g.Expect(f.send(t, jen, http.MethodGet, "/api/pamresources/pamroles", "").status).To(Equal(408))
		g.Expect(f.emu.Calls()[0].Fault).To(Equal("delay 1ms, status 408"))
	})
	t.Run("drop closes the connection without an answer", func(t *testing.T) {
		g := NewWithT(t)
		f := newFixture(t, emulator.Options{})
		id := f.seed(jen)
		f.emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointCloseRequest, Drop: true, Times: 1})
		_, err := f.try(context.Background(), jen, http.MethodPost, closePath(id), "")
		g.Expect(err).To(HaveOccurred())
		r, _ := f.emu.Request(id)
		g.Expect(r.Status).To(Equal(pamapi.StatusActive), "a dropped close has no effect")
		g.Expect(f.emu.Calls()).To(ConsistOf(And(HaveField("Fault", "drop"), HaveField("Status", 0), HaveField("Effective", false))))
		g.Expect(f.send(t, jen, http.MethodPost, closePath(id), "").status).To(Equal(200), "Times: 1 is spent")
	})
	t.Run("drop over HTTP/2, where the connection cannot be hijacked, resets the stream", func(t *testing.T) {
		g := NewWithT(t)
		emu := emulator.New(emulator.Options{})
		srv := httptest.NewUnstartedServer(emu)
		srv.EnableHTTP2 = true
		srv.StartTLS()
		defer srv.Close()
		emu.InjectFault(emulator.Fault{Drop: true, Times: 1})
		_, err := srv.Client().Get(srv.URL + "/api/pamresources/pamroles")
		g.Expect(err).To(HaveOccurred())
		resp, err := srv.Client().Get(srv.URL + "/api/pamresources/pamroles")
		g.Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		g.Expect(resp.Proto).To(Equal("HTTP/2.0"))
		g.Expect(resp.StatusCode).To(Equal(200))
	})
	t.Run("a lost answer: the close takes effect, the client sees an error", func(t *testing.T) {
		g := NewWithT(t)
		f := newFixture(t, emulator.Options{})
		id := f.seed(jen)
		f.emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointCloseRequest, LoseResponse: true, Times: 1})
		_, err := f.try(context.Background(), jen, http.MethodPost, closePath(id), "")
		g.Expect(err).To(HaveOccurred())
		r, _ := f.emu.Request(id)
		g.Expect(r.Status).To(Equal(pamapi.StatusClosed))
		attempts, successes := f.emu.CloseCalls(id)
		g.Expect([]int{attempts, successes}).To(Equal([]int{1, 1}))
		g.Expect(f.emu.Calls()).To(ConsistOf(And(HaveField("Fault", "lose-response"), HaveField("Status", 0), HaveField("Effective", true))))

		resp := f.send(t, jen, http.MethodPost, closePath(id), "")
		g.Expect(resp.status).To(Equal(400), "the retry finds it closed")
		attempts, successes = f.emu.CloseCalls(id)
		g.Expect([]int{attempts, successes}).To(Equal([]int{2, 1}))
	})
	t.Run("a malformed answer to a create: 201, a body cut in half, the request made", func(t *testing.T) {
		g := NewWithT(t)
		f := newFixture(t, emulator.Options{})
		role := f.emu.AddRole(emulator.Role{DisplayName: "Ops"})
		f.emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointCreateRequest, MalformedBody: true, Times: 1})
		resp := f.send(t, jen, http.MethodPost, "/api/pamresources/pamrequests?RoleId="+role.ID+"&RequestedTTL=60", "")
		g.Expect(resp.status).To(Equal(http.StatusCreated))
		g.Expect(resp.header.Get("Content-Type")).To(HavePrefix("application/json"))
		g.Expect(resp.body).To(HavePrefix(`{"odata.metadata":`))
		g.Expect(json.Valid([]byte(resp.body))).To(BeFalse())
		g.Expect(f.list(t, jen, "")).To(HaveLen(1))
		g.Expect(f.emu.Calls()[0]).To(And(HaveField("Fault", "malformed-body"), HaveField("Status", 201), HaveField("Effective", true)))
	})
	t.Run("a held answer: the create is made, and its client waits until it gives up", func(t *testing.T) {
		g := NewWithT(t)
		f := newFixture(t, emulator.Options{})
		role := f.emu.AddRole(emulator.Role{DisplayName: "Ops"})
		f.emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointCreateRequest, HoldAnswer: true, Times: 1})
		ctx, giveUp := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := f.try(ctx, jen, http.MethodPost, "/api/pamresources/pamrequests?RoleId="+role.ID+"&RequestedTTL=60", "")
			done <- err
		}()
		// Made while the answer is held.
		g.Eventually(func() int { return len(f.emu.Requests()) }).Should(Equal(1))
		g.Expect(done).NotTo(Receive(), "answered although held")
		g.Expect(f.emu.Calls()).To(ConsistOf(And(HaveField("Fault", "hold-answer"), HaveField("Status", 0), HaveField("Effective", true))))
		giveUp()
		g.Eventually(done).Should(Receive(HaveOccurred()))
	})
	t.Run("a lost answer to a create still creates", func(t *testing.T) {
		g := NewWithT(t)
		f := newFixture(t, emulator.Options{})
		role := f.emu.AddRole(emulator.Role{DisplayName: "Ops"})
		f.emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointCreateRequest, LoseResponse: true})
		_, err := f.try(context.Background(), jen, http.MethodPost, "/api/pamresources/pamrequests?RoleId="+role.ID+"&RequestedTTL=60", "")
		g.Expect(err).To(HaveOccurred())
		g.Expect(f.list(t, jen, "")).To(HaveLen(1))
	})
}

func TestCallLog(t *testing.T) {
	g := NewWithT(t)
	var mu sync.Mutex
	var lines []string
	f := newFixture(t, emulator.Options{Log: func(l string) { mu.Lock(); lines = append(lines, l); mu.Unlock() }})
	id := f.seed(jen)
	f.send(t, jen, http.MethodGet, "/api/pamresources/pamrequests?v=1", "")
	f.send(t, "", http.MethodGet, "/api/pamresources/pamrequests", "")
	f.send(t, ann, http.MethodPost, closePath(strings.ToUpper(id)), "")
	f.send(t, jen, http.MethodPost, closePath(id), "")

	calls := f.emu.Calls()
	g.Expect(calls).To(HaveLen(4))
	g.Expect(calls[0]).To(And(HaveField("Method", "GET"), HaveField("Path", "/api/pamresources/pamrequests"),
		HaveField("Query", "v=1"), HaveField("Endpoint", emulator.EndpointListRequests), HaveField("User", jen),
		HaveField("Status", 200), HaveField("Time", start), HaveField("UserAgent", ContainSubstring("Go-http-client")),
		HaveField("Effective", false)))
	g.Expect(calls[1]).To(And(HaveField("User", ""), HaveField("Status", 401)))
	g.Expect(calls[2]).To(And(HaveField("Endpoint", emulator.EndpointCloseRequest), HaveField("RequestID", id),
		HaveField("User", ann), HaveField("Status", 404), HaveField("Effective", false)))
	g.Expect(calls[3]).To(And(HaveField("RequestID", id), HaveField("Status", 200), HaveField("Effective", true)))

	calls[0].User = "changed"
	g.Expect(f.emu.Calls()[0].User).To(Equal(jen), "Calls returns a copy")

	mu.Lock()
	g.Expect(lines).To(HaveLen(4))
	g.Expect(lines[3]).To(And(ContainSubstring("POST"), ContainSubstring(closePath(id)), ContainSubstring("status=200"), ContainSubstring(`PRIV\\jen`)))
	for _, l := range lines {
		for _, pw := range passwords {
			g.Expect(l).NotTo(ContainSubstring(pw))
		}
		g.Expect(l).NotTo(ContainSubstring("Basic"))
		g.Expect(l).NotTo(ContainSubstring(base64.StdEncoding.EncodeToString([]byte(jen + ":" + passwords[jen]))))
	}
	mu.Unlock()

	f.emu.ResetCalls()
	g.Expect(f.emu.Calls()).To(BeEmpty())
	attempts, _ := f.emu.CloseCalls(id)
	g.Expect(attempts).To(BeZero())
}

// TestConcurrentUse exercises every entry point at once; run with -race it checks the locking.
func TestConcurrentUse(t *testing.T) {
	g := NewWithT(t)
	f := newFixture(t, emulator.Options{})
	role := f.emu.AddRole(emulator.Role{DisplayName: "Ops"})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := []string{jen, ann}[i%2]
			for range 10 {
				resp, err := f.try(context.Background(), user, http.MethodPost, "/api/pamresources/pamrequests?RoleId="+role.ID+"&RequestedTTL=60", "")
				if err != nil || resp.status != http.StatusCreated {
					continue // a fault from the other goroutines
				}
				id := decodeObject(t, resp.body)["RequestId"].(string)
				_, _ = f.try(context.Background(), user, http.MethodPost, closePath(id), "")
				_, _ = f.try(context.Background(), user, http.MethodGet, "/api/pamresources/pamrequests", "")
				f.emu.Request(id)
				f.emu.CloseCalls(id)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 20 {
			f.emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointListRequests, Status: 503, Times: 1, Fraction: 0.5})
			f.emu.AddRequest(emulator.Request{Owner: jen, RoleID: role.ID, RequestedTTL: time.Minute})
			f.emu.Calls()
			f.clock.Add(time.Second)
		}
		f.emu.ClearFaults()
	}()
	wg.Wait()
	g.Expect(len(f.emu.Calls())).To(BeNumerically(">=", 8*10))
}
