package kerberos

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/keytab"

	"github.com/pam-operator/pam-operator/internal/dialpolicy"
	"github.com/pam-operator/pam-operator/internal/gsskrb5"
	"github.com/pam-operator/pam-operator/internal/pam/auth"
)

// method is the auth.Error method of this package.
const method = "kerberos"

// Config says which account the operator authenticates as, with which secret, and how to
// reach the realm's KDCs (the domain controllers).
type Config struct {
	// Username is the account's user name without realm or domain, e.g. "jen" (the
	// sAMAccountName), not "PRIV\jen". "jen@PRIV.CONTOSO.COM" is accepted too.
	Username string
	// Realm is the Kerberos realm: the Active Directory domain in capitals, e.g.
	// "PRIV.CONTOSO.COM". When empty, Krb5Conf's default_realm is used.
	Realm string
	// Password is the account's password. Exactly one of Password and Keytab is set.
	Password string
	// Keytab is the content of a keytab file holding a key of the account, as ktpass or
	// ktutil write it.
	Keytab []byte
	// Krb5Conf is the text of a krb5.conf. Exactly one of Krb5Conf and KDCs is set.
	Krb5Conf string
	// KDCs lists the realm's KDCs as host or host:port (port 88 when omitted). They are
	// asked over TCP.
	KDCs []string
	// ServicePrincipalName is the SPN of the PAM REST API's service account, e.g.
	// "HTTP/pam.contoso.com". When empty, each request uses HTTP/<host of its URL> (without
	// port, lower-cased, no DNS canonicalisation).
	ServicePrincipalName string
	// Now is the clock that decides when tickets are renewed; nil means time.Now.
	Now func() time.Time
	// DialPolicy says which addresses KDCs may be dialled at (see checkKDCs); nil refuses
	// only those never dialled (link-local, cloud metadata).
	DialPolicy *dialpolicy.Policy
}

// settings is a validated Config.
type settings struct {
	username string
	realm    string
	password string
	keytab   *keytab.Keytab
	krb5     *config.Config
	spn      string
	now      func() time.Time
	policy   *dialpolicy.Policy
}

// validate checks everything that can be checked without the network, so that a mistake
// in the configuration is reported when the client is built, with what to do about it.
func (c Config) validate() (*settings, error) {
	s := &settings{password: c.Password, spn: c.ServicePrincipalName, now: c.Now, policy: c.DialPolicy}
	if s.now == nil {
		s.now = time.Now
	}

	krb5, err := c.krb5Config()
	if err != nil {
		return nil, err
	}
	s.krb5 = krb5

	s.username, s.realm, err = c.principal(krb5)
	if err != nil {
		return nil, err
	}
	if krb5.LibDefaults.DefaultRealm == "" {
		krb5.LibDefaults.DefaultRealm = s.realm
	}
	if err := checkKDCs(krb5, s.realm); err != nil {
		return nil, err
	}

	switch {
	case c.Password != "" && len(c.Keytab) > 0:
		return nil, configError("both a password and a keytab are set; set only one of them", nil)
	case c.Password == "" && len(c.Keytab) == 0:
		return nil, configError("no password and no keytab: set the account's password or a keytab holding its key", nil)
	case len(c.Keytab) > 0:
		s.keytab, err = parseKeytab(c.Keytab, s.username, s.realm, krb5)
		if err != nil {
			return nil, err
		}
	}

	if s.spn != "" {
		if err := checkSPN(s.spn); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// krb5Config parses Krb5Conf or builds the configuration from Realm and KDCs.
func (c Config) krb5Config() (*config.Config, error) {
	switch {
	case c.Krb5Conf != "" && len(c.KDCs) > 0:
		return nil, configError("both krb5.conf and a list of KDCs are set; set only one of them", nil)
	case c.Krb5Conf != "":
		krb5, err := config.NewFromString(c.Krb5Conf)
		var unsupported config.UnsupportedDirective
		if err != nil && !errors.As(err, &unsupported) {
			// The parser's message quotes the offending line; krb5.conf holds no secret.
			return nil, configError("krb5.conf does not parse ("+err.Error()+"); fix the krb5.conf", err)
		}
		if len(krb5.LibDefaults.DefaultTktEnctypeIDs) == 0 || len(krb5.LibDefaults.DefaultTGSEnctypeIDs) == 0 {
			return nil, configError("krb5.conf allows no encryption type this client supports; list aes256-cts-hmac-sha1-96 and aes128-cts-hmac-sha1-96 in default_tkt_enctypes and default_tgs_enctypes", nil)
		}
		return krb5, nil
	case len(c.KDCs) > 0:
		if c.Realm == "" {
			return nil, configError("realm is empty; set it to the Active Directory domain in capitals, e.g. PRIV.CONTOSO.COM", nil)
		}
		kdcs := make([]string, 0, len(c.KDCs))
		for _, k := range c.KDCs {
			addr, err := kdcAddress(k)
			if err != nil {
				return nil, configError(err.Error(), nil)
			}
			kdcs = append(kdcs, addr)
		}
		krb5 := config.New()
		krb5.LibDefaults.DefaultRealm = c.Realm
		krb5.LibDefaults.DNSLookupKDC = false
		krb5.LibDefaults.DNSLookupRealm = false
		krb5.LibDefaults.NoAddresses = true
		// TCP only: Active Directory's tickets carry a PAC that often outgrows a UDP
		// datagram, and TCP passes through the network policies of a cluster more easily.
		krb5.LibDefaults.UDPPreferenceLimit = 1
		krb5.Realms = []config.Realm{{Realm: c.Realm, KDC: kdcs}}
		return krb5, nil
	default:
		return nil, configError("no KDC: set the realm's KDCs (domain controllers, host:port) or a krb5.conf", nil)
	}
}

// principal returns the user name and realm, accepting "user@REALM" as the user name.
func (c Config) principal(krb5 *config.Config) (string, string, error) {
	user, realm := strings.TrimSpace(c.Username), strings.TrimSpace(c.Realm)
	if user == "" {
		return "", "", configError("username is empty; set the account's user name, e.g. jen", nil)
	}
	if i := strings.IndexByte(user, '\\'); i >= 0 {
		return "", "", configError(fmt.Sprintf("username %q contains a domain; write the user name alone (%s) and the realm in capitals (e.g. PRIV.CONTOSO.COM)", user, user[i+1:]), nil)
	}
	if i := strings.LastIndexByte(user, '@'); i >= 0 {
		suffix := user[i+1:]
		user = user[:i]
		switch {
		case realm == "":
			realm = suffix
		case !strings.EqualFold(realm, suffix):
			return "", "", configError(fmt.Sprintf("username names realm %s but realm is %s; set one realm", suffix, realm), nil)
		}
	}
	if realm == "" {
		realm = krb5.LibDefaults.DefaultRealm
	}
	if realm == "" {
		return "", "", configError("realm is empty and krb5.conf sets no default_realm; set the realm, the Active Directory domain in capitals", nil)
	}
	return user, realm, nil
}

// checkKDCs makes sure the realm's KDCs can be found: listed, or looked up in DNS when the
// krb5.conf asks for it.
func checkKDCs(krb5 *config.Config, realm string) error {
	if krb5.LibDefaults.DNSLookupKDC {
		return nil
	}
	for _, r := range krb5.Realms {
		if r.Realm == realm && len(r.KDC) > 0 {
			return nil
		}
	}
	return configError(fmt.Sprintf("krb5.conf lists no KDC for realm %s; add `%s = { kdc = dc1.example.com:88 }` under [realms] or set dns_lookup_kdc = true", realm, realm), nil)
}

// kdcAddress returns host:port for a KDC written as host, host:port, an IP or [IPv6]:port.
func kdcAddress(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errors.New("a KDC address is empty; list the domain controllers as host or host:port")
	}
	if host, port, err := net.SplitHostPort(s); err == nil {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || host == "" {
			return "", fmt.Errorf("KDC address %q is not host:port", s)
		}
		return s, nil
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		return s + ":88", nil
	}
	if strings.Contains(s, ":") && net.ParseIP(s) == nil {
		return "", fmt.Errorf("KDC address %q is not host:port", s)
	}
	return net.JoinHostPort(s, "88"), nil
}

// parseKeytab parses a keytab and checks that it holds a usable key of the account.
func parseKeytab(data []byte, user, realm string, krb5 *config.Config) (*keytab.Keytab, error) {
	kt := keytab.New()
	if err := kt.Unmarshal(data); err != nil {
		return nil, configError("the keytab does not parse ("+err.Error()+"); give the keytab file's bytes as ktpass or ktutil wrote them (a Secret's data holds them base64-encoded once, not twice)", err)
	}
	var others []string
	usable, present := false, false
	for _, e := range kt.Entries {
		if e.Principal.Realm != realm || strings.Join(e.Principal.Components, "/") != user {
			others = append(others, strings.Join(e.Principal.Components, "/")+"@"+e.Principal.Realm)
			continue
		}
		present = true
		for _, id := range krb5.LibDefaults.DefaultTktEnctypeIDs {
			if e.Key.KeyType == id {
				usable = true
			}
		}
	}
	switch {
	case !present:
		return nil, configError(fmt.Sprintf("the keytab holds no key for %s@%s (it holds: %s); export a keytab for that account, or correct the username and realm", user, realm, describe(others)), nil)
	case !usable:
		return nil, configError(fmt.Sprintf("the keytab's keys for %s@%s are of encryption types this client does not use; export AES keys (aes256-cts-hmac-sha1-96)", user, realm), nil)
	}
	return kt, nil
}

// checkSPN checks the form service/host of a service principal name.
func checkSPN(spn string) error {
	if err := gsskrb5.CheckSPN(spn); err != nil {
		return configError(err.Error(), nil)
	}
	return nil
}

// describe lists principal names without repeating any.
func describe(names []string) string {
	if len(names) == 0 {
		return "nothing"
	}
	seen := map[string]bool{}
	var out []string
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

func configError(message string, err error) error {
	return &auth.Error{Method: method, Message: message, Err: err}
}
