package kerberos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/pam-operator/pam-operator/internal/dialpolicy"
)

// checkKDCs asks the dial policy about every KDC gokrb5 may dial for the account's realm,
// before an exchange with one. gokrb5 dials KDCs itself (net.DialTimeout in its
// client/network.go) and offers no hook on the connection, so each KDC's name is resolved here
// and every address it has must pass. A KDC the policy refuses refuses the exchange: gokrb5
// picks KDCs in random order. A name that does not resolve is passed over, as gokrb5 passes it
// over, unless no KDC could be checked at all.
//
// What stays open: gokrb5 resolves each name again, so a name whose answer changes in between
// (DNS rebinding) could still lead it elsewhere (list KDCs by IP address to close that); and
// the KDCs of other realms reached through referrals, and the renewal gokrb5 runs for such a
// referral's ticket in the background, are not checked.
func (c *Client) checkKDCs(ctx context.Context) error {
	hosts, err := c.kdcHosts()
	if err != nil {
		// gokrb5 would find none either; its own error says why.
		return fmt.Errorf("kerberos: finding the KDCs of realm %s: %w", c.s.realm, err)
	}
	var lookupErr error
	checked := false
	for _, host := range hosts {
		switch err := c.s.policy.CheckHost(ctx, "KDC", host); {
		case errors.Is(err, dialpolicy.ErrNotAllowed):
			return fmt.Errorf("kerberos: realm %s: %w", c.s.realm, err)
		case err != nil:
			lookupErr = err
		default:
			checked = true
		}
	}
	if !checked && lookupErr != nil {
		return fmt.Errorf("kerberos: no KDC of realm %s could be resolved to check it: %w", c.s.realm, lookupErr)
	}
	return nil
}

// kdcHosts lists, sorted, the host of every KDC gokrb5 may dial for the account's realm: those
// of the configuration, or those DNS names when the krb5.conf asks for a lookup, over TCP and,
// unless the configuration says TCP only, over UDP.
func (c *Client) kdcHosts() ([]string, error) {
	protocols := []bool{true}
	if c.s.krb5.LibDefaults.UDPPreferenceLimit != 1 {
		protocols = append(protocols, false)
	}
	var hosts []string
	for _, tcp := range protocols {
		_, kdcs, err := c.s.krb5.GetKDCs(c.s.realm, tcp)
		if err != nil {
			return nil, err
		}
		for _, kdc := range kdcs {
			if host, _, err := net.SplitHostPort(kdc); err == nil {
				hosts = append(hosts, host)
			}
		}
	}
	slices.Sort(hosts)
	return slices.Compact(hosts), nil
}
