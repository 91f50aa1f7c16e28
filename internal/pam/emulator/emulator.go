// Package emulator is an in-memory MIM PAM REST API, for tests, demos and users' CI. It follows
// the documented API with its quirks (string TTLs, the unset ExpirationTime without a zone, OData
// v3 errors, HTML 401 pages, 411 for a POST without a length), and it injects faults and counts
// calls so tests can assert how many closes reached it. It imports nothing of the operator.
package emulator

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
)

// RequestStatus is the state of a PAM request.
type RequestStatus string

// The request states PAM documents.
const (
	StatusProcessing      RequestStatus = "Processing"
	StatusPendingMFA      RequestStatus = "PendingMFA"
	StatusPendingApproval RequestStatus = "PendingApproval"
	StatusActive          RequestStatus = "Active"
	StatusClosing         RequestStatus = "Closing"
	StatusClosed          RequestStatus = "Closed"
	StatusExpired         RequestStatus = "Expired"
	StatusRejected        RequestStatus = "Rejected"
)

func (s RequestStatus) ended() bool {
	return s == StatusClosed || s == StatusExpired || s == StatusRejected
}

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
	Status         RequestStatus
}

// Role is a PAM role.
type Role struct {
	ID              string
	DisplayName     string
	Description     string
	TTL             time.Duration
	ApprovalEnabled bool
	MFAEnabled      bool
	// Approvers are the accounts that see and decide this role's pending requests.
	Approvers []string
}

// Options configure a Server.
type Options struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Users maps basic-auth user names to passwords. Empty means no authentication: every caller
	// is the anonymous account "".
	Users map[string]string
	// Log, when set, receives one line per call. It never carries credentials.
	Log func(line string)
	// Seed makes fractional faults reproducible.
	Seed int64
}

// Server is the emulated API; it implements http.Handler and is safe for concurrent use.
type Server struct {
	opts Options
	now  func() time.Time

	mu        sync.Mutex
	requests  map[string]*Request
	order     []string
	roles     map[string]*Role
	approvals map[string]string // approval id → request id
	faults    faultSet
	calls     []Call
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
		requests:  map[string]*Request{},
		roles:     map[string]*Role{},
		approvals: map[string]string{},
		faults:    newFaultSet(opts.Seed),
	}
}

// AddRole adds a role, giving it a random id when it has none.
func (s *Server) AddRole(r Role) Role {
	if r.ID == "" {
		r.ID = newGUID()
	}
	r.ID = strings.ToLower(r.ID)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.roles[r.ID] = &r
	return r
}

// AddRequest seeds a request. Empty fields are filled: a random id, creation now, status Active,
// and for an Active request with a TTL an expiration of creation + TTL.
func (s *Server) AddRequest(r Request) Request {
	if r.ID == "" {
		r.ID = newGUID()
	}
	r.ID = strings.ToLower(r.ID)
	now := s.now()
	if r.CreationTime.IsZero() {
		r.CreationTime = now
	}
	if r.RequestedTime.IsZero() {
		r.RequestedTime = r.CreationTime
	}
	if r.Status == "" {
		r.Status = StatusActive
	}
	if r.Status == StatusActive && r.RequestedTTL > 0 && r.ExpirationTime.IsZero() {
		r.ExpirationTime = r.CreationTime.Add(r.RequestedTTL)
	}
	if r.CreatorID == "" {
		r.CreatorID = accountID(r.Owner)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.storeLocked(&r)
	return r
}

func (s *Server) storeLocked(r *Request) {
	if _, exists := s.requests[r.ID]; !exists {
		s.order = append(s.order, r.ID)
	}
	s.requests[r.ID] = r
	if r.Status == StatusPendingApproval {
		s.approvals[newGUID()] = r.ID
	}
}

// Request returns the current state of a request (expiry applied).
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

// SetRequestStatus changes a request's state as PAM would on its own (for tests).
func (s *Server) SetRequestStatus(id string, st RequestStatus) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.requests[strings.ToLower(id)]
	if ok {
		r.Status = st
	}
	return ok
}

// refreshLocked applies the Active → Expired transition lazily.
func (s *Server) refreshLocked(r *Request) {
	if r.Status == StatusActive && !r.ExpirationTime.IsZero() && !s.now().Before(r.ExpirationTime) {
		r.Status = StatusExpired
	}
}

// Endpoint names an operation of the API.
type Endpoint string

// The endpoints the emulator serves.
const (
	EndpointListRequests  Endpoint = "list-requests"
	EndpointCreateRequest Endpoint = "create-request"
	EndpointCloseRequest  Endpoint = "close-request"
	EndpointListRoles     Endpoint = "list-roles"
	EndpointListApprovals Endpoint = "list-approvals"
	EndpointApprove       Endpoint = "approve"
	EndpointReject        Endpoint = "reject"
)

// Call is one call the emulator received.
type Call struct {
	Time     time.Time
	Method   string
	Path     string
	Query    string
	Endpoint Endpoint
	User     string
	// UserAgent tells apart the clients, e.g. two operator replicas.
	UserAgent string
	// RequestID is the key of a close, or the approval id of an approve/reject.
	RequestID string
	// Status is what was answered, 0 when the connection was dropped.
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

var (
	guidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	keyedPath   = regexp.MustCompile(`^(pamrequests|pamrequeststoapprove)\(guid'([^']*)'\)/([A-Za-z]+)$`)
)

func isGUID(s string) bool { return guidPattern.MatchString(s) }

// newGUID returns a random version 4 GUID in lower case.
func newGUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// accountID derives a stable GUID for an account name, standing in for its MIM object id.
func accountID(name string) string {
	sum := sha256.Sum256([]byte("account:" + name))
	return fmt.Sprintf("%x-%x-%x-%x-%x", sum[0:4], sum[4:6], sum[6:8], sum[8:10], sum[10:16])
}

// route maps a path below /api/pamresources/ to an endpoint, the GUID key, and the allowed method.
func route(method, path string) (ep Endpoint, key string, allowed string, ok bool) {
	const prefix = "/api/pamresources/"
	if !strings.HasPrefix(path, prefix) {
		return "", "", "", false
	}
	rest := strings.TrimPrefix(path, prefix)
	switch rest {
	case "pamrequests":
		if method == http.MethodPost {
			return EndpointCreateRequest, "", http.MethodPost, true
		}
		return EndpointListRequests, "", http.MethodGet, true
	case "pamroles":
		return EndpointListRoles, "", http.MethodGet, true
	case "pamrequeststoapprove":
		return EndpointListApprovals, "", http.MethodGet, true
	}
	m := keyedPath.FindStringSubmatch(rest)
	if m == nil {
		return "", "", "", false
	}
	switch {
	case m[1] == "pamrequests" && m[3] == "Close":
		ep = EndpointCloseRequest
	case m[1] == "pamrequeststoapprove" && m[3] == "Approve":
		ep = EndpointApprove
	case m[1] == "pamrequeststoapprove" && m[3] == "Reject":
		ep = EndpointReject
	default:
		return "", "", "", false
	}
	return ep, m[2], http.MethodPost, true
}
