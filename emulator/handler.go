package emulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pam-operator/pam-operator/pamapi"
)

// unauthorizedPage is the body IIS sends with a 401: HTML, not OData JSON.
const unauthorizedPage = `<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>401 - Unauthorized: Access is denied due to invalid credentials.</title></head>
<body><div id="header"><h1>Server Error</h1></div><div id="content"><fieldset><h2>401 - Unauthorized: Access is denied due to invalid credentials.</h2>
<h3>You do not have permission to view this directory or page using the credentials that you supplied.</h3></fieldset></div></body></html>
`

// lengthRequiredPage is the body http.sys sends with a 411.
const lengthRequiredPage = `<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN""http://www.w3.org/TR/html4/strict.dtd">
<HTML><HEAD><TITLE>Length Required</TITLE></HEAD><BODY><h2>Length Required</h2><hr><p>HTTP Error 411. The request must be chunked or have a content length.</p></BODY></HTML>
`

// maxBodyBytes bounds what is read of a request's body.
const maxBodyBytes = 1 << 20

// ServeHTTP implements http.Handler: faults first, then the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.inFlight++
	s.maxInFlight = max(s.maxInFlight, s.inFlight)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()
	rt, known := resolve(r.Method, r.URL.Path)
	call := Call{
		Time: s.now(), Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
		Endpoint: rt.endpoint, UserAgent: r.UserAgent(), RequestID: strings.ToLower(rt.key),
	}

	var fault Fault
	faulted := false
	if known {
		s.mu.Lock()
		fault, faulted = s.faults.pickLocked(rt.endpoint)
		s.mu.Unlock()
	}
	if faulted {
		call.Fault = fault.String()
		if fault.Delay > 0 {
			// Go's server sees the client hang up only once the body has been read: read it
			// first, as IIS does before the API runs, so that a delayed POST ends with its client.
			body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes))
			if err != nil {
				s.record(call)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		if !wait(r, fault.Delay) {
			s.record(call) // the client gave up; there is no one left to answer
			return
		}
		switch {
		case fault.Drop:
			s.record(call)
			dropConnection(w)
			return
		case fault.Status != 0:
			if fault.RetryAfter != "" {
				w.Header().Set("Retry-After", fault.RetryAfter)
			}
			writeError(w, fault.Status, "InjectedFault", "Injected fault: "+http.StatusText(fault.Status))
			call.Status = fault.Status
			s.record(call)
			return
		case fault.LoseResponse:
			s.handle(&bufferWriter{header: http.Header{}}, r, &call, rt, known)
			s.record(call) // Status stays 0: the client never sees it
			dropConnection(w)
			return
		case fault.MalformedBody:
			answer := &bufferWriter{header: http.Header{}, status: http.StatusOK}
			s.handle(answer, r, &call, rt, known)
			maps.Copy(w.Header(), answer.header)
			w.WriteHeader(answer.status)
			_, _ = w.Write(answer.body[:len(answer.body)/2])
			call.Status = answer.status
			s.record(call)
			return
		case fault.HoldAnswer:
			s.handle(&bufferWriter{header: http.Header{}}, r, &call, rt, known)
			s.record(call) // Status stays 0: the client never sees it
			<-r.Context().Done()
			return
		}
	}

	sw := &statusWriter{ResponseWriter: w}
	s.handle(sw, r, &call, rt, known)
	call.Status = sw.status
	s.record(call)
}

func (s *Server) record(call Call) {
	s.mu.Lock()
	s.calls = append(s.calls, call)
	s.mu.Unlock()
	if s.opts.Observe != nil {
		s.opts.Observe(call)
	}
	if s.opts.Log == nil {
		return
	}
	// Only the request line, the authenticated name and the outcome: never headers or passwords.
	line := call.Method + " " + call.Path
	if call.Query != "" {
		line += "?" + call.Query
	}
	line += fmt.Sprintf(" user=%q status=%d", call.User, call.Status)
	if call.Fault != "" {
		line += fmt.Sprintf(" fault=%q", call.Fault)
	}
	s.opts.Log(line)
}

// handle serves one call in the order the real stack checks it: http.sys (length), IIS
// (authentication), then Web API (route, method, version, key, the endpoint itself).
func (s *Server) handle(w http.ResponseWriter, r *http.Request, call *Call, rt route, known bool) {
	if r.Method == http.MethodPost && lengthUnknown(r) {
		writeHTML(w, http.StatusLengthRequired, lengthRequiredPage)
		return
	}
	var user string
	var ok bool
	if s.opts.TrustedUserHeader != "" {
		// The proxy in front authenticated the caller and answered its challenges.
		if user = r.Header.Get(s.opts.TrustedUserHeader); user == "" {
			writeHTML(w, http.StatusUnauthorized, unauthorizedPage)
			return
		}
	} else if s.opts.Authenticate != nil {
		// The scheme answers 401 itself, with the challenge it needs.
		if user, ok = s.opts.Authenticate(w, r); !ok {
			return
		}
	} else if user, ok = s.authenticate(r); !ok {
		w.Header().Set("WWW-Authenticate", `Basic realm="PAM"`)
		writeHTML(w, http.StatusUnauthorized, unauthorizedPage)
		return
	}
	call.User = user
	if !known {
		writeError(w, http.StatusNotFound, "NotFound", "No HTTP resource was found that matches the request URI '"+r.URL.Path+"'.")
		return
	}
	if !slices.Contains(rt.methods, r.Method) {
		w.Header().Set("Allow", strings.Join(rt.methods, ", "))
		writeError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "The requested resource does not support http method '"+r.Method+"'.")
		return
	}
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, http.StatusBadRequest, "InvalidQuery", "The query string is not valid: "+err.Error())
		return
	}
	if v, present := query["v"]; present && (len(v) != 1 || v[0] != "1") {
		writeError(w, http.StatusBadRequest, "UnsupportedApiVersion",
			fmt.Sprintf("The API version %q is not supported; the supported version is 1.", strings.Join(v, ",")))
		return
	}
	if rt.badKey != "" {
		writeError(w, http.StatusBadRequest, "InvalidKey", "The request URI is not valid: "+rt.badKey+".")
		return
	}
	switch rt.endpoint {
	case EndpointListRequests:
		s.listRequests(w, r, query, user)
	case EndpointCreateRequest:
		call.Effective = s.createRequest(w, r, query, user)
	case EndpointCloseRequest:
		call.Effective = s.closeRequest(w, rt.key, user)
	case EndpointListRoles:
		s.listRoles(w, r, query)
	case EndpointListApprovals:
		s.listApprovals(w, r, query, user)
	case EndpointApprove, EndpointReject:
		call.Effective = s.decide(w, rt.key, user, rt.endpoint == EndpointApprove)
	}
}

// lengthUnknown reports a request without Content-Length: chunked, or (HTTP/1) no header at all,
// which Go's server reads as an empty body but IIS refuses.
func lengthUnknown(r *http.Request) bool {
	if r.ContentLength < 0 {
		return true
	}
	return r.ProtoMajor == 1 && len(r.TransferEncoding) == 0 && r.Header.Get("Content-Length") == ""
}

func (s *Server) authenticate(r *http.Request) (string, bool) {
	s.mu.Lock()
	users := s.users
	s.mu.Unlock()
	if len(users) == 0 {
		return "", true
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return "", false
	}
	want, known := users[user]
	if !known || want != pass {
		return "", false
	}
	return user, true
}

// filterParam parses $filter and checks its property names against the resource's, answering
// 400 as Web API OData does when either is wrong.
func filterParam(w http.ResponseWriter, query url.Values, props map[string]any) (Filter, bool) {
	filter, err := ParseFilter(query.Get("$filter"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "InvalidFilter", "The $filter is not valid: "+err.Error())
		return Filter{}, false
	}
	for _, name := range filter.Properties() {
		if !hasPropertyFold(props, name) {
			writeError(w, http.StatusBadRequest, "InvalidFilter", "The $filter is not valid: could not find a property named '"+name+"'.")
			return Filter{}, false
		}
	}
	return filter, true
}

func hasPropertyFold(props map[string]any, name string) bool {
	for k := range props {
		if strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}

func (s *Server) listRequests(w http.ResponseWriter, r *http.Request, query url.Values, user string) {
	filter, ok := filterParam(w, query, requestProps(&Request{}))
	if !ok {
		return
	}
	out := []any{}
	s.mu.Lock()
	ids := s.order
	if id, ok := filter.Equals("RequestId"); ok {
		// A lookup by id, as a database index serves it: the answer is the same as a scan's.
		ids = nil
		if _, ok := s.requests[strings.ToLower(id)]; ok {
			ids = []string{strings.ToLower(id)}
		}
	}
	for _, id := range ids {
		req := s.requests[id]
		if req.Owner != user {
			continue
		}
		s.refreshLocked(req)
		if filter.Match(requestProps(req)) {
			out = append(out, requestJSON(req, ""))
		}
	}
	s.mu.Unlock()
	writeList(w, r, "pamrequests", out)
}

func (s *Server) createRequest(w http.ResponseWriter, r *http.Request, query url.Values, user string) bool {
	params, err := createParams(r, query)
	if err != nil {
		writeError(w, http.StatusBadRequest, "InvalidRequest", err.Error())
		return false
	}
	roleID := strings.ToLower(params["roleid"])
	if !isGUID(roleID) {
		writeError(w, http.StatusBadRequest, "InvalidRequest", "RoleId is required and must be a GUID.")
		return false
	}
	secs, err := strconv.ParseInt(params["requestedttl"], 10, 64)
	if err != nil || secs <= 0 || secs > int64(time.Duration(1<<62)/time.Second) {
		writeError(w, http.StatusBadRequest, "InvalidRequest", "RequestedTTL is required and must be a positive number of seconds.")
		return false
	}
	ttl := time.Duration(secs) * time.Second
	var requested time.Time
	if t := params["requestedtime"]; t != "" {
		if requested, err = parseDateTime(t); err != nil {
			writeError(w, http.StatusBadRequest, "InvalidRequest", "RequestedTime is not a date and time.")
			return false
		}
	}

	s.mu.Lock()
	role, ok := s.roles[roleID]
	if !ok {
		s.mu.Unlock()
		writeError(w, http.StatusBadRequest, "InvalidRequest", "No PAM role has the id "+roleID+".")
		return false
	}
	if role.TTL > 0 && ttl > role.TTL {
		s.mu.Unlock()
		writeError(w, http.StatusBadRequest, "InvalidRequest",
			fmt.Sprintf("RequestedTTL %d exceeds the role's TTL of %d seconds.", secs, int64(role.TTL/time.Second)))
		return false
	}
	now := s.now()
	req := &Request{
		ID: newGUID(), Owner: user, CreatorID: accountID(user), RoleID: roleID,
		Justification: params["justification"], CreationTime: now, RequestedTime: now,
		RequestedTTL: ttl,
	}
	if !requested.IsZero() {
		req.RequestedTime = requested
	}
	if !role.available(req.RequestedTime) {
		s.mu.Unlock()
		writeError(w, http.StatusBadRequest, "InvalidRequest", fmt.Sprintf(
			"The PAM role '%s' is available only from %s to %s (UTC); the request would start at %s.",
			role.DisplayName, role.AvailableFrom.UTC().Format("15:04:05"), role.AvailableTo.UTC().Format("15:04:05"),
			req.RequestedTime.UTC().Format("15:04:05")))
		return false
	}
	switch {
	case role.HoldProcessing:
		req.Status = pamapi.StatusProcessing
	case role.Processing > 0:
		req.Status = pamapi.StatusProcessing
		req.processingUntil = now.Add(role.Processing)
	default:
		s.gateLocked(req, now, false)
	}
	s.storeLocked(req)
	body := requestJSON(req, baseURL(r)+"/api/pamresources/$metadata#pamrequests/@Element")
	s.mu.Unlock()

	writeJSON(w, http.StatusCreated, body)
	return true
}

// createParams reads the create properties from the query and, overriding them, a JSON body;
// names are case-insensitive.
func createParams(r *http.Request, query url.Values) (map[string]string, error) {
	params := map[string]string{}
	for k, v := range query {
		if len(v) > 0 {
			params[strings.ToLower(k)] = v[0]
		}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes))
	if err != nil {
		return nil, fmt.Errorf("reading the body: %w", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return params, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // keep "3600" exact rather than a float
	var props map[string]any
	if err := dec.Decode(&props); err != nil || props == nil {
		return nil, fmt.Errorf("the body is not a JSON object")
	}
	for k, v := range props {
		switch v := v.(type) {
		case string:
			params[strings.ToLower(k)] = v
		case json.Number:
			params[strings.ToLower(k)] = v.String()
		case nil:
			params[strings.ToLower(k)] = ""
		default:
			return nil, fmt.Errorf("the property %q must be a string or a number", k)
		}
	}
	return params, nil
}

func (s *Server) closeRequest(w http.ResponseWriter, key, user string) bool {
	s.mu.Lock()
	req, ok := s.requests[strings.ToLower(key)]
	if !ok || req.Owner != user {
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, "RequestNotFound", "No request with the id "+key+" was found for the caller.")
		return false
	}
	s.refreshLocked(req)
	if req.Status.Ended() {
		status := req.Status
		s.mu.Unlock()
		// Undocumented in real PAM: a client must confirm the state with a list call.
		writeError(w, http.StatusBadRequest, "RequestNotOpen", "The request is not open: its status is "+string(status)+".")
		return false
	}
	req.Status = pamapi.StatusClosed
	s.syncApprovalLocked(req)
	s.mu.Unlock()
	w.WriteHeader(http.StatusOK)
	return true
}

func (s *Server) listRoles(w http.ResponseWriter, r *http.Request, query url.Values) {
	filter, ok := filterParam(w, query, roleProps(&Role{}))
	if !ok {
		return
	}
	out := []any{}
	s.mu.Lock()
	for _, id := range s.roleOrder {
		role := s.roles[id]
		if filter.Match(roleProps(role)) {
			out = append(out, roleJSON(role))
		}
	}
	s.mu.Unlock()
	writeList(w, r, "pamroles", out)
}

func (s *Server) listApprovals(w http.ResponseWriter, r *http.Request, query url.Values, user string) {
	filter, ok := filterParam(w, query, approvalProps(&Request{}, &Role{}, ""))
	if !ok {
		return
	}
	out := []any{}
	s.mu.Lock()
	for _, id := range s.order {
		req := s.requests[id]
		s.refreshLocked(req) // a timed Processing may have ended in PendingApproval
		approvalID, pending := s.approval[id]
		role := s.roles[req.RoleID]
		if !pending || role == nil || !slices.Contains(role.Approvers, user) {
			continue
		}
		if filter.Match(approvalProps(req, role, approvalID)) {
			out = append(out, approvalJSON(req, role, approvalID))
		}
	}
	s.mu.Unlock()
	writeList(w, r, "pamrequeststoapprove", out)
}

func (s *Server) decide(w http.ResponseWriter, key, user string, approve bool) bool {
	s.mu.Lock()
	reqID, ok := s.approvals[strings.ToLower(key)]
	var req *Request
	var role *Role
	if ok {
		req = s.requests[reqID]
		role = s.roles[req.RoleID]
	}
	if !ok || role == nil || !slices.Contains(role.Approvers, user) {
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, "ApprovalNotFound", "No pending approval with the id "+key+" was found for the caller.")
		return false
	}
	s.decideLocked(req, approve)
	s.mu.Unlock()
	w.WriteHeader(http.StatusOK)
	return true
}

// requestProps are a request's properties for $filter, typed for comparison.
func requestProps(r *Request) map[string]any {
	return map[string]any{
		"RequestId": r.ID, "CreatorID": r.CreatorID, "Justification": r.Justification,
		"DisplayName": nil, "CreationTime": r.CreationTime, "CreationMethod": creationMethod,
		"ExpirationTime": r.ExpirationTime, "RoleId": r.RoleID, "RequestedTTL": seconds(r.RequestedTTL),
		"RequestedTime": r.RequestedTime, "RequestStatus": string(r.Status),
	}
}

const creationMethod = "PAM Web API"

// requestBody is a request as PAM serialises it, in the order of the documentation's examples.
type requestBody struct {
	Metadata       string `json:"odata.metadata,omitempty"`
	RequestID      string `json:"RequestId"`
	CreatorID      string `json:"CreatorID"`
	Justification  string `json:"Justification"`
	CreationTime   string `json:"CreationTime"`
	CreationMethod string `json:"CreationMethod"`
	ExpirationTime string `json:"ExpirationTime"`
	RoleID         string `json:"RoleId"`
	RequestedTTL   string `json:"RequestedTTL"` // a string of seconds, as PAM writes it
	RequestedTime  string `json:"RequestedTime"`
	RequestStatus  string `json:"RequestStatus"`
}

func requestJSON(r *Request, metadata string) requestBody {
	return requestBody{
		Metadata: metadata, RequestID: r.ID, CreatorID: r.CreatorID, Justification: r.Justification,
		CreationTime: formatTime(r.CreationTime), CreationMethod: creationMethod,
		ExpirationTime: formatTime(r.ExpirationTime), RoleID: r.RoleID,
		RequestedTTL:  strconv.FormatInt(seconds(r.RequestedTTL), 10),
		RequestedTime: formatTime(r.RequestedTime), RequestStatus: string(r.Status),
	}
}

func roleProps(r *Role) map[string]any {
	return map[string]any{
		"RoleId": r.ID, "DisplayName": r.DisplayName, "Description": r.Description, "TTL": seconds(r.TTL),
		"AvailableFrom": r.AvailableFrom, "AvailableTo": r.AvailableTo, "MFAEnabled": r.MFAEnabled,
		"ApprovalEnabled": r.ApprovalEnabled, "AvailabilityWindowEnabled": r.AvailabilityWindowEnabled,
	}
}

type roleBody struct {
	RoleID                    string `json:"RoleId"`
	DisplayName               string `json:"DisplayName"`
	Description               string `json:"Description"`
	TTL                       string `json:"TTL"`
	AvailableFrom             string `json:"AvailableFrom"`
	AvailableTo               string `json:"AvailableTo"`
	MFAEnabled                bool   `json:"MFAEnabled"`
	ApprovalEnabled           bool   `json:"ApprovalEnabled"`
	AvailabilityWindowEnabled bool   `json:"AvailabilityWindowEnabled"`
}

func roleJSON(r *Role) roleBody {
	return roleBody{
		RoleID: r.ID, DisplayName: r.DisplayName, Description: r.Description,
		TTL: strconv.FormatInt(seconds(r.TTL), 10), AvailableFrom: formatTime(r.AvailableFrom),
		AvailableTo: formatTime(r.AvailableTo), MFAEnabled: r.MFAEnabled, ApprovalEnabled: r.ApprovalEnabled,
		AvailabilityWindowEnabled: r.AvailabilityWindowEnabled,
	}
}

func approvalProps(req *Request, role *Role, approvalID string) map[string]any {
	return map[string]any{
		"RoleName": role.DisplayName, "Requestor": req.Owner, "Justification": req.Justification,
		"RequestedTTL": seconds(req.RequestedTTL), "RequestedTime": req.RequestedTime,
		"CreationTime": req.CreationTime, "FIMRequestID": req.ID, "RequestorID": req.CreatorID,
		"ApprovalObjectID": approvalID,
	}
}

// objectID is how the approval object wraps its ids: {"Value":"<guid>"}.
type objectID struct {
	Value string `json:"Value"`
}

type approvalBody struct {
	RoleName         string   `json:"RoleName"`
	Requestor        string   `json:"Requestor"`
	Justification    string   `json:"Justification"`
	RequestedTTL     string   `json:"RequestedTTL"`
	RequestedTime    string   `json:"RequestedTime"`
	CreationTime     string   `json:"CreationTime"`
	FIMRequestID     objectID `json:"FIMRequestID"`
	RequestorID      objectID `json:"RequestorID"`
	ApprovalObjectID objectID `json:"ApprovalObjectID"`
}

func approvalJSON(req *Request, role *Role, approvalID string) approvalBody {
	return approvalBody{
		RoleName: role.DisplayName, Requestor: req.Owner, Justification: req.Justification,
		RequestedTTL:  strconv.FormatInt(seconds(req.RequestedTTL), 10),
		RequestedTime: formatTime(req.RequestedTime), CreationTime: formatTime(req.CreationTime),
		FIMRequestID: objectID{req.ID}, RequestorID: objectID{req.CreatorID}, ApprovalObjectID: objectID{approvalID},
	}
}

func seconds(d time.Duration) int64 { return int64(d / time.Second) }

// formatTime writes UTC with fractional seconds; the unset time is PAM's zone-less zero value.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "0001-01-01T00:00:00"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// baseURL is the service root as the client addressed it, keeping a path prefix that a proxy or
// http.StripPrefix removed before the emulator saw the request.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	prefix := ""
	if u, err := url.ParseRequestURI(r.RequestURI); err == nil {
		if i := strings.Index(strings.ToLower(u.Path), resourceRoot); i > 0 {
			prefix = u.Path[:i]
		}
	}
	return scheme + "://" + r.Host + prefix
}

func writeList(w http.ResponseWriter, r *http.Request, set string, items []any) {
	writeJSON(w, http.StatusOK, struct {
		Metadata string `json:"odata.metadata"`
		Value    []any  `json:"value"`
	}{baseURL(r) + "/api/pamresources/$metadata#" + set, items})
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	data, err := json.Marshal(body)
	if err != nil { // only plain strings, numbers and bools are marshalled; cannot happen
		status, data = http.StatusInternalServerError, []byte(`{}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

func writeHTML(w http.ResponseWriter, status int, page string) {
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, page)
}

// odataError is the OData v3 error body ASP.NET Web API writes.
type odataError struct {
	Error struct {
		Code    string `json:"code"`
		Message struct {
			Lang  string `json:"lang"`
			Value string `json:"value"`
		} `json:"message"`
	} `json:"odata.error"`
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	var body odataError
	body.Error.Code = code
	body.Error.Message.Lang = "en-US"
	body.Error.Message.Value = message
	writeJSON(w, status, body)
}

// statusWriter remembers the status written, for the call log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// bufferWriter takes the answer of a call whose response is to be lost or spoiled.
type bufferWriter struct {
	header      http.Header
	status      int
	wroteHeader bool
	body        []byte
}

func (w *bufferWriter) Header() http.Header { return w.header }

func (w *bufferWriter) Write(b []byte) (int, error) {
	w.wroteHeader = true
	w.body = append(w.body, b...)
	return len(b), nil
}

func (w *bufferWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = code, true
	}
}
