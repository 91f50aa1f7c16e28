package emulator_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/pam-operator/pam-operator/internal/pam/emulator"
)

const (
	jen, jenPassword = "PRIV\\jen", "jen-pw"
	ann, annPassword = "PRIV\\ann", "ann-pw"
)

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
	emu *emulator.Server
	url string
}

func newFixture(t *testing.T, opts emulator.Options) *fixture {
	t.Helper()
	if opts.Users == nil {
		opts.Users = map[string]string{jen: jenPassword, ann: annPassword}
	}
	emu := emulator.New(opts)
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	return &fixture{emu: emu, url: srv.URL}
}

// call sends one request as user and returns the status and body.
func (f *fixture) call(t *testing.T, user, method, path, body string) (int, string, http.Header) {
	t.Helper()
	var rd io.Reader = http.NoBody
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if user != "" {
		pw := map[string]string{jen: jenPassword, ann: annPassword}[user]
		req.SetBasicAuth(user, pw)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data), resp.Header
}

func (f *fixture) list(t *testing.T, user, filter string) []map[string]any {
	t.Helper()
	path := "/api/pamresources/pamrequests"
	if filter != "" {
		path += "?$filter=" + url.QueryEscape(filter)
	}
	status, body, _ := f.call(t, user, http.MethodGet, path, "")
	if status != http.StatusOK {
		t.Fatalf("list: %d %s", status, body)
	}
	var doc struct {
		Value []map[string]any `json:"value"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Value
}

func closePath(id string) string { return "/api/pamresources/pamrequests(guid'" + id + "')/Close" }

func TestCreateListClose(t *testing.T) {
	g := NewWithT(t)
	f := newFixture(t, emulator.Options{})
	role := f.emu.AddRole(emulator.Role{DisplayName: "Domain Admins", TTL: 8 * time.Hour})

	// Properties as query parameters, as one documentation page shows.
	status, body, _ := f.call(t, jen, http.MethodPost, "/api/pamresources/pamrequests?RoleId="+role.ID+"&RequestedTTL=3600&Justification=fix", "")
	g.Expect(status).To(Equal(http.StatusCreated), body)
	var created map[string]any
	g.Expect(json.Unmarshal([]byte(body), &created)).To(Succeed())
	g.Expect(created).To(HaveKeyWithValue("RequestedTTL", "3600"), "PAM writes the TTL as a string")
	g.Expect(created).To(HaveKeyWithValue("RequestStatus", "Active"))
	g.Expect(created).To(HaveKey("odata.metadata"))
	id := created["RequestId"].(string)

	// And as JSON body properties, names in another case.
	status, body, _ = f.call(t, jen, http.MethodPost, "/api/pamresources/pamrequests", `{"roleid":"`+strings.ToUpper(role.ID)+`","requestedTTL":600}`)
	g.Expect(status).To(Equal(http.StatusCreated), body)

	g.Expect(f.list(t, jen, "")).To(HaveLen(2))
	g.Expect(f.list(t, jen, "RequestId eq guid'"+strings.ToUpper(id)+"'")).To(HaveLen(1))
	g.Expect(f.list(t, ann, "")).To(BeEmpty(), "a caller lists only its own requests")

	status, body, _ = f.call(t, ann, http.MethodPost, closePath(id), "")
	g.Expect(status).To(Equal(http.StatusNotFound), "another account cannot close it: %s", body)

	status, body, _ = f.call(t, jen, http.MethodPost, closePath(id), "")
	g.Expect(status).To(Equal(http.StatusOK))
	g.Expect(body).To(BeEmpty())
	status, body, _ = f.call(t, jen, http.MethodPost, closePath(id), "")
	g.Expect(status).To(Equal(http.StatusBadRequest))
	g.Expect(body).To(ContainSubstring(`"odata.error"`))
	g.Expect(f.list(t, jen, "RequestStatus eq 'Closed'")).To(HaveLen(1))

	attempts, successes := f.emu.CloseCalls(id)
	g.Expect([]int{attempts, successes}).To(Equal([]int{3, 1}))
}

func TestProtocolQuirks(t *testing.T) {
	f := newFixture(t, emulator.Options{})
	id := f.emu.AddRequest(emulator.Request{Owner: jen, RoleID: "2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d", RequestedTTL: time.Hour}).ID
	cases := []struct {
		reason, user, method, path string
		status                     int
		inBody                     string
	}{
		{"no credentials get IIS's HTML 401", "", http.MethodGet, "/api/pamresources/pamrequests", 401, "<html>"},
		{"an unsupported version", jen, http.MethodGet, "/api/pamresources/pamrequests?v=2", 400, "UnsupportedApiVersion"},
		{"version 1", jen, http.MethodGet, "/api/pamresources/pamrequests?v=1", 200, id},
		{"an unknown path", jen, http.MethodGet, "/api/pamresources/nothing", 404, "odata.error"},
		{"the wrong method", jen, http.MethodGet, closePath(id), 405, "odata.error"},
		{"a malformed key", jen, http.MethodPost, "/api/pamresources/pamrequests(guid'abc')/Close", 400, "InvalidKey"},
		{"an unknown request", jen, http.MethodPost, closePath("00000000-0000-4000-8000-000000000000"), 404, "RequestNotFound"},
		{"an invalid filter", jen, http.MethodGet, "/api/pamresources/pamrequests?$filter=" + url.QueryEscape("a eq 1 or b eq 2"), 400, "or"},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			status, body, hdr := f.call(t, tc.user, tc.method, tc.path, "")
			g.Expect(status).To(Equal(tc.status), body)
			g.Expect(body).To(ContainSubstring(tc.inBody))
			if status == 401 {
				g.Expect(hdr.Get("WWW-Authenticate")).To(HavePrefix("Basic"))
			}
		})
	}
}

func TestPostWithoutLengthGets411(t *testing.T) {
	g := NewWithT(t)
	f := newFixture(t, emulator.Options{})
	id := f.emu.AddRequest(emulator.Request{Owner: jen, RoleID: "2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d", RequestedTTL: time.Hour}).ID
	req, _ := http.NewRequest(http.MethodPost, f.url+closePath(id), io.NopCloser(strings.NewReader("")))
	req.ContentLength = -1 // sent chunked, without Content-Length
	req.SetBasicAuth(jen, jenPassword)
	resp, err := http.DefaultClient.Do(req)
	g.Expect(err).NotTo(HaveOccurred())
	resp.Body.Close()
	g.Expect(resp.StatusCode).To(Equal(http.StatusLengthRequired))
	r, _ := f.emu.Request(id)
	g.Expect(r.Status).To(Equal(emulator.StatusActive))
}

func TestExpiryAndApprovals(t *testing.T) {
	g := NewWithT(t)
	clock := &fakeClock{now: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	f := newFixture(t, emulator.Options{Now: clock.Now})
	open := f.emu.AddRole(emulator.Role{DisplayName: "Ops"})
	guarded := f.emu.AddRole(emulator.Role{DisplayName: "Domain Admins", ApprovalEnabled: true, Approvers: []string{ann}})

	status, body, _ := f.call(t, jen, http.MethodPost, "/api/pamresources/pamrequests", `{"RoleId":"`+open.ID+`","RequestedTTL":"60"}`)
	g.Expect(status).To(Equal(http.StatusCreated), body)
	clock.Add(61 * time.Second)
	g.Expect(f.list(t, jen, "RequestStatus eq 'Expired'")).To(HaveLen(1), "Active turns Expired when ExpirationTime passes")

	for _, decision := range []string{"Approve", "Reject"} {
		status, body, _ = f.call(t, jen, http.MethodPost, "/api/pamresources/pamrequests", `{"RoleId":"`+guarded.ID+`","RequestedTTL":"600"}`)
		g.Expect(status).To(Equal(http.StatusCreated), body)
		var created map[string]any
		g.Expect(json.Unmarshal([]byte(body), &created)).To(Succeed())
		g.Expect(created).To(HaveKeyWithValue("RequestStatus", "PendingApproval"))
		g.Expect(created).To(HaveKeyWithValue("ExpirationTime", "0001-01-01T00:00:00"), "the unset expiry has no zone")

		g.Expect(f.list(t, jen, "")).NotTo(BeEmpty())
		status, body, _ = f.call(t, jen, http.MethodGet, "/api/pamresources/pamrequeststoapprove", "")
		g.Expect(status).To(Equal(http.StatusOK))
		g.Expect(body).To(ContainSubstring(`"value":[]`), "the requester is not an approver")

		status, body, _ = f.call(t, ann, http.MethodGet, "/api/pamresources/pamrequeststoapprove", "")
		g.Expect(status).To(Equal(http.StatusOK))
		var doc struct {
			Value []struct {
				ApprovalObjectID struct{ Value string }
				FIMRequestID     struct{ Value string }
			} `json:"value"`
		}
		g.Expect(json.Unmarshal([]byte(body), &doc)).To(Succeed())
		g.Expect(doc.Value).To(HaveLen(1))
		g.Expect(doc.Value[0].FIMRequestID.Value).To(Equal(created["RequestId"]))

		path := "/api/pamresources/pamrequeststoapprove(guid'" + doc.Value[0].ApprovalObjectID.Value + "')/" + decision
		status, body, _ = f.call(t, ann, http.MethodPost, path, "")
		g.Expect(status).To(Equal(http.StatusOK), body)
		r, _ := f.emu.Request(created["RequestId"].(string))
		if decision == "Approve" {
			g.Expect(r.Status).To(Equal(emulator.StatusActive))
			g.Expect(r.ExpirationTime).To(Equal(clock.Now().Add(10 * time.Minute)))
		} else {
			g.Expect(r.Status).To(Equal(emulator.StatusRejected))
		}
	}
}

func TestFaults(t *testing.T) {
	newRequest := func(f *fixture) string {
		return f.emu.AddRequest(emulator.Request{Owner: jen, RoleID: "2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d", RequestedTTL: time.Hour}).ID
	}
	t.Run("status with Retry-After for the next N calls", func(t *testing.T) {
		g := NewWithT(t)
		f := newFixture(t, emulator.Options{})
		id := newRequest(f)
		f.emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointCloseRequest, Status: 503, RetryAfter: "3", Times: 2})
		for range 2 {
			status, body, hdr := f.call(t, jen, http.MethodPost, closePath(id), "")
			g.Expect(status).To(Equal(503))
			g.Expect(hdr.Get("Retry-After")).To(Equal("3"))
			g.Expect(body).To(ContainSubstring("odata.error"))
		}
		status, _, _ := f.call(t, jen, http.MethodPost, closePath(id), "")
		g.Expect(status).To(Equal(200))
		attempts, successes := f.emu.CloseCalls(id)
		g.Expect([]int{attempts, successes}).To(Equal([]int{3, 1}))
	})
	t.Run("a fault for one endpoint leaves the others alone", func(t *testing.T) {
		g := NewWithT(t)
		f := newFixture(t, emulator.Options{})
		f.emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointCloseRequest, Status: 500})
		g.Expect(f.list(t, jen, "")).To(BeEmpty())
	})
	t.Run("a fraction of calls, reproducible with a seed", func(t *testing.T) {
		g := NewWithT(t)
		failures := func() int {
			f := newFixture(t, emulator.Options{Seed: 42})
			f.emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointListRequests, Status: 500, Fraction: 0.3})
			n := 0
			for range 200 {
				if status, _, _ := f.call(t, jen, http.MethodGet, "/api/pamresources/pamrequests", ""); status == 500 {
					n++
				}
			}
			return n
		}
		first := failures()
		g.Expect(first).To(BeNumerically("~", 60, 25))
		g.Expect(failures()).To(Equal(first))
	})
	t.Run("delay honours the client giving up", func(t *testing.T) {
		g := NewWithT(t)
		f := newFixture(t, emulator.Options{})
		f.emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointListRequests, Delay: time.Minute, Times: 1})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.url+"/api/pamresources/pamrequests", nil)
		req.SetBasicAuth(jen, jenPassword)
		_, err := http.DefaultClient.Do(req)
		g.Expect(err).To(MatchError(context.DeadlineExceeded))
		g.Eventually(f.emu.Calls).Should(HaveLen(1), "the handler returns once the client is gone")
	})
	t.Run("drop closes the connection without an answer", func(t *testing.T) {
		g := NewWithT(t)
		f := newFixture(t, emulator.Options{})
		id := newRequest(f)
		f.emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointCloseRequest, Drop: true, Times: 1})
		req, _ := http.NewRequest(http.MethodPost, f.url+closePath(id), http.NoBody)
		req.SetBasicAuth(jen, jenPassword)
		_, err := http.DefaultClient.Do(req)
		g.Expect(err).To(HaveOccurred())
		r, _ := f.emu.Request(id)
		g.Expect(r.Status).To(Equal(emulator.StatusActive), "a dropped close has no effect")
	})
	t.Run("a lost answer: the close takes effect, the client sees an error", func(t *testing.T) {
		g := NewWithT(t)
		f := newFixture(t, emulator.Options{})
		id := newRequest(f)
		f.emu.InjectFault(emulator.Fault{Endpoint: emulator.EndpointCloseRequest, LoseResponse: true, Times: 1})
		req, _ := http.NewRequest(http.MethodPost, f.url+closePath(id), http.NoBody)
		req.SetBasicAuth(jen, jenPassword)
		_, err := http.DefaultClient.Do(req)
		g.Expect(err).To(HaveOccurred())
		r, _ := f.emu.Request(id)
		g.Expect(r.Status).To(Equal(emulator.StatusClosed))
		attempts, successes := f.emu.CloseCalls(id)
		g.Expect([]int{attempts, successes}).To(Equal([]int{1, 1}))
	})
}

func TestLogNeverCarriesCredentials(t *testing.T) {
	g := NewWithT(t)
	var mu sync.Mutex
	var lines []string
	f := newFixture(t, emulator.Options{Log: func(l string) { mu.Lock(); lines = append(lines, l); mu.Unlock() }})
	f.list(t, jen, "")
	f.call(t, "", http.MethodGet, "/api/pamresources/pamrequests", "")
	mu.Lock()
	defer mu.Unlock()
	g.Expect(lines).To(HaveLen(2))
	for _, l := range lines {
		g.Expect(l).NotTo(ContainSubstring(jenPassword))
		g.Expect(l).NotTo(ContainSubstring("Basic"))
	}
}
