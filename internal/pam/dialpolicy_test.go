package pam_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/internal/dialpolicy"
	"github.com/pam-operator/pam-operator/internal/pam"
)

func policy(t *testing.T, list string, names map[string]string) *dialpolicy.Policy {
	t.Helper()
	p, err := dialpolicy.Parse(list)
	if err != nil {
		t.Fatal(err)
	}
	p.LookupNetIP = func(_ context.Context, _, host string) ([]netip.Addr, error) {
		if a, ok := names[host]; ok {
			return []netip.Addr{netip.MustParseAddr(a)}, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return p
}

// expectHostNotAllowed checks that err is the policy's refusal, classified so that the
// operator stalls rather than retries fast, naming the host and the rule but no credential.
func expectHostNotAllowed(g Gomega, err error, inMessage ...string) {
	g.Expect(err).To(MatchError(pam.ErrHostNotAllowed))
	g.Expect(pam.ClassOf(err)).To(Equal(pam.ClassOther))
	for _, s := range inMessage {
		g.Expect(err.Error()).To(ContainSubstring(s))
	}
	g.Expect(err.Error()).NotTo(ContainSubstring(password))
}

// TestMetadataHostIsNeverDialled: a server URL at the metadata address is refused by the dial's
// Control hook, before connect: the error is the policy's at once, not a timeout or an
// unreachable network, and no answer was ever read.
func TestMetadataHostIsNeverDialled(t *testing.T) {
	g := NewWithT(t)
	var codes []int
	c := newClient(t, pam.Config{URL: "http://169.254.169.254/", Timeout: 5 * time.Second,
		Observe: func(_ string, code int, _ time.Duration) { codes = append(codes, code) }})
	start := time.Now()
	_, err := c.Get(context.Background(), "5ec10e61-cdd1-404e-a18e-740467d87dbf")
	expectHostNotAllowed(g, err, "PAM list: dial to PAM host 169.254.169.254 refused", "169.254.0.0/16", "never dialled")
	g.Expect(time.Since(start)).To(BeNumerically("<", time.Second))
	g.Expect(codes).To(Equal([]int{0}))

	for _, u := range []string{"http://[fd00:ec2::254]/", "http://100.100.100.200/", "https://[fe80::1]:8443/"} {
		err := newClient(t, pam.Config{URL: u}).Close(context.Background(), "5ec10e61-cdd1-404e-a18e-740467d87dbf")
		expectHostNotAllowed(g, err, "never dialled")
	}
}

// TestAllowedHostsRefuseOthers: with --allowed-pam-hosts set, a server outside it gets no
// connection at all; inside it, calls go through.
func TestAllowedHostsRefuseOthers(t *testing.T) {
	g := NewWithT(t)
	emu, url := newEmulator(t)
	id := emu.AddRequest(emulator.Request{Owner: user, RoleID: "2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d", RequestedTTL: time.Hour}).ID

	refused := newClient(t, pam.Config{URL: url, DialPolicy: policy(t, "10.0.0.0/8,*.corp.example", nil)})
	err := refused.Close(context.Background(), id)
	expectHostNotAllowed(g, err, "dial to PAM host 127.0.0.1 refused", "--allowed-pam-hosts (10.0.0.0/8,*.corp.example)")
	g.Expect(emu.Calls()).To(BeEmpty(), "the emulator was reached")

	allowed := newClient(t, pam.Config{URL: url, DialPolicy: policy(t, "10.0.0.0/8,127.0.0.0/8", nil)})
	g.Expect(allowed.Close(context.Background(), id)).To(Succeed())
}

// TestProxyTargetIsChecked: through a proxy the dial goes to the proxy, yet the target behind it
// must pass the policy, checked before the request leaves; the proxy itself, set by the
// administrator, needs no place in the list.
func TestProxyTargetIsChecked(t *testing.T) {
	emu := emulator.New(emulator.Options{Users: map[string]string{user: password}})
	id := emu.AddRequest(emulator.Request{Owner: user, RoleID: "2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d", RequestedTTL: time.Hour}).ID
	var proxied atomic.Int32
	// The proxy answers for every target itself, as the emulator.
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxied.Add(1)
		emu.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	viaProxy := func(*http.Request) (*url.URL, error) { return url.Parse(proxy.URL) }
	names := map[string]string{"pam.corp.example": "10.1.2.3", "rebound.corp.example": "169.254.169.254"}

	cases := []struct {
		reason  string
		list    string
		target  string
		refused string
	}{
		{"a metadata target", "", "http://169.254.169.254/", "dial to PAM host 169.254.169.254 refused"},
		{"a target whose name resolves to metadata", "*.corp.example", "http://rebound.corp.example/", "rebound.corp.example (169.254.169.254)"},
		{"a target outside the list", "10.9.0.0/16", "https://pam.corp.example/", "pam.corp.example (10.1.2.3)"},
		{"an allowed target, through a proxy not in the list", "*.corp.example", "http://pam.corp.example/", ""},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			proxied.Store(0)
			c := newClient(t, pam.Config{URL: tc.target, Proxy: viaProxy, DialPolicy: policy(t, tc.list, names)})
			err := c.Close(context.Background(), id)
			if tc.refused == "" {
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(proxied.Load()).To(BeEquivalentTo(1))
				return
			}
			expectHostNotAllowed(g, err, tc.refused)
			g.Expect(proxied.Load()).To(BeZero(), "the proxy received the request")
		})
	}
}

// TestProxyAtForbiddenAddressIsRefused: the proxy is trusted for where it is, not for a
// forbidden address.
func TestProxyAtForbiddenAddressIsRefused(t *testing.T) {
	g := NewWithT(t)
	c := newClient(t, pam.Config{URL: "http://10.1.2.3/", DialPolicy: policy(t, "10.0.0.0/8", nil),
		Proxy: func(*http.Request) (*url.URL, error) { return url.Parse("http://169.254.169.254:3128") }})
	err := c.Close(context.Background(), "5ec10e61-cdd1-404e-a18e-740467d87dbf")
	expectHostNotAllowed(g, err, "dial to proxy 169.254.169.254 refused")
}
