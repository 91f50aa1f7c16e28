package emulator

import (
	"net/http"
	"strings"
)

// resourceRoot is where the API lives. IIS routes case-insensitively, so matching does too.
const resourceRoot = "/api/pamresources/"

// route is what a path resolves to.
type route struct {
	endpoint Endpoint
	// methods are the ones the resource answers; any other gets 405.
	methods []string
	// key is the GUID of a keyed action (close, approve, reject), as sent.
	key string
	// badKey describes a malformed key, which gets 400.
	badKey string
}

// resolve maps a request path to a route; ok is false for a path the API does not have. The path
// may lack its leading slash, as http.StripPrefix can leave it.
func resolve(method, path string) (rt route, ok bool) {
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	if len(path) < len(resourceRoot) || !strings.EqualFold(path[:len(resourceRoot)], resourceRoot) {
		return route{}, false
	}
	rest := path[len(resourceRoot):]
	switch strings.ToLower(rest) {
	case "pamrequests":
		if method == http.MethodPost {
			return route{endpoint: EndpointCreateRequest, methods: []string{http.MethodGet, http.MethodPost}}, true
		}
		return route{endpoint: EndpointListRequests, methods: []string{http.MethodGet, http.MethodPost}}, true
	case "pamroles":
		return route{endpoint: EndpointListRoles, methods: []string{http.MethodGet}}, true
	case "pamrequeststoapprove":
		return route{endpoint: EndpointListApprovals, methods: []string{http.MethodGet}}, true
	}

	// Keyed actions: <set>(guid'<id>')/<Action>.
	slash := strings.LastIndexByte(rest, '/')
	if slash < 0 {
		return route{}, false
	}
	segment, action := rest[:slash], strings.ToLower(rest[slash+1:])
	var set string
	switch {
	case hasPrefixFold(segment, "pamrequeststoapprove("):
		set = segment[:len("pamrequeststoapprove")]
	case hasPrefixFold(segment, "pamrequests("):
		set = segment[:len("pamrequests")]
	default:
		return route{}, false
	}
	switch {
	case strings.EqualFold(set, "pamrequests") && action == "close":
		rt.endpoint = EndpointCloseRequest
	case strings.EqualFold(set, "pamrequeststoapprove") && action == "approve":
		rt.endpoint = EndpointApprove
	case strings.EqualFold(set, "pamrequeststoapprove") && action == "reject":
		rt.endpoint = EndpointReject
	default:
		return route{}, false
	}
	rt.methods = []string{http.MethodPost}
	rt.key, rt.badKey = parseKey(segment[len(set):])
	return rt, true
}

// parseKey reads an OData v3 GUID key, exactly "(guid'" + 36-character GUID + "')".
func parseKey(s string) (key, problem string) {
	const open, closing = "(guid'", "')"
	if len(s) < len(open)+len(closing) || !strings.HasPrefix(s, open) || !strings.HasSuffix(s, closing) {
		return "", "the key must be an OData GUID literal, (guid'xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx')"
	}
	key = s[len(open) : len(s)-len(closing)]
	if !isGUID(key) {
		return "", "guid'" + key + "' is not a GUID"
	}
	return key, ""
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
