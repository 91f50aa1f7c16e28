package kerberos_test

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/pam-operator/pam-operator/emulator/kerberosserver"
	"github.com/pam-operator/pam-operator/internal/dialpolicy"
	"github.com/pam-operator/pam-operator/internal/pam/auth/kerberos"
)

// kdcPolicy parses list; names, when set, answers the policy's own lookups (gokrb5 still
// resolves for real).
func kdcPolicy(t *testing.T, list string, names func(host string) string) *dialpolicy.Policy {
	t.Helper()
	p, err := dialpolicy.Parse(list)
	if err != nil {
		t.Fatal(err)
	}
	if names != nil {
		p.LookupNetIP = func(_ context.Context, _, host string) ([]netip.Addr, error) {
			if a := names(host); a != "" {
				return []netip.Addr{netip.MustParseAddr(a)}, nil
			}
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
	}
	return p
}

// TestKDCDialPolicy: a KDC the dial policy refuses is never sent a login or a ticket request,
// and the refusal is the policy's; a KDC it allows serves as before.
func TestKDCDialPolicy(t *testing.T) {
	r := newRealm(t)
	srv := newServer(t, kerberosserver.Config{Keytab: r.serviceKeytab, ServicePrincipalName: spn}, false)
	_, port, _ := net.SplitHostPort(r.Addr)
	byName := net.JoinHostPort("localhost", port)
	cases := []struct {
		reason  string
		adjust  func(*kerberos.Config)
		refused string
	}{
		{"the krb5.conf's KDC outside the allowed list", func(c *kerberos.Config) {
			c.DialPolicy = kdcPolicy(t, "10.0.0.0/8", nil)
		}, "dial to KDC 127.0.0.1 refused: the address is not in --allowed-pam-hosts (10.0.0.0/8)"},
		{"a KDC at the metadata address, without a list", func(c *kerberos.Config) {
			c.Krb5Conf, c.KDCs = "", []string{"169.254.169.254:88"}
		}, "dial to KDC 169.254.169.254 refused: 169.254.169.254 lies in 169.254.0.0/16"},
		{"a KDC name that resolves to link-local, though the glob matches", func(c *kerberos.Config) {
			c.Krb5Conf, c.KDCs = "", []string{"kdc.corp.example"}
			c.DialPolicy = kdcPolicy(t, "*.corp.example", func(string) string { return "169.254.169.254" })
		}, "dial to KDC kdc.corp.example (169.254.169.254) refused"},
		{"a KDC name that resolves outside the list", func(c *kerberos.Config) {
			c.Krb5Conf, c.KDCs = "", []string{byName}
			c.DialPolicy = kdcPolicy(t, "10.0.0.0/8", nil)
		}, "dial to KDC localhost (127.0.0.1) refused"},
		{"a KDC allowed by name", func(c *kerberos.Config) {
			c.Krb5Conf, c.KDCs = "", []string{byName}
			c.DialPolicy = kdcPolicy(t, "localhost", nil)
		}, ""},
		{"a KDC allowed by address", func(c *kerberos.Config) {
			c.DialPolicy = kdcPolicy(t, "127.0.0.0/8", nil)
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			cfg := r.config()
			tc.adjust(&cfg)
			_, hc := newClient(t, cfg, nil)
			sent := len(r.Requests())
			if tc.refused == "" {
				code, _ := get(g, hc, srv.URL)
				g.Expect(code).To(Equal(http.StatusOK))
				g.Expect(len(r.Requests())).To(BeNumerically(">", sent), "the KDC was asked")
				return
			}
			_, err := hc.Get(srv.URL)
			g.Expect(err).To(MatchError(dialpolicy.ErrNotAllowed))
			g.Expect(err).To(MatchError(ContainSubstring(tc.refused)))
			g.Expect(err).NotTo(MatchError(ContainSubstring(password)))
			g.Expect(r.Requests()).To(HaveLen(sent), "the KDC was sent a request")
		})
	}
}

// TestKDCCheckedAtEachRenewal: the KDC's name is checked again before each exchange, so a name
// that comes to resolve to a forbidden address stops the next renewal, before it is sent.
func TestKDCCheckedAtEachRenewal(t *testing.T) {
	g := NewWithT(t)
	r := newRealm(t)
	srv := newServer(t, kerberosserver.Config{Keytab: r.serviceKeytab, ServicePrincipalName: spn}, false)
	_, port, _ := net.SplitHostPort(r.Addr)
	var rebound atomic.Bool
	cfg := r.config()
	cfg.Krb5Conf, cfg.KDCs = "", []string{net.JoinHostPort("localhost", port)}
	cfg.DialPolicy = kdcPolicy(t, "127.0.0.0/8", func(string) string {
		if rebound.Load() {
			return "169.254.169.254"
		}
		return "127.0.0.1"
	})
	clk := &clock{now: time.Now()}
	cfg.Now = clk.Now
	_, hc := newClient(t, cfg, nil)

	code, _ := get(g, hc, srv.URL)
	g.Expect(code).To(Equal(http.StatusOK))
	sent := len(r.Requests())

	rebound.Store(true)
	clk.Advance(11 * time.Hour) // past the end of both tickets
	_, err := hc.Get(srv.URL)
	g.Expect(err).To(MatchError(dialpolicy.ErrNotAllowed))
	g.Expect(err).To(MatchError(ContainSubstring("dial to KDC localhost (169.254.169.254) refused")))
	g.Expect(r.Requests()).To(HaveLen(sent), "the renewal was sent")
}
