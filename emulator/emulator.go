// Package emulator is an in-memory MIM PAM REST API, for tests, demos and users' CI. It follows
// the documented API with its quirks (string TTLs, the unset ExpirationTime without a zone, OData
// v3 errors, HTML 401 pages, 411 for a POST without a length), and it injects faults and counts
// calls so tests can assert how many closes reached it.
//
// It is public so that users can run the PAM side of their own pipelines in CI: serve a Server
// with net/http (or httptest), point a PamServer at its URL, and assert with Calls and Request
// what reached PAM. Other schemes than basic (NTLM, Negotiate) plug in through
// Options.Authenticate.
//
// A created request passes the gates its Role sets, as in MIM: Processing (for Role.Processing,
// or until Advance when Role.HoldProcessing), then PendingMFA (Role.MFAEnabled, until
// CompleteMFA), then PendingApproval (Role.ApprovalEnabled, until an approver decides over
// HTTP or with Approve or Reject), then Active until RequestedTTL after the last gate. A role
// with an availability window refuses a create outside it with a 400. There is no control API
// over HTTP: tests and programs that embed the emulator drive it with these methods.
package emulator

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pam-operator/pam-operator/pamapi"
)

// Request is a PAM request as the emulator stores it.
type Request struct {
	ID            string
	Owner         string
	CreatorID     string
	RoleID        string
	Justification string
	CreationTime  time.Time
	RequestedTime time.Time
	// ExpirationTime is zero while not set (pending, rejected).
	ExpirationTime time.Time
	RequestedTTL   time.Duration
	Status         pamapi.RequestStatus
	// processingUntil is when a Processing request moves on by itself; zero: only Advance
	// moves it.
	processingUntil time.Time
}

// Role is a PAM role.
type Role struct {
	ID              string
	DisplayName     string
	Description     string
	TTL             time.Duration
	ApprovalEnabled bool
	// MFAEnabled puts a new request in PendingMFA until CompleteMFA.
	MFAEnabled bool
	// Approvers are the accounts that see and decide this role's pending requests.
	Approvers []string
	// AvailabilityWindowEnabled refuses a create whose start (RequestedTime, or now) falls
	// outside the times of day from AvailableFrom to AvailableTo. As in MIM only their time of
	// day counts, here in UTC; a window whose start is after its end spans midnight, and equal
	// bounds allow the whole day.
	AvailabilityWindowEnabled  bool
	AvailableFrom, AvailableTo time.Time
	// Processing keeps a new request in Processing this long before MFA, approval or
	// activation, as MIM's workflows do; the move is applied when the request is next read.
	Processing time.Duration
	// HoldProcessing keeps a new request in Processing until Advance: what a test uses to see
	// Processing and then its end, without waiting.
	HoldProcessing bool
}

// Options configure a Server.
type Options struct {
	// Now is the clock; nil means time.Now. Tests inject a fake clock.
	Now func() time.Time
	// Users maps basic-auth user names to passwords. Empty means no authentication: every caller
	// is the anonymous account "".
	Users map[string]string
	// Authenticate, when set, replaces Users with another scheme (NTLM, Negotiate): it returns
	// the caller's account, or answers the request itself (a 401 with its challenge) and
	// returns false.
	Authenticate func(w http.ResponseWriter, r *http.Request) (account string, ok bool)
	// TrustedUserHeader, when set, names a request header that carries the caller's account,
	// as a front proxy that authenticated the caller sets it (Apache httpd with
	// mod_auth_gssapi in front of the emulator, as IIS stands in front of MIM). It replaces
	// Users and Authenticate; a call without the header is answered 401. Anyone who reaches
	// the emulator directly can name any account in it: serve it only where that proxy alone
	// can reach it, and have the proxy overwrite the header whatever its client sent.
	TrustedUserHeader string
	// Log, when set, receives one line per call (method, path, caller, status, fault). It never
	// carries credentials.
	Log func(line string)
	// Seed seeds the random source of fractional faults, so runs are reproducible.
	Seed int64
	// Observe, when set, receives every call once it is recorded, so that a caller can wait for
	// calls instead of polling Calls.
	Observe func(Call)
}

// Server is the emulated API; it implements http.Handler and is safe for concurrent use.
type Server struct {
	opts Options
	now  func() time.Time

	mu sync.Mutex
	// users is Options.Users, copied on write by SetPassword.
	users     map[string]string
	requests  map[string]*Request // by lower-case id
	order     []string            // request ids in creation order, so lists are stable
	roles     map[string]*Role
	roleOrder []string
	approvals map[string]string // approval id → request id
	approval  map[string]string // request id → approval id
	faults    faultSet
	calls     []Call
	// inFlight counts the calls being served; maxInFlight is its peak since the last reset.
	inFlight, maxInFlight int
}

// MaxInFlight is the most calls served at once since New or ResetCalls: how well a client
// keeps to a concurrency cap.
func (s *Server) MaxInFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxInFlight
}

// SetPassword sets (or adds) a basic-auth account's password, as a password change in the
// directory does: from now on only the new one is accepted.
func (s *Server) SetPassword(user, password string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	users := make(map[string]string, len(s.users)+1)
	maps.Copy(users, s.users)
	users[user] = password
	s.users = users
}

// New returns an empty emulator.
func New(opts Options) *Server {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Server{
		opts:      opts,
		now:       now,
		users:     opts.Users,
		requests:  map[string]*Request{},
		roles:     map[string]*Role{},
		approvals: map[string]string{},
		approval:  map[string]string{},
		faults:    newFaultSet(opts.Seed),
	}
}

// AddRole adds (or replaces) a role, giving it a random lower-case v4 GUID when it has none.
func (s *Server) AddRole(r Role) Role {
	if r.ID == "" {
		r.ID = newGUID()
	}
	r.ID = strings.ToLower(r.ID)
	r.Approvers = append([]string(nil), r.Approvers...) // the caller's slice stays the caller's
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, exists := s.roles[r.ID]; !exists {
		s.roleOrder = append(s.roleOrder, r.ID)
	}
	stored := r
	s.roles[r.ID] = &stored
	return r
}

// AddRequest seeds a request. Empty fields are filled: a random id, creation now, status Active,
// and for an Active request with a TTL an expiration of creation + TTL.
func (s *Server) AddRequest(r Request) Request {
	if r.ID == "" {
		r.ID = newGUID()
	}
	r.ID = strings.ToLower(r.ID)
	r.RoleID = strings.ToLower(r.RoleID)
	now := s.now()
	if r.CreationTime.IsZero() {
		r.CreationTime = now
	}
	if r.RequestedTime.IsZero() {
		r.RequestedTime = r.CreationTime
	}
	if r.Status == "" {
		r.Status = pamapi.StatusActive
	}
	if r.Status == pamapi.StatusActive && r.RequestedTTL > 0 && r.ExpirationTime.IsZero() {
		r.ExpirationTime = r.CreationTime.Add(r.RequestedTTL)
	}
	if r.CreatorID == "" {
		r.CreatorID = accountID(r.Owner)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	stored := r
	s.storeLocked(&stored)
	return r
}

func (s *Server) storeLocked(r *Request) {
	if _, exists := s.requests[r.ID]; !exists {
		s.order = append(s.order, r.ID)
	}
	s.requests[r.ID] = r
	s.syncApprovalLocked(r)
}

// syncApprovalLocked keeps exactly one approval object for a pending request and none otherwise.
func (s *Server) syncApprovalLocked(r *Request) {
	approvalID, has := s.approval[r.ID]
	switch {
	case r.Status == pamapi.StatusPendingApproval && !has:
		approvalID = newGUID()
		s.approval[r.ID] = approvalID
		s.approvals[approvalID] = r.ID
	case r.Status != pamapi.StatusPendingApproval && has:
		delete(s.approval, r.ID)
		delete(s.approvals, approvalID)
	}
}

// Request returns the current state of a request (expiry applied); the id is case-insensitive.
func (s *Server) Request(id string) (Request, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.requests[strings.ToLower(id)]
	if !ok {
		return Request{}, false
	}
	s.refreshLocked(r)
	return *r, true
}

// Requests returns every request of every account, in creation order, their time-driven
// transitions applied: what a test counts to assert that exactly one was made.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, 0, len(s.order))
	for _, id := range s.order {
		r := s.requests[id]
		s.refreshLocked(r)
		out = append(out, *r)
	}
	return out
}

// SetRequestStatus changes a request's state as PAM would on its own, e.g. ending it, for tests.
// A request made Active without an ExpirationTime expires RequestedTTL from now, as on approval.
func (s *Server) SetRequestStatus(id string, st pamapi.RequestStatus) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.requests[strings.ToLower(id)]
	if !ok {
		return false
	}
	r.Status = st
	r.processingUntil = time.Time{} // a request made Processing here waits for Advance
	if st == pamapi.StatusActive && r.ExpirationTime.IsZero() && r.RequestedTTL > 0 {
		r.ExpirationTime = s.now().Add(r.RequestedTTL)
	}
	s.syncApprovalLocked(r)
	return true
}

// refreshLocked applies the time-driven transitions lazily, on every read: the end of a timed
// Processing, then Active → Expired.
func (s *Server) refreshLocked(r *Request) {
	now := s.now()
	if r.Status == pamapi.StatusProcessing && !r.processingUntil.IsZero() && !now.Before(r.processingUntil) {
		// It moved on when its time was up, not when it was read: the expiry counts from then.
		s.gateLocked(r, r.processingUntil, false)
	}
	if r.Status == pamapi.StatusActive && !r.ExpirationTime.IsZero() && !now.Before(r.ExpirationTime) {
		r.Status = pamapi.StatusExpired
	}
}

// gateLocked moves a request past processing, at time at, to the first gate its role still
// sets — PendingMFA unless mfaDone, then PendingApproval — or else makes it Active until
// at + RequestedTTL. A request of an unknown role has no gates.
func (s *Server) gateLocked(r *Request, at time.Time, mfaDone bool) {
	r.processingUntil = time.Time{}
	role := s.roles[r.RoleID]
	switch {
	case role != nil && role.MFAEnabled && !mfaDone:
		r.Status = pamapi.StatusPendingMFA
	case role != nil && role.ApprovalEnabled:
		r.Status = pamapi.StatusPendingApproval
	default:
		r.Status = pamapi.StatusActive
		r.ExpirationTime = at.Add(r.RequestedTTL)
	}
	s.syncApprovalLocked(r)
}

// pendingLocked returns a request, its expiry and processing applied, if it is in state st.
func (s *Server) pendingLocked(id string, st pamapi.RequestStatus) (*Request, error) {
	r, ok := s.requests[strings.ToLower(id)]
	if !ok {
		return nil, fmt.Errorf("emulator: no request %s", id)
	}
	s.refreshLocked(r)
	if r.Status != st {
		return nil, fmt.Errorf("emulator: request %s is %s, not %s", id, r.Status, st)
	}
	return r, nil
}

// Advance ends the Processing of a request now: it moves to PendingMFA, PendingApproval or
// Active as its role says. It fails when the request is not Processing.
func (s *Server) Advance(requestID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.pendingLocked(requestID, pamapi.StatusProcessing)
	if err != nil {
		return err
	}
	s.gateLocked(r, s.now(), false)
	return nil
}

// CompleteMFA stands for the requestor answering the MFA challenge: a PendingMFA request moves
// to PendingApproval when its role needs approval, else to Active until now + RequestedTTL.
func (s *Server) CompleteMFA(requestID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.pendingLocked(requestID, pamapi.StatusPendingMFA)
	if err != nil {
		return err
	}
	s.gateLocked(r, s.now(), true)
	return nil
}

// Approve approves a PendingApproval request as approver, one of its role's Approvers, as the
// approve call does: it becomes Active until now + RequestedTTL.
func (s *Server) Approve(requestID, approver string) error {
	return s.decideRequest(requestID, approver, true)
}

// Reject rejects a PendingApproval request as approver, one of its role's Approvers, as the
// reject call does: it becomes Rejected.
func (s *Server) Reject(requestID, approver string) error {
	return s.decideRequest(requestID, approver, false)
}

func (s *Server) decideRequest(requestID, approver string, approve bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.pendingLocked(requestID, pamapi.StatusPendingApproval)
	if err != nil {
		return err
	}
	if role := s.roles[r.RoleID]; role == nil || !slices.Contains(role.Approvers, approver) {
		return fmt.Errorf("emulator: %q does not approve the role of request %s", approver, requestID)
	}
	s.decideLocked(r, approve)
	return nil
}

// decideLocked applies an approver's decision on a pending request.
func (s *Server) decideLocked(r *Request, approve bool) {
	if approve {
		r.Status = pamapi.StatusActive
		r.ExpirationTime = s.now().Add(r.RequestedTTL)
	} else {
		r.Status = pamapi.StatusRejected
	}
	s.syncApprovalLocked(r)
}

// timeOfDay is how far into its day (UTC) t is.
func timeOfDay(t time.Time) time.Duration {
	t = t.UTC()
	return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute +
		time.Duration(t.Second())*time.Second + time.Duration(t.Nanosecond())
}

// available reports whether the role may be requested to start at t.
func (r *Role) available(t time.Time) bool {
	if !r.AvailabilityWindowEnabled {
		return true
	}
	at, from, to := timeOfDay(t), timeOfDay(r.AvailableFrom), timeOfDay(r.AvailableTo)
	switch {
	case from < to:
		return from <= at && at < to
	case from > to: // spans midnight
		return at >= from || at < to
	}
	return true
}

// Endpoint names an operation of the API.
type Endpoint string

// The endpoints the emulator serves. A Fault with Endpoint "" applies to all of them.
const (
	EndpointListRequests  Endpoint = "list-requests"
	EndpointCreateRequest Endpoint = "create-request"
	EndpointCloseRequest  Endpoint = "close-request"
	EndpointListRoles     Endpoint = "list-roles"
	EndpointListApprovals Endpoint = "list-approvals"
	EndpointApprove       Endpoint = "approve"
	EndpointReject        Endpoint = "reject"
)

// Endpoints lists every endpoint, e.g. for validating a name given on a command line.
func Endpoints() []Endpoint {
	return []Endpoint{
		EndpointListRequests, EndpointCreateRequest, EndpointCloseRequest,
		EndpointListRoles, EndpointListApprovals, EndpointApprove, EndpointReject,
	}
}

// Call is one call the emulator received.
type Call struct {
	Time     time.Time
	Method   string
	Path     string
	Query    string
	Endpoint Endpoint
	// User is the authenticated caller, "" when anonymous or not authenticated.
	User string
	// UserAgent tells apart the clients, e.g. two operator replicas.
	UserAgent string
	// RequestID is the lower-case key of a close, or the approval id of an approve/reject.
	RequestID string
	// Status is what was answered, 0 when the connection was dropped or the client gave up.
	Status int
	// Fault describes the injected fault, "" when none.
	Fault string
	// Effective is true when the call changed state (a close, create, approve or reject took effect).
	Effective bool
}

// Calls returns a copy of the call log.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// ResetCalls empties the call log.
func (s *Server) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = nil
	s.maxInFlight = s.inFlight
}

// CloseCalls counts the close calls for a request: every attempt that reached the emulator, and
// those that moved the request to Closed (including ones whose answer was then lost).
func (s *Server) CloseCalls(id string) (attempts, successes int) {
	id = strings.ToLower(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.calls {
		if c.Endpoint == EndpointCloseRequest && c.RequestID == id {
			attempts++
			if c.Effective {
				successes++
			}
		}
	}
	return attempts, successes
}

// isGUID reports the 8-4-4-4-12 hex form, any case.
func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// newGUID returns a random version 4 GUID in lower case.
func newGUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails on supported platforms
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return formatGUID(b[:])
}

// accountID derives a stable GUID for an account name, standing in for its MIM object id.
func accountID(name string) string {
	sum := sha256.Sum256([]byte("account:" + name))
	return formatGUID(sum[:16])
}

func formatGUID(b []byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
