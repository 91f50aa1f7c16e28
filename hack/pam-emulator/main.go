// Command pam-emulator serves the in-memory MIM PAM REST API of internal/pam/emulator, for demos
// and for testing a pam-operator installation without MIM. It logs each call in one line.
//
//	go run ./hack/pam-emulator --user 'PRIV\jen:secret' --role 'Domain Admins:3600' \
//	    --seed-request 'Domain Admins:3600:PRIV\jen' --fault close-request:503:5:2  # two 503s with Retry-After: 5
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pam-operator/pam-operator/internal/pam/emulator"
)

// repeated collects a flag given several times.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run() error {
	var users, roles, seeds, faults repeated
	listen := flag.String("listen", "127.0.0.1:8086", "Address to listen on.")
	tlsCert := flag.String("tls-cert", "", "PEM certificate; with --tls-key, serve https.")
	tlsKey := flag.String("tls-key", "", "PEM private key for --tls-cert.")
	flag.Var(&users, "user", "An account as name:password (repeatable). None means no authentication.")
	flag.Var(&roles, "role", "A role as name[:ttlSeconds[:approval]] (repeatable).")
	flag.Var(&seeds, "seed-request", "An Active request as roleName:ttlSeconds[:owner] (repeatable).")
	flag.Var(&faults, "fault", "A fault as endpoint:status[:times], endpoint:status:retryAfter:times, endpoint:drop[:times], endpoint:lose-response[:times] or endpoint:delay=2s[:times] (repeatable; times 0 = until stopped). "+
		"Endpoints: list-requests, create-request, close-request, list-roles, list-approvals, approve, reject, any.")
	flag.Parse()

	logger := log.New(os.Stderr, "pam-emulator ", log.LstdFlags|log.Lmicroseconds)
	opts := emulator.Options{Users: map[string]string{}, Log: func(line string) { logger.Println(line) }}
	for _, u := range users {
		name, pw, ok := strings.Cut(u, ":")
		if !ok || name == "" {
			return fmt.Errorf("--user %q: want name:password", name)
		}
		opts.Users[name] = pw
	}
	emu := emulator.New(opts)

	roleIDs := map[string]string{}
	for _, spec := range roles {
		parts := strings.Split(spec, ":")
		role := emulator.Role{DisplayName: parts[0]}
		if len(parts) > 1 {
			secs, err := strconv.Atoi(parts[1])
			if err != nil {
				return fmt.Errorf("--role %q: ttl must be seconds", spec)
			}
			role.TTL = time.Duration(secs) * time.Second
		}
		role.ApprovalEnabled = len(parts) > 2 && parts[2] == "approval"
		role = emu.AddRole(role)
		roleIDs[role.DisplayName] = role.ID
		logger.Printf("role %q id=%s ttl=%s approval=%t", role.DisplayName, role.ID, role.TTL, role.ApprovalEnabled)
	}
	for _, spec := range seeds {
		parts := strings.SplitN(spec, ":", 3)
		if len(parts) < 2 {
			return fmt.Errorf("--seed-request %q: want roleName:ttlSeconds[:owner]", spec)
		}
		roleID, ok := roleIDs[parts[0]]
		if !ok {
			return fmt.Errorf("--seed-request %q: no --role named %q", spec, parts[0])
		}
		secs, err := strconv.Atoi(parts[1])
		if err != nil {
			return fmt.Errorf("--seed-request %q: ttl must be seconds", spec)
		}
		owner := ""
		if len(parts) == 3 {
			owner = parts[2]
		}
		req := emu.AddRequest(emulator.Request{Owner: owner, RoleID: roleID, RequestedTTL: time.Duration(secs) * time.Second})
		logger.Printf("request id=%s owner=%q role=%q status=%s expires=%s", req.ID, owner, parts[0], req.Status, req.ExpirationTime.Format(time.RFC3339))
	}
	for _, spec := range faults {
		f, err := parseFault(spec)
		if err != nil {
			return err
		}
		emu.InjectFault(f)
		logger.Printf("fault %s on %q times=%d", f, f.Endpoint, f.Times)
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	server := &http.Server{Handler: emu, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = server.Shutdown(shutdown)
	}()
	scheme := "http"
	if *tlsCert != "" && *tlsKey != "" {
		scheme = "https"
	}
	logger.Printf("serving the MIM PAM REST API at %s://%s/api/pamresources/", scheme, ln.Addr())
	if scheme == "https" {
		err = server.ServeTLS(ln, *tlsCert, *tlsKey)
	} else {
		err = server.Serve(ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// parseFault reads endpoint:status[:times], endpoint:status:retryAfter:times, endpoint:drop[:times] or
// endpoint:delay=2s[:times].
func parseFault(spec string) (emulator.Fault, error) {
	parts := strings.Split(spec, ":")
	if len(parts) < 2 {
		return emulator.Fault{}, fmt.Errorf("--fault %q: want endpoint:status[:times] or endpoint:status:retryAfter:times", spec)
	}
	f := emulator.Fault{}
	if parts[0] != "any" {
		f.Endpoint = emulator.Endpoint(parts[0])
	}
	rest := parts[2:]
	switch {
	case parts[1] == "drop":
		f.Drop = true
	case parts[1] == "lose-response":
		f.LoseResponse = true
	case strings.HasPrefix(parts[1], "delay="):
		d, err := time.ParseDuration(strings.TrimPrefix(parts[1], "delay="))
		if err != nil {
			return f, fmt.Errorf("--fault %q: %w", spec, err)
		}
		f.Delay = d
	default:
		status, err := strconv.Atoi(parts[1])
		if err != nil || status < 100 || status > 599 {
			return f, fmt.Errorf("--fault %q: %q is not an HTTP status, drop, lose-response or delay=…", spec, parts[1])
		}
		f.Status = status
		if len(rest) > 1 {
			f.RetryAfter, rest = rest[0], rest[1:]
		}
	}
	if len(rest) > 0 {
		times, err := strconv.Atoi(rest[0])
		if err != nil {
			return f, fmt.Errorf("--fault %q: times must be a number", spec)
		}
		f.Times = times
	}
	return f, nil
}
