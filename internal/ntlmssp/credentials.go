package ntlmssp

import (
	"fmt"
	"strings"
)

// Credentials are the Windows account NTLM authenticates as. NewCredentials builds them from
// the forms a Secret may hold.
type Credentials struct {
	// Domain is the NetBIOS domain name, e.g. PRIV. It is empty when Username is a user
	// principal name, and may be empty for an account the server resolves itself.
	Domain string
	// Username is the account name (sAMAccountName), or a user principal name
	// (user@domain.example).
	Username string
	// Password is the account's password. It is never written anywhere.
	Password string
}

// NewCredentials checks an account and splits its name: username may be written
// `DOMAIN\user`, `user@domain.example` (a user principal name, sent as the user name with
// an empty domain, as MS-NLMP says) or `user` with domain given separately. Surrounding
// white space (a newline left in a Secret) is dropped from the names, never from the
// password. A missing or contradictory part is an *auth.Error.
func NewCredentials(username, domain, password string) (Credentials, error) {
	username, domain = strings.TrimSpace(username), strings.TrimSpace(domain)
	const forms = "write it as DOMAIN\\user, user@domain.example, or user with a separate domain"
	if username == "" {
		return Credentials{}, authError("the username is empty; "+forms, nil)
	}
	if password == "" {
		return Credentials{}, authError(fmt.Sprintf("the password of %s is empty; set the account's password", username), nil)
	}
	c := Credentials{Username: username, Domain: domain, Password: password}
	if dom, user, ok := strings.Cut(username, `\`); ok {
		if dom == "" || user == "" || strings.ContainsAny(user, `\@`) {
			return Credentials{}, authError(fmt.Sprintf("the username %q is not of the form DOMAIN\\user", username), nil)
		}
		if domain != "" && !strings.EqualFold(domain, dom) {
			return Credentials{}, authError(fmt.Sprintf("the username names the domain %s but the domain is %s; give the domain once", dom, domain), nil)
		}
		c.Domain, c.Username = dom, user
		return c, nil
	}
	if local, suffix, ok := strings.Cut(username, "@"); ok {
		if local == "" || suffix == "" || strings.Contains(suffix, "@") {
			return Credentials{}, authError(fmt.Sprintf("the username %q is not a user principal name (user@domain.example)", username), nil)
		}
		if domain != "" {
			return Credentials{}, authError(fmt.Sprintf("the username %s is a user principal name, which carries its domain, and the domain %s is set too; leave the domain empty, or give the account name (sAMAccountName) as the username", username, domain), nil)
		}
		return c, nil
	}
	if strings.Contains(domain, `\`) || strings.Contains(domain, "@") {
		return Credentials{}, authError(fmt.Sprintf("the domain %q is not a NetBIOS domain name", domain), nil)
	}
	return c, nil
}

// String names the account without its password, so that printing Credentials by mistake
// leaks nothing.
func (c Credentials) String() string {
	if c.Domain == "" {
		return c.Username
	}
	return c.Domain + `\` + c.Username
}

// GoString is String for %#v.
func (c Credentials) GoString() string {
	return fmt.Sprintf("ntlm.Credentials{Domain: %q, Username: %q, Password: <redacted>}", c.Domain, c.Username)
}
