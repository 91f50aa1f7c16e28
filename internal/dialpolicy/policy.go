// Package dialpolicy decides which addresses the operator may dial on behalf of a PAM server:
// its PAM host, the target behind a proxy, and its KDCs. A credential is sent to whatever
// answers there, so the decision is made on the address actually dialled, after name
// resolution, and never on the name alone.
//
// Some addresses are never dialled, whatever the administrator allows: link-local ones and the
// cloud metadata services, which hand out the node's or the pod's cloud credentials to anyone
// who asks from inside. Beyond that an administrator may list the hosts every server must use
// (the manager's --allowed-pam-hosts).
//
// The rule: an address A, dialled for a host H (a name or an IP literal), is allowed when
//   - A is not forbidden (link-local, cloud metadata), whatever the list says; and
//   - the list is empty, or H is a name matching one of the list's names or globs, or A lies in
//     one of the list's CIDRs.
//
// A name or glob thus trusts the administrator's DNS zone for where the name points, yet never
// lets it point at a forbidden address. Where another party dials (a proxy, gokrb5), CheckHost
// resolves the name itself and requires every address to pass, since that party may pick any.
package dialpolicy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
)

// ErrNotAllowed is under every refusal of this package: errors.Is finds it.
var ErrNotAllowed = errors.New("dial not allowed by policy")

// forbidden lists the addresses never dialled, each with what it is.
var forbidden = []struct {
	prefix netip.Prefix
	what   string
}{
	// The metadata services of AWS, Azure, GCP, OpenStack, Oracle and most others answer on
	// 169.254.169.254, ECS task credentials on 169.254.170.2, EKS Pod Identity on 169.254.170.23;
	// nothing a PAM server needs lives in link-local space.
	{netip.MustParsePrefix("169.254.0.0/16"), "IPv4 link-local, where cloud metadata services answer"},
	{netip.MustParsePrefix("fe80::/10"), "IPv6 link-local"},
	// AWS's metadata service on Nitro instances over IPv6; a unique local address, not link-local.
	{netip.MustParsePrefix("fd00:ec2::254/128"), "the AWS instance metadata service over IPv6"},
	// The EKS Pod Identity Agent over IPv6, which hands out the pod's AWS credentials.
	{netip.MustParsePrefix("fd00:ec2::23/128"), "the EKS Pod Identity Agent over IPv6"},
	// Alibaba Cloud's metadata service, in the shared (CGNAT) range rather than link-local.
	{netip.MustParsePrefix("100.100.100.200/32"), "the Alibaba Cloud metadata service"},
	// Azure's WireServer, the host's platform endpoint for the VM agent (certificates,
	// extension settings); a public address present on every Azure host.
	{netip.MustParsePrefix("168.63.129.16/32"), "the Azure WireServer"},
}

// nat64 is the well-known NAT64 prefix (RFC 6052): a gateway dials the IPv4 address held in
// the last 32 bits, so that is the address checked.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// Policy is the parsed --allowed-pam-hosts list. The zero value and a nil *Policy allow every
// address that is not forbidden. A Policy is safe for concurrent use once built.
type Policy struct {
	// names are lower-case host names, and globs "*.domain", which match any name below domain.
	names []string
	nets  []netip.Prefix
	// list is the value parsed, for messages.
	list string
	// LookupNetIP resolves names for CheckHost; nil means net.DefaultResolver's. Tests replace it.
	LookupNetIP func(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Parse reads a comma-separated list of host names ("pam.corp.example"), globs
// ("*.corp.example": any name below corp.example, at any depth, not corp.example itself),
// IP addresses and CIDRs ("10.0.0.0/8", "fd00::/8"). Blank items are ignored; an empty list
// allows every address that is not forbidden. An entry that can only ever match forbidden
// addresses is an error, so that a list never seems to allow what is refused.
func Parse(list string) (*Policy, error) {
	p := &Policy{list: strings.TrimSpace(list)}
	for item := range strings.SplitSeq(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if prefix, ok, err := parseAddressEntry(item); ok {
			if err != nil {
				return nil, err
			}
			p.nets = append(p.nets, prefix)
			continue
		}
		name, err := parseNameEntry(item)
		if err != nil {
			return nil, err
		}
		p.names = append(p.names, name)
	}
	return p, nil
}

// parseAddressEntry parses an IP address or a CIDR; ok is false when item is neither, and
// should be read as a name.
func parseAddressEntry(item string) (netip.Prefix, bool, error) {
	var prefix netip.Prefix
	if strings.Contains(item, "/") {
		p, err := netip.ParsePrefix(item)
		if err != nil {
			return prefix, true, fmt.Errorf("%q is not a CIDR (like 10.0.0.0/8 or fd00::/8)", item)
		}
		prefix = p.Masked()
	} else {
		addr, err := netip.ParseAddr(item)
		if err != nil {
			return prefix, false, nil
		}
		if addr.Zone() != "" {
			return prefix, true, fmt.Errorf("%q: an address with a zone is link-local, which is never dialled", item)
		}
		prefix = netip.PrefixFrom(addr, addr.BitLen())
	}
	if prefix.Addr().Is4In6() && prefix.Bits() >= 96 {
		// Dialled addresses are compared unmapped.
		prefix = netip.PrefixFrom(prefix.Addr().Unmap(), prefix.Bits()-96)
	}
	for _, f := range forbidden {
		if f.prefix.Bits() <= prefix.Bits() && f.prefix.Contains(prefix.Addr()) {
			return prefix, true, fmt.Errorf("%q lies in %s (%s), which is never dialled; remove it", item, f.prefix, f.what)
		}
	}
	return prefix, true, nil
}

// parseNameEntry checks a host name or a "*.domain" glob and returns it in lower case.
func parseNameEntry(item string) (string, error) {
	name := strings.TrimSuffix(strings.ToLower(item), ".")
	domain := strings.TrimPrefix(name, "*.")
	if strings.Contains(domain, "*") {
		return "", fmt.Errorf("%q: only a leading \"*.\" is supported, as in *.corp.example (list no entry to allow any host)", item)
	}
	if !validName(domain) {
		return "", fmt.Errorf("%q is neither a host name, a *.domain glob, an IP address nor a CIDR", item)
	}
	return name, nil
}

// validName reports whether s is a DNS name: dot-separated labels of letters, digits, hyphens
// and underscores (seen in old Active Directory host names), not starting or ending in a hyphen,
// the last one not all digits (that is a mistyped IP address).
func validName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	if last := s[strings.LastIndexByte(s, '.')+1:]; strings.Trim(last, "0123456789") == "" {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// String returns the list as parsed, for logs.
func (p *Policy) String() string {
	if p == nil || p.list == "" {
		return "any host not forbidden"
	}
	return p.list
}

// RefusedError is a dial the policy refused. Its message names the host, the address and the
// rule, and nothing else.
type RefusedError struct {
	// What is being dialled: "PAM host", "KDC", "proxy".
	What string
	// Host is the name or address asked for.
	Host string
	// Addr is the address refused.
	Addr netip.Addr
	// Forbidden is what the address is when it is never dialled, empty when it is only outside
	// the allowed list.
	Forbidden string
	// Prefix is the forbidden range Addr lies in.
	Prefix netip.Prefix
	// List is the allowed list the host and address are not in.
	List string
}

func (e *RefusedError) Error() string {
	target := e.What + " " + e.Host
	if e.Host != e.Addr.String() {
		target += " (" + e.Addr.String() + ")"
	}
	if e.Forbidden != "" {
		return fmt.Sprintf("dial to %s refused: %s lies in %s, %s, which is never dialled",
			target, e.Addr, e.Prefix, e.Forbidden)
	}
	if _, err := netip.ParseAddr(e.Host); err == nil {
		return fmt.Sprintf("dial to %s refused: the address is not in --allowed-pam-hosts (%s)", target, e.List)
	}
	return fmt.Sprintf("dial to %s refused: neither the name nor the address is in --allowed-pam-hosts (%s)", target, e.List)
}

// Is makes errors.Is(err, ErrNotAllowed) true.
func (e *RefusedError) Is(target error) bool { return target == ErrNotAllowed }

// Check applies the rule to an address dialled for host (a name or an IP literal), and
// returns a *RefusedError when it is not allowed. what names the kind of host for messages.
func (p *Policy) Check(what, host string, addr netip.Addr) error {
	host = normalize(host)
	// Go's resolver may answer IPv4 addresses in their IPv6-mapped form.
	addr = addr.WithZone("").Unmap()
	checked := addr
	if nat64.Contains(checked) {
		b := checked.As16()
		checked = netip.AddrFrom4([4]byte(b[12:]))
	}
	for _, f := range forbidden {
		if f.prefix.Contains(checked) {
			return &RefusedError{What: what, Host: host, Addr: addr, Forbidden: f.what, Prefix: f.prefix}
		}
	}
	if p == nil || len(p.names)+len(p.nets) == 0 {
		return nil
	}
	if _, err := netip.ParseAddr(host); err != nil && p.nameAllowed(host) {
		return nil
	}
	for _, n := range p.nets {
		if n.Contains(checked) {
			return nil
		}
	}
	return &RefusedError{What: what, Host: host, Addr: addr, List: p.list}
}

// nameAllowed reports whether a lower-case host name matches a listed name or glob.
func (p *Policy) nameAllowed(host string) bool {
	for _, n := range p.names {
		if domain, glob := strings.CutPrefix(n, "*."); glob {
			if strings.HasSuffix(host, "."+domain) {
				return true
			}
		} else if host == n {
			return true
		}
	}
	return false
}

// CheckHost resolves host and checks every address it has, for a dial someone else makes
// (a proxy, gokrb5) and who may pick any of them. A failed lookup is returned as it is: the
// host cannot be checked, so it must not be dialled either.
func (p *Policy) CheckHost(ctx context.Context, what, host string) error {
	host = normalize(host)
	if addr, err := netip.ParseAddr(host); err == nil {
		return p.Check(what, host, addr)
	}
	lookup := net.DefaultResolver.LookupNetIP
	if p != nil && p.LookupNetIP != nil {
		lookup = p.LookupNetIP
	}
	addrs, err := lookup(ctx, "ip", host)
	if err != nil {
		return err
	}
	if len(addrs) == 0 {
		return &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
	}
	for _, addr := range addrs {
		if err := p.Check(what, host, addr); err != nil {
			return err
		}
	}
	return nil
}

// DialContext returns a dial function, for http.Transport and the like, that dials as d does
// but refuses each address the policy does not allow for the host asked for. The check runs
// in the dialer's Control hook, on the address resolved for that very connection, after the
// socket is made and before it connects: no packet leaves for a refused address, and a name
// that resolves differently from one lookup to the next (DNS rebinding) gains nothing. Of a
// name with several addresses, only the allowed ones are tried.
func (p *Policy) DialContext(d *net.Dialer, what string) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return nil, err
		}
		checked := *d
		checked.Control = nil
		checked.ControlContext = func(ctx context.Context, network, resolved string, raw syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(resolved)
			if err != nil {
				return fmt.Errorf("dial to %s %s refused: cannot read the address %q to check it", what, host, resolved)
			}
			if err := p.Check(what, host, ap.Addr()); err != nil {
				return err
			}
			switch {
			case d.ControlContext != nil:
				return d.ControlContext(ctx, network, resolved, raw)
			case d.Control != nil:
				return d.Control(network, resolved, raw)
			}
			return nil
		}
		return checked.DialContext(ctx, network, address)
	}
}

// normalize writes a host as it is compared: lower case, without brackets or a final dot.
func normalize(host string) string {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return strings.TrimSuffix(strings.ToLower(host), ".")
}
