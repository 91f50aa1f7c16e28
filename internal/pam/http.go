package pam

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pam-operator/pam-operator/internal/dialpolicy"
	"github.com/pam-operator/pam-operator/internal/pam/auth"
)

const (
	// DefaultTimeout bounds one call when the server sets none.
	DefaultTimeout = 30 * time.Second
	// maxBodyBytes caps what is read of a successful answer: a history of requests is small,
	// and a hostile or broken server must not make the operator allocate without bound.
	maxBodyBytes = 8 << 20
	// maxErrorBodyBytes caps what is read of an error answer.
	maxErrorBodyBytes = 64 << 10
	// maxDrainBytes caps what is read of an answer only to keep its connection: the rest of a
	// list or create, and the whole of a close's, which PAM sends empty. Past it the connection
	// is closed instead: one more dial costs less than reading what a hostile server sends.
	maxDrainBytes = 64 << 10
	// maxHeaderBytes caps an answer's headers (Go's default is 10 MiB). IIS sends a few hundred
	// bytes; a Negotiate token is a few KiB at most.
	maxHeaderBytes = 64 << 10
	resourcesPath  = "/api/pamresources/"
)

// Config says where PAM is and how to talk to it.
type Config struct {
	// URL is http(s)://host[:port][/prefix].
	URL string
	// Version is sent as ?v= when set.
	Version string
	// CABundle is PEM certificates to trust instead of the system roots.
	CABundle []byte
	// Timeout bounds each call; 0 means DefaultTimeout.
	Timeout time.Duration
	// Auth wraps the transport to authenticate; nil means none.
	Auth func(http.RoundTripper) http.RoundTripper
	// UserAgent identifies the operator in IIS logs.
	UserAgent string
	// Now is the clock used to interpret Retry-After dates; nil means time.Now.
	Now func() time.Time
	// Observe, when set, is told about every call: the operation, the HTTP status (0 when no
	// answer arrived) and how long it took. The operator feeds its metrics from it.
	Observe func(op string, code int, took time.Duration)
	// DialPolicy says which addresses the PAM host (and the target behind a proxy) may be
	// dialled at; nil refuses only those never dialled (link-local, cloud metadata).
	DialPolicy *dialpolicy.Policy
	// Proxy picks the proxy of a request, as http.Transport.Proxy does; nil means
	// http.ProxyFromEnvironment.
	Proxy func(*http.Request) (*url.URL, error)
}

type httpClient struct {
	base      *url.URL
	version   string
	timeout   time.Duration
	userAgent string
	now       func() time.Time
	observe   func(op string, code int, took time.Duration)
	http      *http.Client
}

var _ Client = (*httpClient)(nil)

// NewClient builds a Client for cfg. The transport speaks HTTP/1.1 only, because IIS does not
// offer Windows authentication over HTTP/2, keeps cookies, verifies TLS against CABundle (or the
// system roots) with TLS 1.2 at least, and never follows redirects, so credentials are never
// sent to another host. Every dial is checked against cfg.DialPolicy (see dialTransport). What
// an answer may make the client hold is bounded: headers 64 KiB, bodies as call says, and the
// whole exchange by cfg.Timeout.
func NewClient(cfg Config) (Client, error) {
	base, err := ParseServerURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	if len(cfg.CABundle) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cfg.CABundle) {
			return nil, errors.New("caBundle contains no PEM certificate")
		}
		tlsConfig.RootCAs = pool
	}
	transport := &http.Transport{
		TLSClientConfig:        tlsConfig,
		TLSHandshakeTimeout:    10 * time.Second,
		ForceAttemptHTTP2:      false,
		TLSNextProto:           map[string]func(string, *tls.Conn) http.RoundTripper{},
		MaxIdleConnsPerHost:    16,
		IdleConnTimeout:        90 * time.Second,
		ResponseHeaderTimeout:  0, // the per-call context deadline bounds the whole exchange
		MaxResponseHeaderBytes: maxHeaderBytes,
	}
	dialTransport(transport, cfg.DialPolicy, cfg.Proxy)
	var rt http.RoundTripper = transport
	if cfg.Auth != nil {
		rt = cfg.Auth(rt)
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		return nil, err
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	userAgent := cfg.UserAgent
	if userAgent == "" {
		userAgent = "pam-operator"
	}
	return &httpClient{
		base:      base,
		version:   cfg.Version,
		timeout:   timeout,
		userAgent: userAgent,
		now:       now,
		observe:   cfg.Observe,
		http: &http.Client{
			Transport:     rt,
			Jar:           jar,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// dialTransport makes transport dial through policy. Without a proxy the PAM host's dial is
// checked on each address it resolves to. With one, the dial goes to the proxy, which the
// administrator set (only the forbidden addresses apply to it), and the target is checked
// before the request leaves: every address its name resolves to here must pass. The proxy
// resolves the name again, and a name whose answer changes in between (DNS rebinding) could
// still lead it elsewhere; list the PAM host by IP address, or use no proxy, to close that.
func dialTransport(transport *http.Transport, policy *dialpolicy.Policy, proxy func(*http.Request) (*url.URL, error)) {
	if proxy == nil {
		proxy = http.ProxyFromEnvironment
	}
	var mu sync.Mutex
	proxies := map[string]bool{} // the proxies' host:port, as the transport dials them
	transport.Proxy = func(req *http.Request) (*url.URL, error) {
		u, err := proxy(req)
		if err != nil || u == nil {
			return u, err
		}
		if err := policy.CheckHost(req.Context(), "PAM host", req.URL.Hostname()); err != nil {
			return nil, err
		}
		mu.Lock()
		proxies[proxyAddr(u)] = true
		mu.Unlock()
		return u, nil
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	dialHost := policy.DialContext(dialer, "PAM host")
	dialProxy := (&dialpolicy.Policy{}).DialContext(dialer, "proxy")
	transport.DialContext = func(ctx context.Context, network, address string) (net.Conn, error) {
		mu.Lock()
		isProxy := proxies[address]
		mu.Unlock()
		if isProxy {
			return dialProxy(ctx, network, address)
		}
		return dialHost(ctx, network, address)
	}
}

// proxyAddr is the host:port the transport dials for a proxy URL. Should it ever differ, the
// proxy's dial is checked as the PAM host's: refused unless allowed, never sent elsewhere.
func proxyAddr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443", "socks5": "1080", "socks5h": "1080"}[u.Scheme]
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// ParseServerURL checks that raw is an absolute http(s) URL without user information, query or
// fragment, and returns it with any trailing slash removed from its path.
func ParseServerURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("url %q does not parse: %w", raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("url %q is not an absolute http or https URL", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("url must not contain user information, a query or a fragment")
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// Close implements Client. PAM answers 200 without a body: whatever comes with it is only
// drained, never held (see call).
func (c *httpClient) Close(ctx context.Context, requestID string) error {
	key, err := GUIDLiteral(requestID)
	if err != nil {
		return &Error{Op: "close", Class: ClassOther, Message: err.Error()}
	}
	return c.call(ctx, "close", http.MethodPost, "pamrequests("+key+")/Close", "", nil, nil)
}

// Get implements Client.
func (c *httpClient) Get(ctx context.Context, requestID string) (*Request, error) {
	filter, err := FilterByID(requestID)
	if err != nil {
		return nil, &Error{Op: "list", Class: ClassOther, Message: err.Error()}
	}
	want := strings.ToLower(requestID)
	var found *Request
	err = c.List(ctx, filter, func(r Request) {
		if found == nil && r.ID == want {
			found = &r
		}
	})
	if err != nil {
		return nil, err
	}
	if found == nil {
		return nil, &Error{Op: "list", Class: ClassNotFound, Message: "the account's requests do not include " + want}
	}
	return found, nil
}

// List implements Client. The answer is decoded as it arrives: it may hold thousands of
// requests, and neither it nor they are held whole.
func (c *httpClient) List(ctx context.Context, filter string, each func(Request)) error {
	return c.call(ctx, "list", http.MethodGet, "pamrequests", filter, nil, func(body io.Reader) error {
		return decodeRequests(body, each)
	})
}

// Create implements Client.
func (c *httpClient) Create(ctx context.Context, opts CreateOptions) (*Request, error) {
	roleID, err := NormalizeID(opts.RoleID)
	if err != nil {
		return nil, &Error{Op: "create", Class: ClassOther, Message: "role: " + err.Error()}
	}
	props := map[string]string{
		"RoleId":       roleID,
		"RequestedTTL": strconv.FormatInt(int64(opts.TTL/time.Second), 10),
	}
	if opts.Justification != "" {
		props["Justification"] = opts.Justification
	}
	if !opts.RequestedTime.IsZero() {
		props["RequestedTime"] = opts.RequestedTime.UTC().Format(time.RFC3339Nano)
	}
	payload, err := json.Marshal(props)
	if err != nil {
		return nil, err
	}
	var created *Request
	err = c.call(ctx, "create", http.MethodPost, "pamrequests", "", payload, func(body io.Reader) error {
		data, err := io.ReadAll(body)
		if err != nil {
			return err
		}
		created, err = decodeRequest(data)
		return err
	})
	if err != nil {
		return nil, err
	}
	return created, nil
}

// Roles implements Client. The answer is held whole: it is bounded to maxRoles roles.
func (c *httpClient) Roles(ctx context.Context) ([]Role, error) {
	var roles []Role
	err := c.call(ctx, "roles", http.MethodGet, "pamroles", "", nil, func(body io.Reader) error {
		var err error
		roles, err = decodeRoles(body)
		return err
	})
	if err != nil {
		return nil, err
	}
	return roles, nil
}

// call sends one call and returns exchange's error, marked when it is a create's whose outcome
// is unknown (see ErrCreateOutcomeUnknown). Whether the request left is told by the transport's
// trace: a call whose headers were never written cannot have been acted on.
func (c *httpClient) call(ctx context.Context, op, method, resource, filter string, payload []byte, read func(io.Reader) error) error {
	var sent atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteHeaders: func() { sent.Store(true) }})
	err := c.exchange(ctx, op, method, resource, filter, payload, read)
	var e *Error
	if op == "create" && sent.Load() && errors.As(err, &e) && mayHaveActed(e) {
		e.OutcomeUnknown = true
	}
	return err
}

// mayHaveActed reports whether a call that was sent may have been acted on despite e: no
// answer or an unreadable one (a refused login excepted: IIS answers it before the API runs),
// a 2xx whose body could not be read, or 408 and 5xx, which may come after the work was done.
// 429 and the other statuses are definite refusals.
func mayHaveActed(e *Error) bool {
	switch code := e.StatusCode; {
	case code == 0:
		return e.Class != ClassAuth
	case code >= 200 && code < 300, code == http.StatusRequestTimeout, code >= 500:
		return true
	}
	return false
}

// exchange sends one call and hands the body of a 2xx answer, at most maxBodyBytes of it, to read
// (nil: the body is only drained); it returns an *Error for any other answer, or when reading
// the body fails. The call's timeout bounds the whole exchange, a body that trickles in too.
func (c *httpClient) exchange(ctx context.Context, op, method, resource, filter string, payload []byte, read func(io.Reader) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	u := *c.base
	u.Path = c.base.Path + resourcesPath + resource
	u.RawQuery = c.query(filter)

	// A body-less POST still sends Content-Length: 0 (IIS answers 411 otherwise): Go does so
	// for a POST whose body is http.NoBody.
	var body io.Reader = http.NoBody
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return &Error{Op: op, Class: ClassOther, Message: "building the call: " + err.Error()}
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}

	start := time.Now()
	resp, err := c.http.Do(req)
	if c.observe != nil {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		c.observe(op, code, time.Since(start))
	}
	if err != nil {
		// A host or KDC the dial policy refuses stays refused until the server or the policy
		// changes.
		if errors.Is(err, ErrHostNotAllowed) {
			return &Error{Op: op, Class: ClassOther, Err: err}
		}
		// A credential the server or the KDC refused, or a method the server does not offer,
		// will not fix itself either.
		var authErr *auth.Error
		if errors.As(err, &authErr) {
			return &Error{Op: op, Class: ClassAuth, Message: authErr.Error(), Err: err}
		}
		// A certificate the caBundle does not trust will not fix itself: it needs a person.
		var certErr *tls.CertificateVerificationError
		if errors.As(err, &certErr) {
			return &Error{Op: op, Class: ClassOther, Err: err}
		}
		return &Error{Op: op, Class: ClassRetryable, Err: err}
	}
	defer resp.Body.Close()

	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if read != nil {
			body := &cappedBody{body: resp.Body, left: maxBodyBytes}
			err := read(body)
			switch {
			case body.over:
				return &Error{Op: op, Class: ClassOther, StatusCode: resp.StatusCode, Message: fmt.Sprintf("answer larger than %d bytes", maxBodyBytes), Err: ErrAnswerTooLarge}
			case body.err != nil:
				// The answer was cut short: its outcome is unknown, so treat it like a dropped call.
				return &Error{Op: op, Class: ClassRetryable, Err: body.err}
			case err != nil:
				return &Error{Op: op, Class: ClassOther, StatusCode: resp.StatusCode, Message: "unexpected answer: " + err.Error(), Err: err}
			}
		}
		// Read to its end, the connection can carry the next call.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrainBytes))
		return nil
	}

	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBodyBytes))
	code, message := parseErrorBody(data)
	e := &Error{
		Op:         op,
		Class:      classForStatus(resp.StatusCode),
		StatusCode: resp.StatusCode,
		Code:       code,
		Message:    message,
		RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), c.now()),
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		e.Message = "redirects are not followed; point the server URL at the PAM API itself"
	}
	if e.Class == ClassAuth && e.Message == "" {
		if offered := resp.Header.Values("WWW-Authenticate"); len(offered) > 0 {
			e.Message = "server offers " + offeredSchemes(offered)
		}
	}
	return e
}

// cappedBody reads an answer's body up to left bytes. It records why reading stopped: over, when
// the body holds more; err, when the connection failed.
type cappedBody struct {
	body io.Reader
	left int64
	over bool
	err  error
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.over {
		return 0, ErrAnswerTooLarge
	}
	if b.left <= 0 {
		// At the cap: one more byte means the body is larger.
		var probe [1]byte
		n, err := b.body.Read(probe[:])
		if n > 0 {
			b.over = true
			return 0, ErrAnswerTooLarge
		}
		return 0, b.record(err)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.body.Read(p)
	b.left -= int64(n)
	return n, b.record(err)
}

func (b *cappedBody) record(err error) error {
	if err != nil && err != io.EOF {
		b.err = err
	}
	return err
}

// query builds the query string. It is written by hand so that `$filter` keeps its dollar sign
// and spaces are %20, the form OData documents show.
func (c *httpClient) query(filter string) string {
	var parts []string
	if c.version != "" {
		parts = append(parts, "v="+url.QueryEscape(c.version))
	}
	if filter != "" {
		parts = append(parts, "$filter="+strings.ReplaceAll(url.QueryEscape(filter), "+", "%20"))
	}
	return strings.Join(parts, "&")
}

// offeredSchemes lists the authentication schemes of WWW-Authenticate values, without their
// parameters (which may carry challenge tokens).
func offeredSchemes(values []string) string {
	var schemes []string
	for _, c := range auth.ParseChallenges(values) {
		schemes = append(schemes, c.Scheme)
	}
	return strings.Join(schemes, ", ")
}
