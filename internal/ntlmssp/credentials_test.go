package ntlmssp

import (
	"errors"
	"fmt"
	"testing"

	. "github.com/onsi/gomega"

	"github.com/pam-operator/pam-operator/internal/pam/auth"
)

func TestNewCredentials(t *testing.T) {
	cases := []struct {
		name             string
		username, domain string
		password         string
		want             Credentials
		err              string
	}{
		{name: `DOMAIN\user`, username: `PRIV\jen`, password: "pw", want: Credentials{Domain: "PRIV", Username: "jen", Password: "pw"}},
		{name: `DOMAIN\user with the same domain again`, username: `PRIV\jen`, domain: "priv", password: "pw", want: Credentials{Domain: "PRIV", Username: "jen", Password: "pw"}},
		{name: "UPN is the user name with an empty domain", username: "jen@priv.example.test", password: "pw", want: Credentials{Username: "jen@priv.example.test", Password: "pw"}},
		{name: "plain name with the domain", username: "jen", domain: "PRIV", password: "pw", want: Credentials{Domain: "PRIV", Username: "jen", Password: "pw"}},
		{name: "plain name without a domain", username: "jen", password: "pw", want: Credentials{Username: "jen", Password: "pw"}},
		{name: "a newline left in the Secret is dropped from the names only", username: "jen\n", domain: " PRIV\n", password: "pw\n", want: Credentials{Domain: "PRIV", Username: "jen", Password: "pw\n"}},
		{name: "empty username", password: "pw", err: "the username is empty"},
		{name: "blank username", username: " \n", password: "pw", err: "the username is empty"},
		{name: "empty password", username: `PRIV\jen`, err: `the password of PRIV\jen is empty`},
		{name: "domain without user", username: `PRIV\`, password: "pw", err: `not of the form DOMAIN\user`},
		{name: "user without domain", username: `\jen`, password: "pw", err: `not of the form DOMAIN\user`},
		{name: "two backslashes", username: `A\B\jen`, password: "pw", err: `not of the form DOMAIN\user`},
		{name: "contradicting domains", username: `PRIV\jen`, domain: "CORP", password: "pw", err: "names the domain PRIV but the domain is CORP"},
		{name: "UPN and a domain", username: "jen@priv.example.test", domain: "PRIV", password: "pw", err: "leave the domain empty"},
		{name: "UPN without suffix", username: "jen@", password: "pw", err: "not a user principal name"},
		{name: "UPN without user", username: "@priv.example.test", password: "pw", err: "not a user principal name"},
		{name: "domain that is not NetBIOS", username: "jen", domain: `PRIV\X`, password: "pw", err: "not a NetBIOS domain name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			got, err := NewCredentials(tc.username, tc.domain, tc.password)
			if tc.err != "" {
				var authErr *auth.Error
				g.Expect(errors.As(err, &authErr)).To(BeTrue(), "an *auth.Error: %v", err)
				g.Expect(authErr.Method).To(Equal("ntlm"))
				g.Expect(err).To(MatchError(ContainSubstring(tc.err)))
				g.Expect(err.Error()).NotTo(ContainSubstring("pw"))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got).To(Equal(tc.want))
			// The result is accepted again unchanged, as Wrap does.
			again, err := NewCredentials(got.Username, got.Domain, got.Password)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(again).To(Equal(got))
		})
	}
}

func TestCredentialsDoNotPrintThePassword(t *testing.T) {
	g := NewWithT(t)
	c := Credentials{Domain: "PRIV", Username: "jen", Password: "Tr0ub4dor&3"}
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		g.Expect(fmt.Sprintf(format, c)).NotTo(ContainSubstring("Tr0ub4dor"), format)
	}
	g.Expect(c.String()).To(Equal(`PRIV\jen`))
}
