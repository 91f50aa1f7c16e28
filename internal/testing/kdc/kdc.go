// Package kdc runs a real MIT Kerberos KDC for tests: a throwaway realm under t.TempDir(),
// served by krb5kdc on 127.0.0.1 and administered with kadmin.local, never touching the
// machine's own Kerberos configuration.
//
// The binaries come from Debian's krb5-kdc and krb5-admin-server packages; `make kdc` installs
// them. When they are missing the test fails (it is never skipped): a Kerberos test that
// silently does not run proves nothing.
package kdc

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultRealm is the realm Start creates unless told otherwise.
const DefaultRealm = "PAM.TEST"

const (
	// startTimeout bounds how long Start waits for krb5kdc to accept connections.
	startTimeout = 15 * time.Second
	// stopTimeout bounds how long Stop waits after SIGTERM before it kills the KDC.
	stopTimeout = 10 * time.Second
	// portAttempts is how often Start tries another port when the one it picked was taken
	// between choosing and binding it.
	portAttempts = 5
)

// binaries are the MIT programs the harness runs.
var binaries = []string{"kdb5_util", "krb5kdc", "kadmin.local"}

// searchDirs are looked in for the binaries before PATH: Debian installs them in /usr/sbin,
// which is not on every user's PATH.
var searchDirs = []string{"/usr/sbin", "/usr/local/sbin"}

// Option changes how Start builds the realm.
type Option func(*options)

type options struct {
	realm string
}

// WithRealm names the realm (Kerberos realms are conventionally in capitals, like the AD
// domain they stand for).
func WithRealm(realm string) Option {
	return func(o *options) { o.realm = realm }
}

// KDC is a running throwaway realm. Its methods fail the test on error, so a test reads as a
// list of steps.
type KDC struct {
	// Realm is the realm's name.
	Realm string
	// Addr is the KDC's address, 127.0.0.1:port; it answers over TCP and UDP.
	Addr string

	t       testing.TB
	dir     string
	env     []string
	bins    map[string]string
	logPath string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	stopped bool
	ktSeq   int
}

// Start creates a realm with a random master password, starts krb5kdc on a free port of
// 127.0.0.1, waits until it accepts connections and stops it when the test ends.
func Start(t testing.TB, opts ...Option) *KDC {
	t.Helper()
	o := options{realm: DefaultRealm}
	for _, opt := range opts {
		opt(&o)
	}
	bins, err := findBinaries()
	if err != nil {
		t.Fatalf("kdc: %v; run `make kdc` to install Debian's krb5-kdc and krb5-admin-server", err)
	}
	dir := t.TempDir()
	k := &KDC{
		Realm:   o.realm,
		t:       t,
		dir:     dir,
		bins:    bins,
		logPath: filepath.Join(dir, "kdc.log"),
	}
	// Everything the MIT tools read comes from the temporary directory: KRB5_CONFIG replaces
	// /etc/krb5.conf, KRB5_KDC_PROFILE replaces /etc/krb5kdc/kdc.conf, and a private
	// credential cache keeps the test away from the user's tickets.
	k.env = append(withoutKerberosEnv(os.Environ()),
		"KRB5_CONFIG="+filepath.Join(dir, "krb5.conf"),
		"KRB5_KDC_PROFILE="+filepath.Join(dir, "kdc.conf"),
		"KRB5CCNAME=FILE:"+filepath.Join(dir, "ccache"),
		"KRB5_KTNAME=FILE:"+filepath.Join(dir, "default.keytab"),
	)

	var lastErr error
	for attempt := 0; attempt < portAttempts; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("kdc: finding a free port: %v", err)
		}
		k.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		k.writeConfig()
		if attempt == 0 {
			// The database does not depend on the port: create it once.
			master := randomHex(24)
			if out, err := k.run(k.bins["kdb5_util"], "-r", k.Realm, "create", "-s", "-P", master); err != nil {
				t.Fatalf("kdc: kdb5_util create: %v\n%s", err, out)
			}
		}
		if lastErr = k.start(); lastErr == nil {
			t.Cleanup(k.Stop)
			return k
		}
		if !errors.Is(lastErr, errAddrInUse) {
			break
		}
	}
	t.Fatalf("kdc: %v", lastErr)
	return nil
}

// Krb5Conf returns a krb5.conf for clients of this realm. Hostnames are used as written:
// neither DNS canonicalisation nor reverse lookups, so that an SPN such as HTTP/127.0.0.1
// means exactly that.
func (k *KDC) Krb5Conf() string {
	return fmt.Sprintf(`[libdefaults]
 default_realm = %[1]s
 dns_lookup_kdc = false
 dns_lookup_realm = false
 dns_canonicalize_hostname = false
 rdns = false
 noaddresses = true
 udp_preference_limit = 1
 default_tkt_enctypes = aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96
 default_tgs_enctypes = aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96
 permitted_enctypes = aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96

[realms]
 %[1]s = {
  kdc = %[2]s
 }

[domain_realm]
 127.0.0.1 = %[1]s
`, k.Realm, k.Addr)
}

// AddPrincipal creates name (without realm, e.g. "alice" or "HTTP/127.0.0.1") with a
// password. Like Active Directory, the realm requires pre-authentication.
func (k *KDC) AddPrincipal(name, password string) {
	k.t.Helper()
	k.Kadmin(fmt.Sprintf("addprinc -pw %s %s", quote(password), quote(name)))
}

// AddRandomKeyPrincipal creates name with a random key, as for a service account whose
// password nobody knows; Keytab exports its key.
func (k *KDC) AddRandomKeyPrincipal(name string) {
	k.t.Helper()
	k.Kadmin("addprinc -randkey " + quote(name))
}

// Keytab returns a keytab holding the current keys of the principals. The keys are exported
// as they are (-norandkey): a password principal keeps its password.
func (k *KDC) Keytab(principals ...string) []byte {
	k.t.Helper()
	if len(principals) == 0 {
		k.t.Fatalf("kdc: Keytab needs at least one principal")
	}
	k.mu.Lock()
	k.ktSeq++
	path := filepath.Join(k.dir, fmt.Sprintf("export-%d.keytab", k.ktSeq))
	k.mu.Unlock()
	quoted := make([]string, len(principals))
	for i, p := range principals {
		quoted[i] = quote(p)
	}
	k.Kadmin(fmt.Sprintf("ktadd -k %s -norandkey %s", path, strings.Join(quoted, " ")))
	data, err := os.ReadFile(path)
	if err != nil {
		k.t.Fatalf("kdc: reading the exported keytab: %v", err)
	}
	_ = os.Remove(path)
	return data
}

// SetPassword changes the password of name.
func (k *KDC) SetPassword(name, password string) {
	k.t.Helper()
	k.Kadmin(fmt.Sprintf("cpw -pw %s %s", quote(password), quote(name)))
}

// RotateKey gives name a new random key with the next key version and discards the old
// one, as when a service account's password changes or krbtgt is reset twice: tickets
// encrypted in the old key stop working.
func (k *KDC) RotateKey(name string) {
	k.t.Helper()
	k.Kadmin("cpw -randkey " + quote(name))
}

// ExpirePassword marks name's password as expired: the KDC answers KDC_ERR_KEY_EXPIRED to a
// correct password until it is changed. The expiry is set a day back: "now" would still be
// accepted within the same second.
func (k *KDC) ExpirePassword(name string) {
	k.t.Helper()
	k.Kadmin("modprinc -pwexpire yesterday " + quote(name))
}

// Kadmin runs one kadmin.local query against the realm and returns its standard output.
// kadmin.local exits 0 even when the query fails, so anything unexpected on standard error
// fails the test.
func (k *KDC) Kadmin(query string) string {
	k.t.Helper()
	cmd := exec.Command(k.bins["kadmin.local"], "-r", k.Realm, "-q", query)
	cmd.Env = k.env
	cmd.Dir = k.dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var problems []string
	for _, line := range strings.Split(stderr.String(), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "No policy specified") {
			continue
		}
		problems = append(problems, line)
	}
	if err != nil || len(problems) > 0 {
		k.t.Fatalf("kdc: kadmin.local -q %q failed: %v\n%s", redactQuery(query), err, strings.Join(problems, "\n"))
	}
	return stdout.String()
}

// Request is one request the KDC logged.
type Request struct {
	// Kind is "AS_REQ" (a login) or "TGS_REQ" (a service ticket or a renewal).
	Kind string
	// Status is the KDC's verdict: "ISSUE" when it issued a ticket, otherwise the reason,
	// e.g. "NEEDED_PREAUTH", "PREAUTH_FAILED", "CLIENT_NOT_FOUND", "LOOKING_UP_SERVER".
	Status string
	// Client and Server are principal names with realm, e.g. "alice@PAM.TEST" and
	// "krbtgt/PAM.TEST@PAM.TEST".
	Client, Server string
}

var (
	requestLine = regexp.MustCompile(`(AS_REQ|TGS_REQ) \(.*?\) [0-9A-Fa-f.:]+: ([A-Z_]+): (.*)$`)
	principals  = regexp.MustCompile(`(\S+@\S+) for (\S+@[^,\s]+)`)
)

// Requests returns the AS and TGS requests the KDC has logged so far, oldest first. MIT
// krb5kdc writes the line before it sends its answer, so a request a client has completed
// is already listed.
func (k *KDC) Requests() []Request {
	k.t.Helper()
	data, err := os.ReadFile(k.logPath)
	if err != nil {
		k.t.Fatalf("kdc: reading the KDC log: %v", err)
	}
	var reqs []Request
	for _, line := range strings.Split(string(data), "\n") {
		m := requestLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		r := Request{Kind: m[1], Status: m[2]}
		if p := principals.FindStringSubmatch(m[3]); p != nil {
			r.Client, r.Server = p[1], p[2]
		}
		reqs = append(reqs, r)
	}
	return reqs
}

// Log returns the KDC's log, for failure messages.
func (k *KDC) Log() string {
	data, _ := os.ReadFile(k.logPath)
	return string(data)
}

// Stop terminates the KDC and waits for it to exit. Tests call it to make the KDC
// unreachable; the harness calls it when the test ends. It is safe to call more than once.
func (k *KDC) Stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stopped || k.cmd == nil {
		return
	}
	k.stopped = true
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.exited:
	case <-time.After(stopTimeout):
		_ = k.cmd.Process.Kill()
		<-k.exited
	}
}

var errAddrInUse = errors.New("the KDC's port was taken")

// start runs krb5kdc in the foreground (-n) and waits until its TCP port accepts
// connections, failing early when the process exits.
func (k *KDC) start() error {
	out, err := os.Create(filepath.Join(k.dir, "krb5kdc.out"))
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command(k.bins["krb5kdc"], "-n", "-r", k.Realm)
	cmd.Env = k.env
	cmd.Dir = k.dir
	cmd.Stdout, cmd.Stderr = out, out
	// The KDC dies with the test binary even if cleanup never runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting krb5kdc: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()

	deadline := time.Now().Add(startTimeout)
	for {
		conn, err := net.DialTimeout("tcp", k.Addr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			k.mu.Lock()
			k.cmd, k.exited = cmd, exited
			k.mu.Unlock()
			return nil
		}
		select {
		case <-exited:
			logs := k.Log() + k.readFile("krb5kdc.out")
			if strings.Contains(logs, "Address already in use") {
				return errAddrInUse
			}
			return fmt.Errorf("krb5kdc exited before serving:\n%s", logs)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("krb5kdc did not accept connections on %s within %v:\n%s", k.Addr, startTimeout, k.Log())
		}
	}
}

// writeConfig writes kdc.conf (the KDC's own settings: where the database is, which
// addresses to serve, ticket lifetimes, the log) and krb5.conf (what the MIT tools and
// clients read).
func (k *KDC) writeConfig() {
	k.t.Helper()
	kdcConf := fmt.Sprintf(`[kdcdefaults]
 kdc_listen = %[2]s
 kdc_tcp_listen = %[2]s

[realms]
 %[1]s = {
  database_name = %[3]s
  key_stash_file = %[4]s
  acl_file = %[5]s
  max_life = 10h
  max_renewable_life = 7d
  supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
  default_principal_flags = +preauth
 }

[logging]
 kdc = FILE:%[6]s
 admin_server = FILE:%[7]s
 default = FILE:%[7]s
`, k.Realm, k.Addr,
		filepath.Join(k.dir, "principal"),
		filepath.Join(k.dir, "stash"),
		filepath.Join(k.dir, "kadm5.acl"),
		k.logPath,
		filepath.Join(k.dir, "admin.log"))
	for name, content := range map[string]string{
		"kdc.conf":  kdcConf,
		"krb5.conf": k.Krb5Conf(),
		"kadm5.acl": "",
	} {
		if err := os.WriteFile(filepath.Join(k.dir, name), []byte(content), 0o600); err != nil {
			k.t.Fatalf("kdc: writing %s: %v", name, err)
		}
	}
}

func (k *KDC) run(bin string, args ...string) ([]byte, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = k.env
	cmd.Dir = k.dir
	return cmd.CombinedOutput()
}

func (k *KDC) readFile(name string) string {
	data, _ := os.ReadFile(filepath.Join(k.dir, name))
	return string(data)
}

// findBinaries looks for the MIT programs in /usr/sbin (where Debian puts them), then
// /usr/local/sbin and PATH.
func findBinaries() (map[string]string, error) {
	found := map[string]string{}
	var missing []string
	for _, name := range binaries {
		path := ""
		for _, dir := range searchDirs {
			candidate := filepath.Join(dir, name)
			if info, err := os.Stat(candidate); err == nil && !info.IsDir() && info.Mode()&0o111 != 0 {
				path = candidate
				break
			}
		}
		if path == "" {
			if p, err := exec.LookPath(name); err == nil {
				path = p
			}
		}
		if path == "" {
			missing = append(missing, name)
			continue
		}
		found[name] = path
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("MIT Kerberos KDC programs not found in /usr/sbin, /usr/local/sbin or PATH: %s", strings.Join(missing, ", "))
	}
	return found, nil
}

// freePort returns a port of 127.0.0.1 that is free for both TCP and UDP right now.
func freePort() (int, error) {
	for i := 0; i < 20; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return port, nil
	}
	return 0, errors.New("no port free for both TCP and UDP")
}

// withoutKerberosEnv drops variables that would point the MIT tools at another realm.
func withoutKerberosEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if strings.HasPrefix(kv, "KRB5") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// quote makes s one argument of a kadmin query. kadmin's parser (libss) takes a double
// quote inside a quoted word as two double quotes, and gives backslashes no meaning.
func quote(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// redactQuery hides passwords in a query echoed in a failure message.
func redactQuery(q string) string {
	return regexp.MustCompile(`-pw ("(?:[^"]|"")*"|\S+)`).ReplaceAllString(q, "-pw ***")
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}
