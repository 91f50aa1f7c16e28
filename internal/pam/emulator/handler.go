package emulator

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"time"
)

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

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	call := Call{Time: s.now(), Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, UserAgent: r.UserAgent()}
	ep, key, allowed, known := route(r.Method, r.URL.Path)
	call.Endpoint = ep
	call.RequestID = strings.ToLower(key)

	s.mu.Lock()
	fault := (*Fault)(nil)
	if known {
		fault = s.faults.pickLocked(ep)
	}
	s.mu.Unlock()

	if fault != nil {
		call.Fault = fault.String()
		if fault.Delay > 0 {
			timer := time.NewTimer(fault.Delay)
			select {
			case <-timer.C:
			case <-r.Context().Done():
				timer.Stop()
				s.record(call)
				return
			}
		}
		switch {
		case fault.Drop:
			s.record(call)
			panic(http.ErrAbortHandler) // the server closes the connection without an answer
		case fault.Status != 0:
			if fault.RetryAfter != "" {
				w.Header().Set("Retry-After", fault.RetryAfter)
			}
			writeError(w, fault.Status, "InjectedFault", http.StatusText(fault.Status))
			call.Status = fault.Status
			s.record(call)
			return
		case fault.LoseResponse:
			s.handle(httptest.NewRecorder(), r, &call, ep, key, allowed, known)
			call.Status = 0
			s.record(call)
			panic(http.ErrAbortHandler)
		}
	}

	sw := &statusWriter{ResponseWriter: w}
	s.handle(sw, r, &call, ep, key, allowed, known)
	call.Status = sw.status
	s.record(call)
}

func (s *Server) record(call Call) {
	s.mu.Lock()
	s.calls = append(s.calls, call)
	s.mu.Unlock()
	if s.opts.Log != nil {
		line := fmt.Sprintf("%s %s", call.Method, call.Path)
		if call.Query != "" {
			line += "?" + call.Query
		}
		line += fmt.Sprintf(" user=%q status=%d", call.User, call.Status)
		if call.Fault != "" {
			line += " fault=" + strings.ReplaceAll(call.Fault, " ", "-")
		}
		s.opts.Log(line)
	}
}

// handle serves one call after faults: version, authentication, method, then the endpoint.
func (s *Server) handle(w http.ResponseWriter, r *http.Request, call *Call, ep Endpoint, key, allowed string, known bool) {
	if !known {
		writeError(w, http.StatusNotFound, "NotFound", "No resource matches "+r.URL.Path)
		return
	}
	if v := r.URL.Query().Get("v"); v != "" && v != "1" {
		writeError(w, http.StatusBadRequest, "UnsupportedApiVersion", fmt.Sprintf("API version %q is not supported; the supported version is 1", v))
		return
	}
	user, ok := s.authenticate(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Basic realm="PAM"`)
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, "<html><head><title>401 - Unauthorized</title></head><body><h1>401 - Unauthorized: Access is denied due to invalid credentials.</h1></body></html>")
		return
	}
	call.User = user
	if r.Method != allowed {
		w.Header().Set("Allow", allowed)
		writeError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "The requested resource does not support http method '"+r.Method+"'.")
		return
	}
	if r.Method == http.MethodPost && r.ContentLength < 0 {
		// IIS refuses a POST without a length.
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusLengthRequired)
		_, _ = io.WriteString(w, "<html><body><h1>Length Required</h1></body></html>")
		return
	}
	switch ep {
	case EndpointListRequests:
		s.listRequests(w, r, user)
	case EndpointCreateRequest:
		call.Effective = s.createRequest(w, r, user)
	case EndpointCloseRequest:
		call.Effective = s.closeRequest(w, key, user)
	case EndpointListRoles:
		s.listRoles(w, r)
	case EndpointListApprovals:
		s.listApprovals(w, r, user)
	case EndpointApprove, EndpointReject:
		call.Effective = s.decide(w, key, user, ep == EndpointApprove)
	}
}

func (s *Server) authenticate(r *http.Request) (string, bool) {
	if len(s.opts.Users) == 0 {
		return "", true
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return "", false
	}
	want, known := s.opts.Users[user]
	if !known || want != pass {
		return "", false
	}
	return user, true
}

func (s *Server) listRequests(w http.ResponseWriter, r *http.Request, user string) {
	filter, ok := filterParam(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	var out []map[string]any
	for _, id := range s.order {
		req := s.requests[id]
		if req.Owner != user {
			continue
		}
		s.refreshLocked(req)
		if filter.Match(requestProps(req)) {
			out = append(out, requestJSON(req))
		}
	}
	s.mu.Unlock()
	writeList(w, r, "pamrequests", out)
}

// filterParam parses the $filter query parameter, answering 400 when it is not valid.
func filterParam(w http.ResponseWriter, r *http.Request) (Filter, bool) {
	filter, err := ParseFilter(r.URL.Query().Get("$filter"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "InvalidFilter", "The $filter is not valid: "+err.Error())
		return Filter{}, false
	}
	return filter, true
}

func (s *Server) createRequest(w http.ResponseWriter, r *http.Request, user string) bool {
	params, err := createParams(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "InvalidRequest", err.Error())
		return false
	}
	roleID := strings.ToLower(params["roleid"])
	if !isGUID(roleID) {
		writeError(w, http.StatusBadRequest, "InvalidRequest", "RoleId is required and must be a GUID")
		return false
	}
	secs, err := strconv.ParseInt(params["requestedttl"], 10, 64)
	if err != nil || secs <= 0 {
		writeError(w, http.StatusBadRequest, "InvalidRequest", "RequestedTTL is required and must be a positive number of seconds")
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	role, ok := s.roles[roleID]
	if !ok {
		writeError(w, http.StatusBadRequest, "InvalidRequest", "No PAM role has the id "+roleID)
		return false
	}
	ttl := time.Duration(secs) * time.Second
	if role.TTL > 0 && ttl > role.TTL {
		writeError(w, http.StatusBadRequest, "InvalidRequest", "RequestedTTL exceeds the role's TTL")
		return false
	}
	now := s.now()
	req := &Request{
		ID: newGUID(), Owner: user, CreatorID: accountID(user), RoleID: roleID,
		Justification: params["justification"], CreationTime: now, RequestedTime: now,
		RequestedTTL: ttl, Status: StatusActive,
	}
	if t := params["requestedtime"]; t != "" {
		if parsed, err := parseDateTime(t); err == nil {
			req.RequestedTime = parsed
		}
	}
	if role.ApprovalEnabled {
		req.Status = StatusPendingApproval
	} else {
		req.ExpirationTime = now.Add(ttl)
	}
	s.storeLocked(req)
	body := requestJSON(req)
	body["odata.metadata"] = baseURL(r) + "/api/pamresources/$metadata#pamrequests/@Element"
	writeJSON(w, http.StatusCreated, body)
	return true
}

// createParams reads the create properties from the query or a JSON body, names case-insensitive.
func createParams(r *http.Request) (map[string]string, error) {
	params := map[string]string{}
	for k, v := range r.URL.Query() {
		if len(v) > 0 {
			params[strings.ToLower(k)] = v[0]
		}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the body: %w", err)
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return params, nil
	}
	var props map[string]any
	if err := json.Unmarshal(body, &props); err != nil {
		return nil, fmt.Errorf("the body is not a JSON object: %w", err)
	}
	for k, v := range props {
		switch v := v.(type) {
		case string:
			params[strings.ToLower(k)] = v
		case float64:
			params[strings.ToLower(k)] = strconv.FormatInt(int64(v), 10)
		}
	}
	return params, nil
}

func (s *Server) closeRequest(w http.ResponseWriter, key, user string) bool {
	if !isGUID(key) {
		writeError(w, http.StatusBadRequest, "InvalidKey", "The key must be a GUID literal guid'…'")
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	req, ok := s.requests[strings.ToLower(key)]
	if !ok || req.Owner != user {
		writeError(w, http.StatusNotFound, "RequestNotFound", "No request with this id was found for the caller")
		return false
	}
	s.refreshLocked(req)
	if req.Status.ended() {
		writeError(w, http.StatusBadRequest, "RequestNotOpen", "The request is not open: its status is "+string(req.Status))
		return false
	}
	req.Status = StatusClosed
	w.WriteHeader(http.StatusOK)
	return true
}

func (s *Server) listRoles(w http.ResponseWriter, r *http.Request) {
	filter, ok := filterParam(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	var out []map[string]any
	for _, role := range s.roles {
		props := map[string]any{
			"RoleId": role.ID, "DisplayName": role.DisplayName, "Description": role.Description,
			"TTL": int64(role.TTL / time.Second), "ApprovalEnabled": role.ApprovalEnabled,
			"MFAEnabled": role.MFAEnabled, "AvailabilityWindowEnabled": false,
		}
		if filter.Match(props) {
			props["TTL"] = strconv.FormatInt(int64(role.TTL/time.Second), 10)
			props["AvailableFrom"] = "0001-01-01T00:00:00"
			props["AvailableTo"] = "0001-01-01T00:00:00"
			out = append(out, props)
		}
	}
	s.mu.Unlock()
	writeList(w, r, "pamroles", out)
}

func (s *Server) listApprovals(w http.ResponseWriter, r *http.Request, user string) {
	filter, ok := filterParam(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	var out []map[string]any
	for approvalID, reqID := range s.approvals {
		req := s.requests[reqID]
		role := s.roles[req.RoleID]
		if req.Status != StatusPendingApproval || role == nil || !contains(role.Approvers, user) {
			continue
		}
		props := map[string]any{
			"RoleName": role.DisplayName, "Requestor": req.Owner, "Justification": req.Justification,
			"RequestedTTL": int64(req.RequestedTTL / time.Second), "RequestedTime": req.RequestedTime,
			"CreationTime": req.CreationTime,
		}
		if !filter.Match(props) {
			continue
		}
		out = append(out, map[string]any{
			"RoleName": role.DisplayName, "Requestor": req.Owner, "Justification": req.Justification,
			"RequestedTTL":     strconv.FormatInt(int64(req.RequestedTTL/time.Second), 10),
			"RequestedTime":    formatTime(req.RequestedTime),
			"CreationTime":     formatTime(req.CreationTime),
			"FIMRequestID":     map[string]string{"Value": req.ID},
			"RequestorID":      map[string]string{"Value": req.CreatorID},
			"ApprovalObjectID": map[string]string{"Value": approvalID},
		})
	}
	s.mu.Unlock()
	writeList(w, r, "pamrequeststoapprove", out)
}

func (s *Server) decide(w http.ResponseWriter, key, user string, approve bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	reqID, ok := s.approvals[strings.ToLower(key)]
	if !ok {
		writeError(w, http.StatusNotFound, "ApprovalNotFound", "No pending approval with this id")
		return false
	}
	req := s.requests[reqID]
	role := s.roles[req.RoleID]
	if role == nil || !contains(role.Approvers, user) || req.Status != StatusPendingApproval {
		writeError(w, http.StatusNotFound, "ApprovalNotFound", "No pending approval with this id for the caller")
		return false
	}
	if approve {
		req.Status = StatusActive
		req.ExpirationTime = s.now().Add(req.RequestedTTL)
	} else {
		req.Status = StatusRejected
	}
	delete(s.approvals, strings.ToLower(key))
	w.WriteHeader(http.StatusOK)
	return true
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// requestProps are a request's properties for $filter.
func requestProps(r *Request) map[string]any {
	return map[string]any{
		"RequestId": r.ID, "CreatorID": r.CreatorID, "Justification": r.Justification,
		"CreationTime": r.CreationTime, "CreationMethod": "PAM Web API", "ExpirationTime": r.ExpirationTime,
		"RoleId": r.RoleID, "RequestedTTL": int64(r.RequestedTTL / time.Second), "RequestedTime": r.RequestedTime,
		"RequestStatus": string(r.Status),
	}
}

// requestJSON is a request as PAM serialises it: string TTL, unset expiry without a zone.
func requestJSON(r *Request) map[string]any {
	return map[string]any{
		"RequestId":      r.ID,
		"CreatorID":      r.CreatorID,
		"Justification":  r.Justification,
		"CreationTime":   formatTime(r.CreationTime),
		"CreationMethod": "PAM Web API",
		"ExpirationTime": formatTime(r.ExpirationTime),
		"RoleId":         r.RoleID,
		"RequestedTTL":   strconv.FormatInt(int64(r.RequestedTTL/time.Second), 10),
		"RequestedTime":  formatTime(r.RequestedTime),
		"RequestStatus":  string(r.Status),
	}
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "0001-01-01T00:00:00"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func writeList(w http.ResponseWriter, r *http.Request, set string, items []map[string]any) {
	if items == nil {
		items = []map[string]any{}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"odata.metadata": baseURL(r) + "/api/pamresources/$metadata#" + set,
		"value":          items,
	})
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	data, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

// writeError answers with an OData v3 error, as ASP.NET Web API does.
func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, map[string]any{
		"odata.error": map[string]any{
			"code":    code,
			"message": map[string]string{"lang": "en-US", "value": message},
		},
	})
}
