// Command pam-emulator serves the in-memory MIM PAM REST API of internal/pam/emulator, for demos
// and for testing a pam-operator installation without MIM. It prints the ids of the roles and
// requests it seeds on stdout and logs each call in one line on stderr.
//
//	go run ./hack/pam-emulator --user 'PRIV\jen:secret' --role 'Domain Admins:3600' \
//	    --seed-request 'Domain Admins:3600:PRIV\jen' --fault close-request:503:5:2  # two 503s with Retry-After: 5
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/emulator/kerberosserver"
	"github.com/pam-operator/pam-operator/emulator/ntlmserver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil)
	switch {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// repeated collects a flag given several times.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

const faultUsage = `A fault (repeatable): endpoint:what[:option...]. endpoint is one of %s, or any.
what is an HTTP status, drop, lose-response, malformed-body, hold-answer or delay=<duration>. Options are retry-after=N,
times=N (0 = until stopped) and fraction=F; bare numbers after a status mean [retryAfter:]times,
so close-request:503:2 is two 503s and close-request:503:5:2 two 503s with Retry-After: 5.`

// run serves until ctx ends. ready, when set, receives the address once listening (for tests).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, ready func(addr string)) error {
	fs := flag.NewFlagSet("pam-emulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var users, roles, seeds, faults repeated
	listen := fs.String("listen", "127.0.0.1:8086", "Address to listen on.")
	tlsCert := fs.String("tls-cert", "", "PEM certificate; with --tls-key, serve https.")
	tlsKey := fs.String("tls-key", "", "PEM private key for --tls-cert.")
	seed := fs.Int64("seed", 1, "Seed for fraction= faults, so a run is reproducible.")
	keytabPath := fs.String("kerberos-keytab", "",
		"Service keytab: accept only Kerberos (Negotiate) tokens for --kerberos-spn, as IIS with Windows authentication does; callers are named user@REALM.")
	spn := fs.String("kerberos-spn", "", "Service principal the tokens must be for, e.g. HTTP/pam.example.test (default: any in the keytab).")
	useNTLM := fs.Bool("ntlm", false,
		"Authenticate the --user accounts with NTLMv2 (connection-bound, as IIS does) instead of basic; names may be DOMAIN\\user.")
	channelBinding := fs.String("channel-binding", "allow",
		"Extended Protection over https, as IIS tokenChecking: none, allow (check bindings that are sent) or require.")
	fs.Var(&users, "user", "An account as name:password (repeatable). None means no authentication.")
	fs.Var(&roles, "role", "A role as name[:ttlSeconds[:option,...]] (repeatable). Options: approval (every --user approves),\n"+
		"processing=<duration> (new requests stay Processing that long), window=HH:MM-HH:MM (requestable only then, UTC).")
	fs.Var(&seeds, "seed-request", "An Active request as roleName:ttlSeconds[:owner] (repeatable); the owner defaults to the only --user.")
	fs.Var(&faults, "fault", fmt.Sprintf(faultUsage, endpointNames()))
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	var err error

	logger := log.New(stderr, "pam-emulator ", log.LstdFlags|log.Lmicroseconds)
	opts := emulator.Options{Users: map[string]string{}, Log: func(line string) { logger.Println(line) }, Seed: *seed}
	var names []string
	for _, u := range users {
		name, pw, ok := strings.Cut(u, ":")
		if !ok || name == "" {
			return errors.New("--user: want name:password") // the value is not echoed: it may be a password
		}
		opts.Users[name] = pw
		names = append(names, name)
	}
	if *keytabPath != "" {
		if opts.Authenticate, err = kerberosAuthenticator(*keytabPath, *spn, *tlsCert, *channelBinding); err != nil {
			return err
		}
		if len(opts.Users) > 0 {
			return errors.New("--user and --kerberos-keytab exclude each other: Kerberos accounts come from the KDC")
		}
	}
	var connContext func(context.Context, net.Conn) context.Context
	if *useNTLM {
		if *keytabPath != "" || len(opts.Users) == 0 {
			return errors.New("--ntlm needs --user accounts and excludes --kerberos-keytab")
		}
		verifier, err := ntlmVerifier(opts.Users, *tlsCert, *channelBinding)
		if err != nil {
			return err
		}
		opts.Authenticate, connContext = verifier.Authenticate, verifier.ConnContext
	}
	emu := emulator.New(opts)

	roleIDs := map[string]string{}
	for _, spec := range roles {
		role, err := parseRole(spec, names)
		if err != nil {
			return err
		}
		role = emu.AddRole(role)
		roleIDs[role.DisplayName] = role.ID
		fmt.Fprintf(stdout, "role %s %q ttl=%s approval=%t\n", role.ID, role.DisplayName, role.TTL, role.ApprovalEnabled)
	}
	for _, spec := range seeds {
		req, err := parseSeed(spec, roleIDs, names)
		if err != nil {
			return err
		}
		req = emu.AddRequest(req)
		fmt.Fprintf(stdout, "request %s owner=%q status=%s expires=%s\n", req.ID, req.Owner, req.Status, req.ExpirationTime.Format(time.RFC3339))
	}
	for _, spec := range faults {
		f, err := parseFault(spec)
		if err != nil {
			return err
		}
		emu.InjectFault(f)
		logger.Printf("fault %q on %s times=%d fraction=%g", f, endpointName(f.Endpoint), f.Times, f.Fraction)
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	server := &http.Server{Handler: emu, ReadHeaderTimeout: 10 * time.Second, ErrorLog: logger, ConnContext: connContext}
	// IIS does not do Windows authentication over HTTP/2; neither does the emulator.
	server.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		// In-flight calls (a delay fault, say) get a moment; hijacked ones are already gone.
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = server.Shutdown(shutdown)
	}()
	scheme := "http"
	if *tlsCert != "" {
		scheme = "https"
	}
	logger.Printf("serving the MIM PAM REST API at %s://%s/api/pamresources/", scheme, ln.Addr())
	if ready != nil {
		ready(ln.Addr().String())
	}
	if scheme == "https" {
		err = server.ServeTLS(ln, *tlsCert, *tlsKey)
	} else {
		err = server.Serve(ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		<-stopped
		logger.Printf("stopped")
		return nil
	}
	return err
}

// parseRole reads name[:ttlSeconds[:option,...]], options being approval, processing=<duration>
// and window=HH:MM-HH:MM. MFA is not offered: without a control API no one could answer it.
func parseRole(spec string, users []string) (emulator.Role, error) {
	parts := strings.SplitN(spec, ":", 3) // a window's times hold colons
	if parts[0] == "" {
		return emulator.Role{}, fmt.Errorf("--role %q: want name[:ttlSeconds[:option,...]]", spec)
	}
	role := emulator.Role{DisplayName: parts[0]}
	if len(parts) > 1 && parts[1] != "" {
		secs, err := strconv.Atoi(parts[1])
		if err != nil || secs < 0 {
			return role, fmt.Errorf("--role %q: the TTL must be seconds", spec)
		}
		role.TTL = time.Duration(secs) * time.Second
	}
	if len(parts) < 3 {
		return role, nil
	}
	for _, opt := range strings.Split(parts[2], ",") {
		key, value, _ := strings.Cut(opt, "=")
		switch key {
		case "approval":
			role.ApprovalEnabled = true
			// Someone must be able to approve: every account, or the anonymous caller without accounts.
			role.Approvers = append([]string{}, users...)
			if len(users) == 0 {
				role.Approvers = []string{""}
			}
		case "processing":
			d, err := time.ParseDuration(value)
			if err != nil || d <= 0 {
				return role, fmt.Errorf("--role %q: processing wants a positive duration", spec)
			}
			role.Processing = d
		case "window":
			from, to, ok := strings.Cut(value, "-")
			start, err1 := time.Parse("15:04", from)
			end, err2 := time.Parse("15:04", to)
			if !ok || err1 != nil || err2 != nil {
				return role, fmt.Errorf("--role %q: window wants HH:MM-HH:MM (UTC)", spec)
			}
			role.AvailabilityWindowEnabled, role.AvailableFrom, role.AvailableTo = true, start, end
		default:
			return role, fmt.Errorf("--role %q: unknown option %q; want approval, processing=<duration> or window=HH:MM-HH:MM", spec, opt)
		}
	}
	return role, nil
}

// parseSeed reads roleName:ttlSeconds[:owner]; the owner may contain ':' no further than that.
func parseSeed(spec string, roleIDs map[string]string, users []string) (emulator.Request, error) {
	parts := strings.SplitN(spec, ":", 3)
	if len(parts) < 2 {
		return emulator.Request{}, fmt.Errorf("--seed-request %q: want roleName:ttlSeconds[:owner]", spec)
	}
	roleID, ok := roleIDs[parts[0]]
	if !ok {
		return emulator.Request{}, fmt.Errorf("--seed-request %q: no --role named %q", spec, parts[0])
	}
	secs, err := strconv.Atoi(parts[1])
	if err != nil || secs <= 0 {
		return emulator.Request{}, fmt.Errorf("--seed-request %q: the TTL must be a positive number of seconds", spec)
	}
	req := emulator.Request{RoleID: roleID, RequestedTTL: time.Duration(secs) * time.Second}
	switch {
	case len(parts) == 3:
		req.Owner = parts[2]
	case len(users) == 1:
		req.Owner = users[0] // the obvious owner; "" would be invisible to an authenticated caller
	}
	return req, nil
}

// parseFault reads endpoint:what[:option...]; see faultUsage.
func parseFault(spec string) (emulator.Fault, error) {
	bad := func(format string, args ...any) (emulator.Fault, error) {
		return emulator.Fault{}, fmt.Errorf("--fault %q: %s", spec, fmt.Sprintf(format, args...))
	}
	parts := strings.Split(spec, ":")
	if len(parts) < 2 {
		return bad("want endpoint:what[:option...]")
	}
	f := emulator.Fault{}
	if parts[0] != "any" {
		f.Endpoint = emulator.Endpoint(parts[0])
		if !slices.Contains(emulator.Endpoints(), f.Endpoint) {
			return bad("unknown endpoint %q; want one of %s or any", parts[0], endpointNames())
		}
	}
	switch what := parts[1]; {
	case what == "drop":
		f.Drop = true
	case what == "lose-response":
		f.LoseResponse = true
	case what == "hold-answer":
		f.HoldAnswer = true
	case what == "malformed-body":
		f.MalformedBody = true
	case strings.HasPrefix(what, "delay="):
		d, err := time.ParseDuration(strings.TrimPrefix(what, "delay="))
		if err != nil || d <= 0 {
			return bad("%q is not a positive duration", strings.TrimPrefix(what, "delay="))
		}
		f.Delay = d
	default:
		status, err := strconv.Atoi(what)
		if err != nil || status < 100 || status > 599 {
			return bad("%q is not an HTTP status, drop, lose-response, malformed-body, hold-answer or delay=<duration>", what)
		}
		f.Status = status
	}

	var bare []string
	for _, opt := range parts[2:] {
		key, value, keyed := strings.Cut(opt, "=")
		if !keyed {
			bare = append(bare, opt)
			continue
		}
		switch key {
		case "retry-after":
			if f.Status == 0 {
				return bad("retry-after goes with a status")
			}
			f.RetryAfter = value
		case "times":
			n, err := strconv.Atoi(value)
			if err != nil || n < 0 {
				return bad("times must be a number")
			}
			f.Times = n
		case "fraction":
			x, err := strconv.ParseFloat(value, 64)
			if err != nil || x < 0 || x > 1 {
				return bad("fraction must be between 0 and 1")
			}
			f.Fraction = x
		default:
			return bad("unknown option %q", key)
		}
	}
	// Bare numbers: [retryAfter:]times, retryAfter only after a status.
	if len(bare) == 2 && f.Status != 0 {
		f.RetryAfter, bare = bare[0], bare[1:]
	}
	switch len(bare) {
	case 0:
	case 1:
		n, err := strconv.Atoi(bare[0])
		if err != nil || n < 0 {
			return bad("times must be a number")
		}
		f.Times = n
	default:
		return bad("too many parts")
	}
	return f, nil
}

func endpointName(e emulator.Endpoint) string {
	if e == "" {
		return "any"
	}
	return string(e)
}

func endpointNames() string {
	var names []string
	for _, e := range emulator.Endpoints() {
		names = append(names, string(e))
	}
	return strings.Join(names, ", ")
}

// kerberosAuthenticator validates Negotiate tokens with a service keytab. With a TLS
// certificate, channel bindings are checked against it as the policy says.
func kerberosAuthenticator(keytabPath, spn, certPath, policy string) (func(http.ResponseWriter, *http.Request) (string, bool), error) {
	keytab, err := os.ReadFile(keytabPath)
	if err != nil {
		return nil, fmt.Errorf("--kerberos-keytab: %w", err)
	}
	cfg := kerberosserver.Config{Keytab: keytab, ServicePrincipalName: spn}
	switch policy {
	case "none", "allow", "require":
	default:
		return nil, fmt.Errorf("--channel-binding %q: want none, allow or require", policy)
	}
	if certPath != "" && policy != "none" {
		if cfg.Certificate, err = leafCertificate(certPath); err != nil {
			return nil, err
		}
		cfg.RequireChannelBinding = policy == "require"
	}
	verifier, err := kerberosserver.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("--kerberos-keytab: %w", err)
	}
	return verifier.Authenticate, nil
}

// leafCertificate reads the first certificate of a PEM file.
func leafCertificate(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return x509.ParseCertificate(block.Bytes)
}

// ntlmVerifier accepts NTLMv2 from the accounts; with a TLS certificate, channel bindings are
// checked against it as the policy says.
func ntlmVerifier(users map[string]string, certPath, policy string) (*ntlmserver.Server, error) {
	opts := ntlmserver.Options{Users: map[string]ntlmserver.User{}}
	for name, password := range users {
		user := ntlmserver.User{Username: name, Password: password}
		if domain, _, ok := strings.Cut(name, `\`); ok && opts.Domain == "" {
			opts.Domain = domain
		}
		opts.Users[name] = user
	}
	var err error
	if opts.ChannelBinding, err = ntlmserver.ParseChannelBindingPolicy(policy); err != nil {
		return nil, fmt.Errorf("--channel-binding: %w", err)
	}
	if certPath != "" {
		if opts.Certificate, err = leafCertificate(certPath); err != nil {
			return nil, err
		}
	}
	return ntlmserver.New(opts)
}
