package kerberos

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/jcmturner/gokrb5/v8/iana/errorcode"
	"github.com/jcmturner/gokrb5/v8/krberror"

	"github.com/pam-operator/pam-operator/internal/pam/auth"
)

// krbErrorCode finds the KDC's error code in a gokrb5 error. gokrb5 flattens the KDC's
// KRB-ERROR into the text of its krberror.Krberror ("KRB Error: (24) KDC_ERR_PREAUTH_FAILED
// ..."), so the text is the only place the code survives. The tests against a real KDC
// catch a change of that format.
var krbErrorCode = regexp.MustCompile(`KRB Error: \((\d+)\)`)

// kdcErrorCode returns the KDC's error code carried by err, if any.
func kdcErrorCode(err error) (int32, bool) {
	m := krbErrorCode.FindStringSubmatch(err.Error())
	if m == nil {
		return 0, false
	}
	n, convErr := strconv.ParseInt(m[1], 10, 32)
	if convErr != nil {
		return 0, false
	}
	return int32(n), true
}

// isNetworkError tells whether err means no KDC answered.
func isNetworkError(err error) bool {
	var ke krberror.Krberror
	return errors.As(err, &ke) && ke.RootCause == krberror.NetworkingError
}

// isDefinitiveTGSError tells whether a KDC's refusal of a service ticket is about the
// service, so that logging in again would not change it.
func isDefinitiveTGSError(err error) bool {
	code, ok := kdcErrorCode(err)
	if !ok {
		return false
	}
	switch code {
	case errorcode.KDC_ERR_S_PRINCIPAL_UNKNOWN, errorcode.KDC_ERR_PRINCIPAL_NOT_UNIQUE,
		errorcode.KDC_ERR_ETYPE_NOSUPP, errorcode.KDC_ERR_SERVICE_EXP:
		return true
	}
	return false
}

// loginError turns a failed AS exchange into an *auth.Error when a person must act, or a
// plain (retryable) error when the KDC could not be reached or failed.
func (c *Client) loginError(err error) error {
	who := c.s.username + "@" + c.s.realm
	if isNetworkError(err) {
		return fmt.Errorf("kerberos: no KDC of realm %s answered: %w", c.s.realm, err)
	}
	secret := "password"
	if c.s.keytab != nil {
		secret = "keytab"
	}
	code, ok := kdcErrorCode(err)
	if !ok {
		switch {
		case strings.Contains(err.Error(), "matching key not found in keytab"):
			return authError(fmt.Sprintf("the keytab has no key of the encryption type the KDC uses for %s; export a new keytab with all of the account's key types", who), err)
		case strings.Contains(err.Error(), krberror.DecryptingError):
			// Without pre-authentication a wrong key shows as an answer we cannot decrypt.
			return refusedError(fmt.Sprintf("the KDC's answer for %s cannot be decrypted with the %s: the %s is wrong; set the account's current one", who, secret, secret), err)
		}
		return fmt.Errorf("kerberos: logging in as %s: %w", who, err)
	}
	switch code {
	case errorcode.KDC_ERR_PREAUTH_FAILED:
		if c.s.keytab != nil {
			return refusedError(fmt.Sprintf("the KDC refused the keytab's key for %s (KDC_ERR_PREAUTH_FAILED): the account's password changed after the keytab was made; export a new keytab. Each attempt counts towards the account's lockout", who), err)
		}
		return refusedError(fmt.Sprintf("the KDC refused the password of %s (KDC_ERR_PREAUTH_FAILED); set the account's current password. Each attempt counts towards the account's lockout", who), err)
	case errorcode.KDC_ERR_C_PRINCIPAL_UNKNOWN:
		return refusedError(fmt.Sprintf("the KDC of realm %s does not know the user %s (KDC_ERR_C_PRINCIPAL_UNKNOWN); check the username (the account name without domain) and the realm", c.s.realm, c.s.username), err)
	case errorcode.KDC_ERR_KEY_EXPIRED:
		return refusedError(fmt.Sprintf("the password of %s has expired (KDC_ERR_KEY_EXPIRED); change it in Active Directory and update the %s", who, secret), err)
	case errorcode.KDC_ERR_CLIENT_REVOKED:
		return refusedError(fmt.Sprintf("the account %s is disabled or locked out (KDC_ERR_CLIENT_REVOKED); enable or unlock it", who), err)
	case errorcode.KDC_ERR_NAME_EXP:
		return authError(fmt.Sprintf("the account %s has expired (KDC_ERR_NAME_EXP); extend its expiry date", who), err)
	case errorcode.KDC_ERR_POLICY:
		return authError(fmt.Sprintf("the KDC's policy does not let %s log in (KDC_ERR_POLICY), e.g. logon hours or workstation restrictions; change the account's restrictions", who), err)
	case errorcode.KDC_ERR_ETYPE_NOSUPP:
		return authError(fmt.Sprintf("the KDC and this client share no encryption type for %s (KDC_ERR_ETYPE_NOSUPP); enable AES for the account or widen the enctypes of the krb5.conf", who), err)
	}
	return fmt.Errorf("kerberos: logging in as %s: %w", who, err)
}

// tgsError turns a failed TGS exchange for spn into an *auth.Error when a person must act,
// or a plain (retryable) error.
func (c *Client) tgsError(spn string, err error) error {
	if isNetworkError(err) {
		return fmt.Errorf("kerberos: no KDC of realm %s answered: %w", c.s.realm, err)
	}
	code, _ := kdcErrorCode(err)
	switch code {
	case errorcode.KDC_ERR_S_PRINCIPAL_UNKNOWN:
		return authError(fmt.Sprintf("the KDC does not know the service principal %s (KDC_ERR_S_PRINCIPAL_UNKNOWN); register the SPN on the MIM service account (setspn -S %s <account>) or set servicePrincipalName to the SPN that is registered", spn, spn), err)
	case errorcode.KDC_ERR_PRINCIPAL_NOT_UNIQUE:
		return authError(fmt.Sprintf("the service principal %s is registered on more than one account (KDC_ERR_PRINCIPAL_NOT_UNIQUE); keep it on the MIM service account only (setspn -X lists duplicates)", spn), err)
	case errorcode.KDC_ERR_ETYPE_NOSUPP:
		return authError(fmt.Sprintf("the service account of %s has no key of an encryption type this client supports (KDC_ERR_ETYPE_NOSUPP); enable AES on that account", spn), err)
	case errorcode.KDC_ERR_SERVICE_EXP:
		return authError(fmt.Sprintf("the service account of %s has expired (KDC_ERR_SERVICE_EXP); extend its expiry date", spn), err)
	}
	return fmt.Errorf("kerberos: getting a ticket for %s: %w", spn, err)
}

func authError(message string, err error) error {
	return &auth.Error{Method: method, Message: message, Err: err}
}

// refusedError is authError for a login the KDC refused: the credentials themselves are wrong
// or unusable, and each try counts towards the account's lockout.
func refusedError(message string, err error) error {
	return &auth.Error{Method: method, Message: message, Err: err, Refused: true}
}
