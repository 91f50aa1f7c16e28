package dialpolicy_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/pam-operator/pam-operator/internal/dialpolicy"
)

func mustParse(t *testing.T, list string) *dialpolicy.Policy {
	t.Helper()
	p, err := dialpolicy.Parse(list)
	if err != nil {
		t.Fatalf("Parse(%q): %v", list, err)
	}
	return p
}

func TestParse(t *testing.T) {
	cases := []struct {
		reason  string
		list    string
		wantErr string
	}{
		{"empty allows any host not forbidden", "", ""},
		{"blank items are ignored", " , ,", ""},
		{"names, globs, addresses and CIDRs", "*.corp.example, pam.corp.example,10.0.0.0/8,fd00::/8,192.0.2.7,2001:db8::1", ""},
		{"a range that holds forbidden addresses among others", "0.0.0.0/0,::/0", ""},
		{"a final dot and capitals", "PAM.Corp.Example.", ""},
		{"a star only leads", "pam*.corp.example", "only a leading"},
		{"a star alone", "*", "only a leading"},
		{"a second star", "*.*.corp.example", "only a leading"},
		{"a bad CIDR", "10.0.0.0/33", "is not a CIDR"},
		{"a mistyped address", "10.0.0.256", "neither a host name"},
		{"not a name", "pam corp", "neither a host name"},
		{"a label ending in a hyphen", "pam-.corp.example", "neither a host name"},
		{"the metadata address", "169.254.169.254", "never dialled"},
		{"IPv4 link-local", "169.254.0.0/16", "never dialled"},
		{"inside IPv6 link-local", "fe80::/64", "never dialled"},
		{"an address with a zone", "fe80::1%eth0", "never dialled"},
		{"Alibaba's metadata", "100.100.100.200", "never dialled"},
		{"AWS metadata over IPv6", "fd00:ec2::254/128", "never dialled"},
		{"a mapped metadata address", "::ffff:169.254.169.254", "never dialled"},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			_, err := dialpolicy.Parse(tc.list)
			if tc.wantErr == "" {
				g.Expect(err).NotTo(HaveOccurred())
				return
			}
			g.Expect(err).To(MatchError(ContainSubstring(tc.wantErr)))
		})
	}
}

func TestCheck(t *testing.T) {
	cases := []struct {
		reason string
		list   string
		host   string
		addr   string
		// refused is a substring of the refusal, empty when allowed.
		refused string
	}{
		{"no list: any host", "", "pam.corp.example", "192.0.2.10", ""},
		{"no list: loopback", "", "localhost", "127.0.0.1", ""},
		{"metadata literal", "", "169.254.169.254", "169.254.169.254", "lies in 169.254.0.0/16"},
		{"a name resolving to metadata", "", "metadata.google.internal", "169.254.169.254", "metadata.google.internal (169.254.169.254)"},
		{"anywhere in IPv4 link-local", "", "kdc", "169.254.7.7", "IPv4 link-local"},
		{"IPv6 link-local", "", "pam", "fe80::1", "IPv6 link-local"},
		{"IPv6 link-local with a zone", "", "pam", "fe80::1%eth0", "IPv6 link-local"},
		{"AWS metadata over IPv6", "", "pam", "fd00:ec2::254", "AWS instance metadata"},
		{"EKS Pod Identity over IPv6", "", "pam", "fd00:ec2::23", "EKS Pod Identity"},
		{"Alibaba metadata", "", "pam", "100.100.100.200", "Alibaba"},
		{"Azure WireServer", "", "pam", "168.63.129.16", "WireServer"},
		{"mapped IPv4 metadata", "", "pam", "::ffff:169.254.169.254", "never dialled"},
		{"metadata through NAT64", "", "pam", "64:ff9b::a9fe:a9fe", "never dialled"},
		{"glob: a name below the domain", "*.corp.example", "pam.corp.example", "192.0.2.10", ""},
		{"glob: any depth", "*.corp.example", "pam.priv.corp.example", "192.0.2.10", ""},
		{"glob: case and final dot", "*.corp.example", "PAM.Corp.Example.", "192.0.2.10", ""},
		{"glob: not the domain itself", "*.corp.example", "corp.example", "192.0.2.10", "neither the name nor the address"},
		{"glob: not a name that merely ends alike", "*.corp.example", "evilcorp.example", "192.0.2.10", "neither the name nor the address"},
		{"glob: never to a forbidden address", "*.corp.example", "pam.corp.example", "169.254.169.254", "never dialled"},
		{"glob: an IP literal is no name", "*.corp.example", "192.0.2.10", "192.0.2.10", "the address is not in --allowed-pam-hosts (*.corp.example)"},
		{"name: exact", "pam.corp.example", "pam.corp.example", "192.0.2.10", ""},
		{"name: not a name below it", "pam.corp.example", "x.pam.corp.example", "192.0.2.10", "neither"},
		{"CIDR: any name whose address is in it", "10.0.0.0/8,fd00::/8", "whatever.example", "10.2.3.4", ""},
		{"CIDR: an IP literal in it", "10.0.0.0/8", "10.0.0.1", "10.0.0.1", ""},
		{"CIDR: IPv6", "10.0.0.0/8,fd00::/8", "pam", "fd12::1", ""},
		{"CIDR: mapped IPv4 in it", "10.0.0.0/8", "pam", "::ffff:10.0.0.1", ""},
		{"CIDR: outside", "10.0.0.0/8", "pam.corp.example", "192.0.2.10", "neither"},
		{"CIDR: never a forbidden address inside it", "fd00::/8", "pam", "fd00:ec2::254", "never dialled"},
		{"CIDR: the whole internet but metadata", "0.0.0.0/0", "pam", "169.254.169.254", "never dialled"},
		{"address entry", "192.0.2.10", "pam", "192.0.2.10", ""},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			err := mustParse(t, tc.list).Check("PAM host", tc.host, netip.MustParseAddr(tc.addr))
			if tc.refused == "" {
				g.Expect(err).NotTo(HaveOccurred())
				return
			}
			g.Expect(err).To(MatchError(dialpolicy.ErrNotAllowed))
			g.Expect(err).To(MatchError(ContainSubstring(tc.refused)))
			g.Expect(err).To(MatchError(ContainSubstring("dial to PAM host ")))
		})
	}
}

func TestNilPolicyRefusesOnlyForbidden(t *testing.T) {
	g := NewWithT(t)
	var p *dialpolicy.Policy
	g.Expect(p.Check("PAM host", "pam", netip.MustParseAddr("192.0.2.10"))).To(Succeed())
	g.Expect(p.Check("PAM host", "pam", netip.MustParseAddr("169.254.169.254"))).To(MatchError(dialpolicy.ErrNotAllowed))
	g.Expect(p.CheckHost(context.Background(), "KDC", "169.254.169.254")).To(MatchError(dialpolicy.ErrNotAllowed))
}

// resolver answers from a table, and fails for names it does not hold.
func resolver(table map[string][]string) func(context.Context, string, string) ([]netip.Addr, error) {
	return func(_ context.Context, _, host string) ([]netip.Addr, error) {
		addrs, ok := table[host]
		if !ok {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		var out []netip.Addr
		for _, a := range addrs {
			out = append(out, netip.MustParseAddr(a))
		}
		return out, nil
	}
}

// TestCheckHost: where another party dials, every address of the name must pass, and a name
// that cannot be resolved cannot be checked.
func TestCheckHost(t *testing.T) {
	table := map[string][]string{
		"pam.corp.example":   {"10.0.0.5"},
		"mixed.corp.example": {"10.0.0.6", "169.254.169.254"},
		"rebound.example":    {"10.0.0.7", "192.0.2.1"},
	}
	cases := []struct {
		reason  string
		list    string
		host    string
		refused string
		lookup  bool
	}{
		{"all addresses in the CIDR", "10.0.0.0/8", "pam.corp.example", "", false},
		{"one address metadata, though the glob matches", "*.corp.example", "mixed.corp.example", "169.254.169.254", false},
		{"one address outside the CIDR", "10.0.0.0/8", "rebound.example", "192.0.2.1", false},
		{"an IP literal needs no lookup", "10.0.0.0/8", "10.1.1.1", "", false},
		{"a metadata IP literal", "", "[fd00:ec2::254]", "never dialled", false},
		{"a name that does not resolve", "", "unknown.example", "", true},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			p := mustParse(t, tc.list)
			p.LookupNetIP = resolver(table)
			err := p.CheckHost(context.Background(), "KDC", tc.host)
			switch {
			case tc.lookup:
				var dnsErr *net.DNSError
				g.Expect(errors.As(err, &dnsErr)).To(BeTrue(), "got %v", err)
				g.Expect(err).NotTo(MatchError(dialpolicy.ErrNotAllowed))
			case tc.refused != "":
				g.Expect(err).To(MatchError(dialpolicy.ErrNotAllowed))
				g.Expect(err).To(MatchError(ContainSubstring(tc.refused)))
			default:
				g.Expect(err).NotTo(HaveOccurred())
			}
		})
	}
}

// expectNoConnection fails when the listener gets a connection within a moment.
func expectNoConnection(t *testing.T, l net.Listener) {
	t.Helper()
	_ = l.(*net.TCPListener).SetDeadline(time.Now().Add(200 * time.Millisecond))
	if conn, err := l.Accept(); err == nil {
		conn.Close()
		t.Fatal("the listener was connected to")
	}
}

// TestDialRefusedBeforeConnecting: a real dial to loopback, which the policy does not allow, is
// refused after resolution and before the connection is made, whether it names the address or
// a name that resolves to it.
func TestDialRefusedBeforeConnecting(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	dial := mustParse(t, "10.0.0.0/8").DialContext(&net.Dialer{Timeout: time.Second}, "PAM host")

	for _, host := range []string{"127.0.0.1", "localhost"} {
		g := NewWithT(t)
		conn, err := dial(context.Background(), "tcp", net.JoinHostPort(host, port))
		if conn != nil {
			conn.Close()
		}
		g.Expect(err).To(MatchError(dialpolicy.ErrNotAllowed), "dialling %s", host)
		var refused *dialpolicy.RefusedError
		g.Expect(errors.As(err, &refused)).To(BeTrue())
		g.Expect(refused.Host).To(Equal(host))
		g.Expect(refused.Addr.IsLoopback()).To(BeTrue())
		expectNoConnection(t, l)
	}
}

// TestDialMetadataRefused: the metadata address is refused by the dialer's Control hook, before
// connect(2): the error is the policy's, not a timeout or an unreachable network.
func TestDialMetadataRefused(t *testing.T) {
	g := NewWithT(t)
	dial := (&dialpolicy.Policy{}).DialContext(&net.Dialer{Timeout: 5 * time.Second}, "PAM host")
	start := time.Now()
	_, err := dial(context.Background(), "tcp", "169.254.169.254:80")
	g.Expect(err).To(MatchError(dialpolicy.ErrNotAllowed))
	g.Expect(err).To(MatchError(ContainSubstring("dial to PAM host 169.254.169.254 refused: 169.254.169.254 lies in 169.254.0.0/16")))
	g.Expect(time.Since(start)).To(BeNumerically("<", time.Second))
}

// TestDialAllowed: a dial the policy allows, by address or by name, reaches the server.
func TestDialAllowed(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	cases := []struct{ reason, list, host string }{
		{"no list", "", "127.0.0.1"},
		{"loopback CIDR", "127.0.0.0/8", "127.0.0.1"},
		{"by name", "localhost", "localhost"},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			transport := &http.Transport{DialContext: mustParse(t, tc.list).DialContext(&net.Dialer{}, "PAM host")}
			defer transport.CloseIdleConnections()
			resp, err := (&http.Client{Transport: transport}).Get("http://" + net.JoinHostPort(tc.host, port) + "/")
			g.Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
		})
	}
}
