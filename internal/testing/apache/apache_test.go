package apache_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/pam-operator/pam-operator/internal/ntlmssp"
	"github.com/pam-operator/pam-operator/internal/pam/auth/kerberos"
	"github.com/pam-operator/pam-operator/internal/pam/auth/ntlm"
	"github.com/pam-operator/pam-operator/internal/testing/apache"
	"github.com/pam-operator/pam-operator/internal/testing/kdc"
)

// echoUser is a backend that answers with the user Apache passed in the user header.
func echoUser(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Header.Get(apache.DefaultUserHeader))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// get sends a GET with a forged user header, which Apache must overwrite.
func get(t *testing.T, hc *http.Client, url string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(apache.DefaultUserHeader, "admin")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// TestApacheAuthenticates: the harness's Apache challenges as configured, accepts Kerberos and
// NTLM through MIT's GSS-API and gss-ntlmssp, passes the user to the backend in place of a
// forged one, logs the mechanism it verified, and counts a wrong password as one refusal.
func TestApacheAuthenticates(t *testing.T) {
	realm := kdc.Start(t)
	realm.AddPrincipal("jen", "krb-password")
	realm.AddRandomKeyPrincipal("HTTP/127.0.0.1")
	srv := apache.Start(t, apache.Options{
		Backend: echoUser(t), Krb5Conf: realm.Krb5Conf(), Keytab: realm.Keytab("HTTP/127.0.0.1"),
		NTLMUsers: []apache.NTLMUser{{Domain: "PRIV", Username: "jen", Password: "ntlm-password"}},
	})

	t.Run("challenges", func(t *testing.T) {
		for path, want := range map[string][]string{
			apache.PathNegotiateAndNTLM: {"Negotiate", "NTLM"},
			apache.PathNegotiateOnly:    {"Negotiate"},
		} {
			resp, _ := get(t, http.DefaultClient, srv.URL+path+"/")
			if resp.StatusCode != http.StatusUnauthorized || !slices.Equal(resp.Header.Values("WWW-Authenticate"), want) {
				t.Errorf("%s without credentials: %d %q, want 401 %q", path, resp.StatusCode, resp.Header.Values("WWW-Authenticate"), want)
			}
		}
	})

	krb, err := kerberos.New(kerberos.Config{Username: "jen", Password: "krb-password", Krb5Conf: realm.Krb5Conf()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(krb.Close)
	// A client learns the scheme of an origin once: each NTLM case has its own.
	ntlmClient := func(password string) *http.Client {
		creds := ntlmssp.Credentials{Domain: "PRIV", Username: "jen", Password: password}
		return &http.Client{Transport: ntlm.Wrap(creds)(http.DefaultTransport.(*http.Transport).Clone())}
	}
	krbClient := &http.Client{Transport: krb.Wrap(http.DefaultTransport.(*http.Transport).Clone())}
	for _, tc := range []struct {
		name, path, user, mechanism string
		client                      *http.Client
	}{
		{"kerberos", apache.PathNegotiateAndNTLM, "jen@" + realm.Realm, "Negotiate/krb5", krbClient},
		{"raw ntlm", apache.PathNegotiateAndNTLM, `PRIV\jen`, "NTLM/NTLM", ntlmClient("ntlm-password")},
		{"ntlm inside negotiate", apache.PathNegotiateOnly, `PRIV\jen`, "Negotiate/NTLM", ntlmClient("ntlm-password")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			path := tc.path + "/" + strings.ReplaceAll(tc.name, " ", "-")
			for range 2 {
				resp, body := get(t, tc.client, srv.URL+path)
				g.Expect(resp.StatusCode).To(Equal(http.StatusOK), srv.ErrorLog())
				g.Expect(body).To(Equal(tc.user))
				if tc.mechanism == "Negotiate/krb5" {
					// The AP-REP the client verified before returning the answer.
					g.Expect(resp.Header.Get("WWW-Authenticate")).To(HavePrefix("Negotiate "))
				}
			}
			// Both calls were authenticated by the mechanism, through Apache's own acceptor.
			g.Eventually(func() []apache.Request { return srv.Requests() }).WithTimeout(5 * time.Second).Should(
				HaveEach(Or(
					Not(HaveField("Path", path)),
					HaveField("Status", http.StatusUnauthorized),
					And(HaveField("Status", http.StatusOK), HaveField("Mechanism", tc.mechanism)))))
			g.Eventually(func() []apache.Request { return srv.Requests() }).WithTimeout(5 * time.Second).Should(
				ContainElements(apache.Request{Status: http.StatusOK, Mechanism: tc.mechanism, Path: path},
					apache.Request{Status: http.StatusOK, Mechanism: tc.mechanism, Path: path}))
		})
	}

	t.Run("a proxy that drops the proof", func(t *testing.T) {
		// The backend answered, but without the AP-REP the client cannot tell it from an
		// impostor's answer.
		req, err := http.NewRequest(http.MethodGet, srv.URL+apache.PathDropsProof+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := krbClient.Do(req); err == nil || !strings.Contains(err.Error(), "did not prove") {
			t.Errorf("the answer without an AP-REP was taken: %v", err)
		}
	})

	t.Run("wrong ntlm password", func(t *testing.T) {
		g := NewWithT(t)
		before := len(srv.Refusals())
		resp, _ := get(t, ntlmClient("not-the-password"), srv.URL+apache.PathNegotiateAndNTLM+"/refused")
		g.Expect(resp.StatusCode).To(Equal(http.StatusUnauthorized))
		g.Expect(srv.Refusals()).To(HaveLen(before+1), srv.ErrorLog())
		g.Expect(srv.ErrorLog()).NotTo(ContainSubstring("not-the-password"))
	})
}
