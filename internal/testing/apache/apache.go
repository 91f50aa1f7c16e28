// Package apache runs Apache httpd with mod_auth_gssapi for tests: an acceptor of Kerberos
// (MIT's GSS-API) and NTLM (gss-ntlmssp) that this project did not write, as a reverse proxy in
// front of a backend such as the PAM emulator. It stands where IIS stands in front of MIM, so
// that the operator's Windows authentication is checked against an independent implementation
// and not only against the emulator's own verifiers.
//
// Apache runs unprivileged on a free port of 127.0.0.1 with a configuration of its own under a
// temporary directory, never touching the machine's Apache or Kerberos configuration. The
// programs come from Debian's apache2, libapache2-mod-auth-gssapi and gss-ntlmssp packages;
// `make apache` installs them. When they are missing the test fails (it is never skipped).
package apache

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// The paths under which Apache serves the backend. All accept Kerberos and NTLM through
// mod_auth_gssapi, connection-bound as IIS authenticates NTLM; they differ in what a 401 offers
// and what reaches the client.
const (
	// PathNegotiateAndNTLM offers "WWW-Authenticate: Negotiate" and "NTLM", as IIS with both
	// Windows authentication providers does: NTLM clients speak the raw NTLM scheme.
	PathNegotiateAndNTLM = "/negotiate-and-ntlm"
	// PathNegotiateOnly offers only "WWW-Authenticate: Negotiate", as IIS with the Negotiate
	// provider alone does: NTLM clients must carry NTLM inside Negotiate.
	PathNegotiateOnly = "/negotiate-only"
	// PathDropsProof is PathNegotiateAndNTLM behind a careless proxy that drops
	// WWW-Authenticate from success answers, and with it Kerberos's AP-REP: a client that
	// asked for mutual authentication must not trust such an answer.
	PathDropsProof = "/drops-proof"
)

// DefaultUserHeader is the request header in which Apache passes the authenticated user (its
// REMOTE_USER) to the backend.
const DefaultUserHeader = "X-Remote-User"

const (
	startTimeout = 20 * time.Second
	stopTimeout  = 10 * time.Second
	portAttempts = 5
	// modulesDir is where Debian installs Apache's modules.
	modulesDir = "/usr/lib/apache2/modules"
	// ntlmMech is gss-ntlmssp's registration with MIT's GSS-API mechanism loader.
	ntlmMech = "/etc/gss/mech.d/mech.ntlmssp.conf"
)

// binaryCandidates are where Debian (apache2) and other systems (httpd) put the server.
var binaryCandidates = []string{"/usr/sbin/apache2", "/usr/sbin/httpd"}

// modules are the modules the configuration loads, by module name and file.
var modules = [][2]string{
	{"mpm_event_module", "mod_mpm_event.so"},
	{"authn_core_module", "mod_authn_core.so"},
	{"authz_core_module", "mod_authz_core.so"},
	{"authz_user_module", "mod_authz_user.so"},
	{"headers_module", "mod_headers.so"},
	{"proxy_module", "mod_proxy.so"},
	{"proxy_http_module", "mod_proxy_http.so"},
	{"auth_gssapi_module", "mod_auth_gssapi.so"},
}

// NTLMUser is an account gss-ntlmssp accepts.
type NTLMUser struct {
	Domain, Username, Password string
}

// Options configure the server.
type Options struct {
	// Backend is the URL Apache forwards authenticated requests to, e.g. the emulator's.
	Backend string
	// Krb5Conf is the krb5.conf of the realm (kdc.KDC.Krb5Conf) and Keytab the service keytab
	// Apache accepts Kerberos tickets with: it must hold HTTP/127.0.0.1, the only service
	// Apache accepts, as IIS accepts only its SPN. Without a keytab, only NTLM is accepted.
	Krb5Conf string
	Keytab   []byte
	// NTLMUsers are the accounts gss-ntlmssp accepts, with their passwords.
	NTLMUsers []NTLMUser
	// UserHeader names the header carrying the authenticated user to the backend;
	// DefaultUserHeader when empty. Apache overwrites whatever a client sent in it.
	UserHeader string
}

// Server is a running Apache. Its methods fail the test on error.
type Server struct {
	// URL is Apache's base URL, http://127.0.0.1:port; the backend is served under the Path
	// constants.
	URL string

	t        testing.TB
	dir      string
	errPath  string
	uid, gid int

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	stopped bool
}

// Start writes the configuration, starts Apache in the foreground on a free port, waits until
// it answers and stops it when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, err := findBinary()
	if err != nil {
		t.Fatalf("apache: %v; run `make apache` to install Debian's apache2, libapache2-mod-auth-gssapi and gss-ntlmssp", err)
	}
	if opts.UserHeader == "" {
		opts.UserHeader = DefaultUserHeader
	}
	backend, err := url.Parse(opts.Backend)
	if err != nil || backend.Scheme != "http" || backend.Host == "" {
		t.Fatalf("apache: the backend %q is not an http URL", opts.Backend)
	}
	dir, uid, gid := workDir(t)
	s := &Server{t: t, dir: dir, errPath: filepath.Join(dir, "error.log"), uid: uid, gid: gid}
	s.mkdir("htdocs", uid, gid)
	s.mkdir("htdocs/unauthorized", uid, gid)
	files := map[string][]byte{
		"htdocs/unauthorized/negotiate-only.html": []byte(unauthorizedPage),
		"krb5.conf":   []byte(opts.Krb5Conf),
		"http.keytab": opts.Keytab,
		"ntlm-users":  ntlmUserFile(opts.NTLMUsers),
	}
	for name, content := range files {
		s.writeFile(name, content, uid, gid)
	}
	// Everything MIT's libraries and gss-ntlmssp read comes from the directory: the realm's
	// krb5.conf, a replay cache of its own, and the NTLM accounts.
	env := append(withoutAuthEnv(os.Environ()),
		"KRB5_CONFIG="+filepath.Join(dir, "krb5.conf"),
		"KRB5RCACHEDIR="+dir,
		"KRB5CCNAME=FILE:"+filepath.Join(dir, "ccache"),
		"NTLM_USER_FILE="+filepath.Join(dir, "ntlm-users"),
	)

	var lastErr error
	for range portAttempts {
		port, err := freePort()
		if err != nil {
			t.Fatalf("apache: finding a free port: %v", err)
		}
		s.URL = "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		conf, err := config(configData{
			Dir: dir, Port: port, Backend: strings.TrimSuffix(backend.String(), "/"),
			Keytab: filepath.Join(dir, "http.keytab"), UserHeader: opts.UserHeader,
			HasKeytab: len(opts.Keytab) > 0,
			Modules:   modules, ModulesDir: modulesDir,
			Paths: []pathData{
				{Path: PathNegotiateAndNTLM},
				{Path: PathNegotiateOnly, NegotiateOnly: true},
				{Path: PathDropsProof, DropsProof: true},
			},
		})
		if err != nil {
			t.Fatalf("apache: %v", err)
		}
		s.writeFile("httpd.conf", conf, uid, gid)
		if lastErr = s.start(bin, env, uid, gid); lastErr == nil {
			t.Cleanup(s.Stop)
			return s
		}
		if !errors.Is(lastErr, errAddrInUse) {
			break
		}
	}
	t.Fatalf("apache: %v", lastErr)
	return nil
}

// SetKeytab replaces the service keytab, as when the service account's password changes and
// the server is given its new keys. mod_auth_gssapi reads the keytab for each request, so the
// next one uses it; tickets encrypted in a key it no longer holds are refused.
func (s *Server) SetKeytab(keytab []byte) {
	s.t.Helper()
	// Written beside and renamed, so that no request reads half a keytab.
	s.writeFile("http.keytab.new", keytab, s.uid, s.gid)
	if err := os.Rename(filepath.Join(s.dir, "http.keytab.new"), filepath.Join(s.dir, "http.keytab")); err != nil {
		s.t.Fatalf("apache: %v", err)
	}
}

// Request is one request Apache logged.
type Request struct {
	// Status is what Apache answered: 401 for a challenge or a refusal, otherwise the
	// backend's answer.
	Status int
	// Mechanism is how mod_auth_gssapi authenticated it, scheme and GSS-API mechanism:
	// "Negotiate/krb5", "Negotiate/NTLM" (NTLM inside Negotiate), "NTLM/NTLM"; "" when it
	// did not.
	Mechanism string
	// Path is the path asked for.
	Path string
}

// Requests returns the requests Apache has logged so far, oldest first. Apache writes the
// line once it has answered, so a request whose answer a client read may not be listed yet:
// poll for it.
func (s *Server) Requests() []Request {
	s.t.Helper()
	var reqs []Request
	for _, line := range strings.Split(readFile(filepath.Join(s.dir, "access.log")), "\n") {
		fields := strings.Fields(line)
		if len(fields) != 3 {
			continue
		}
		status, err := strconv.Atoi(fields[0])
		if err != nil {
			s.t.Fatalf("apache: an access log line without a status: %q", line)
		}
		r := Request{Status: status, Mechanism: fields[1], Path: fields[2]}
		if r.Mechanism == "-" {
			r.Mechanism = ""
		}
		reqs = append(reqs, r)
	}
	return reqs
}

// Refusals returns when Apache refused a token, oldest first: each failed
// gss_accept_sec_context that mod_auth_gssapi logs, as for a wrong NTLM password or a ticket
// it cannot decrypt. A handshake leg that continues is not one. mod_auth_gssapi logs before it
// answers, so a refusal a client has seen is listed.
func (s *Server) Refusals() []time.Time {
	s.t.Helper()
	var at []time.Time
	for _, line := range strings.Split(s.ErrorLog(), "\n") {
		if !strings.Contains(line, "gss_accept_sec_context() failed") {
			continue
		}
		// Apache stamps each line in local time: [Thu Dec 03 12:52:52.513446 2026].
		end := strings.IndexByte(line, ']')
		if !strings.HasPrefix(line, "[") || end < 0 {
			s.t.Fatalf("apache: an error log line without a time: %q", line)
		}
		when, err := time.ParseInLocation("Mon Jan 02 15:04:05.000000 2006", line[1:end], time.Local)
		if err != nil {
			s.t.Fatalf("apache: %v", err)
		}
		at = append(at, when)
	}
	return at
}

// ErrorLog returns Apache's error log, for failure messages. mod_auth_gssapi logs no tokens.
func (s *Server) ErrorLog() string {
	data, err := os.ReadFile(s.errPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		s.t.Fatalf("apache: reading the error log: %v", err)
	}
	return string(data)
}

// Stop terminates Apache and waits for it to exit; it is safe to call more than once.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped || s.cmd == nil {
		return
	}
	s.stopped = true
	// SIGTERM stops Apache at once, closing kept-alive connections.
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(stopTimeout):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

var errAddrInUse = errors.New("Apache's port was taken")

// start runs Apache in the foreground and waits until its port accepts connections, failing
// early when the process exits.
func (s *Server) start(bin string, env []string, uid, gid int) error {
	out, err := os.Create(filepath.Join(s.dir, "apache.out"))
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command(bin, "-d", s.dir, "-f", filepath.Join(s.dir, "httpd.conf"), "-DFOREGROUND")
	cmd.Env = env
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if uid >= 0 {
		// Started by root, Apache would switch its children to a User of its configuration;
		// started as nobody, the whole server is unprivileged, as for any other user.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	addr := strings.TrimPrefix(s.URL, "http://")
	deadline := time.Now().Add(startTimeout)
	for {
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			s.mu.Lock()
			s.cmd, s.exited = cmd, exited
			s.mu.Unlock()
			return nil
		}
		select {
		case <-exited:
			logs := s.ErrorLog() + readFile(filepath.Join(s.dir, "apache.out"))
			if strings.Contains(logs, "Address already in use") {
				return errAddrInUse
			}
			return fmt.Errorf("apache exited before serving:\n%s", logs)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("apache did not accept connections on %s within %v:\n%s", addr, startTimeout, s.ErrorLog())
		}
	}
}

type pathData struct {
	Path                      string
	NegotiateOnly, DropsProof bool
}

type configData struct {
	Dir, Backend, Keytab, UserHeader, ModulesDir string
	Port                                         int
	HasKeytab                                    bool
	Modules                                      [][2]string
	Paths                                        []pathData
}

// configTemplate is a complete httpd.conf: nothing is read from /etc/apache2.
//
// mod_auth_gssapi answers a 401 with "Negotiate" and, when NTLM is possible (connection-bound),
// "NTLM". httpd moves a 401's headers where mod_headers cannot reach them, so the Negotiate-only
// path serves its 401 through an error document, whose location replaces the bare pair with
// "Negotiate" alone and leaves a challenge carrying a token as it is. The
// acceptor name restricts Kerberos to HTTP/127.0.0.1, as IIS accepts only its own SPN; it also
// makes gss-ntlmssp take server credentials despite the credential store. The user header is
// set in the fixups phase, after authentication, and replaces whatever the client sent.
var configTemplate = template.Must(template.New("httpd.conf").Parse(`ServerRoot "{{.Dir}}"
DefaultRuntimeDir "{{.Dir}}"
PidFile "{{.Dir}}/httpd.pid"
ErrorLog "{{.Dir}}/error.log"
LogLevel warn
Listen 127.0.0.1:{{.Port}}
ServerName 127.0.0.1
{{range .Modules}}LoadModule {{index . 0}} {{$.ModulesDir}}/{{index . 1}}
{{end}}
StartServers 1
ServerLimit 1
ThreadsPerChild 16
ThreadLimit 16
MaxRequestWorkers 16
MinSpareThreads 1
MaxSpareThreads 16
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 30
# Status, mechanism and path, what Requests reads: never a header, which could hold a token.
LogFormat "%>s %{GSS_MECH}e %U" mechanism
CustomLog "{{.Dir}}/access.log" mechanism
ProxyRequests Off
DocumentRoot "{{.Dir}}/htdocs"

{{range .Paths}}
<Location "{{.Path}}/">
  AuthType GSSAPI
  AuthName "PAM"
  GssapiConnectionBound On
  GssapiPublishMech On
{{- if $.HasKeytab}}
  GssapiCredStore keytab:{{$.Keytab}}
  GssapiAcceptorName HTTP@127.0.0.1
  GssapiAllowedMech krb5
{{- end}}
  GssapiAllowedMech ntlmssp
  Require valid-user
  RequestHeader set {{$.UserHeader}} expr=%{REMOTE_USER}
{{- if .NegotiateOnly}}
  ErrorDocument 401 /unauthorized/negotiate-only.html
{{- end}}
{{- if .DropsProof}}
  Header always unset WWW-Authenticate
{{- end}}
  ProxyPass "{{$.Backend}}/"
  ProxyPassReverse "{{$.Backend}}/"
</Location>
{{end}}
<Location "/unauthorized/">
  Header always set WWW-Authenticate Negotiate "expr=resp('WWW-Authenticate') == 'Negotiate'"
</Location>
`))

func config(data configData) ([]byte, error) {
	var b bytes.Buffer
	if err := configTemplate.Execute(&b, data); err != nil {
		return nil, fmt.Errorf("writing httpd.conf: %w", err)
	}
	return b.Bytes(), nil
}

// ntlmUserFile is the Heimdal format gss-ntlmssp reads: DOMAIN:user:password per line.
func ntlmUserFile(users []NTLMUser) []byte {
	var b bytes.Buffer
	for _, u := range users {
		fmt.Fprintf(&b, "%s:%s:%s\n", u.Domain, u.Username, u.Password)
	}
	return b.Bytes()
}

// workDir makes the server's directory. Run by root, Apache runs as nobody, which must be able
// to reach the directory: t.TempDir's parents are private to root, so the directory is made
// directly under the system's temporary directory and handed to nobody. uid is -1 otherwise.
func workDir(t testing.TB) (dir string, uid, gid int) {
	t.Helper()
	if os.Geteuid() != 0 {
		return t.TempDir(), -1, -1
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("apache: running as root, Apache runs as nobody, and there is none: %v", err)
	}
	uid, _ = strconv.Atoi(nobody.Uid)
	gid, _ = strconv.Atoi(nobody.Gid)
	dir, err = os.MkdirTemp("", "apache-test-")
	if err != nil {
		t.Fatalf("apache: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatalf("apache: %v", err)
	}
	return dir, uid, gid
}

// writeFile writes a file of the server's directory, readable only by the server's user: the
// keytab and the NTLM accounts are secrets.
func (s *Server) writeFile(name string, content []byte, uid, gid int) {
	s.t.Helper()
	path := filepath.Join(s.dir, name)
	if err := os.WriteFile(path, content, 0o600); err != nil {
		s.t.Fatalf("apache: writing %s: %v", name, err)
	}
	if uid >= 0 {
		if err := os.Chown(path, uid, gid); err != nil {
			s.t.Fatalf("apache: %v", err)
		}
	}
}

func (s *Server) mkdir(name string, uid, gid int) {
	s.t.Helper()
	path := filepath.Join(s.dir, name)
	if err := os.Mkdir(path, 0o700); err != nil {
		s.t.Fatalf("apache: %v", err)
	}
	if uid >= 0 {
		if err := os.Chown(path, uid, gid); err != nil {
			s.t.Fatalf("apache: %v", err)
		}
	}
}

const unauthorizedPage = "<html><body><h1>401 Unauthorized</h1></body></html>\n"

// findBinary looks for Apache and checks that the modules and gss-ntlmssp are installed.
func findBinary() (string, error) {
	bin := ""
	for _, candidate := range binaryCandidates {
		if info, err := os.Stat(candidate); err == nil && info.Mode()&0o111 != 0 {
			bin = candidate
			break
		}
	}
	if bin == "" {
		return "", errors.New("Apache httpd is not installed (no /usr/sbin/apache2)")
	}
	var missing []string
	for _, m := range modules {
		if _, err := os.Stat(filepath.Join(modulesDir, m[1])); err != nil {
			missing = append(missing, m[1])
		}
	}
	if _, err := os.Stat(ntlmMech); err != nil {
		missing = append(missing, ntlmMech+" (gss-ntlmssp)")
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("Apache is installed, but not %s", strings.Join(missing, ", "))
	}
	return bin, nil
}

// freePort returns a TCP port of 127.0.0.1 that is free right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// withoutAuthEnv drops variables that would point MIT Kerberos or gss-ntlmssp elsewhere, or
// make gss-ntlmssp write a debug log.
func withoutAuthEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if strings.HasPrefix(kv, "KRB5") || strings.HasPrefix(kv, "NTLM_") || strings.HasPrefix(kv, "GSSNTLMSSP_") ||
			strings.HasPrefix(kv, "NETBIOS_") || strings.HasPrefix(kv, "GSS_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

func readFile(path string) string {
	data, _ := os.ReadFile(path)
	return string(data)
}
