package kdc

import (
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/keytab"
)

// login runs an AS exchange with gokrb5 and returns its error.
func login(t *testing.T, k *KDC, user string, secret func(*config.Config) *client.Client) error {
	t.Helper()
	cl := secret(krb5(t, k))
	defer cl.Destroy()
	return cl.Login()
}

func krb5(t *testing.T, k *KDC) *config.Config {
	t.Helper()
	cfg, err := config.NewFromString(k.Krb5Conf())
	if err != nil {
		t.Fatalf("the harness's krb5.conf does not parse: %v", err)
	}
	return cfg
}

func TestRealmPrincipalsKeytabsAndLog(t *testing.T) {
	g := NewWithT(t)
	k := Start(t, WithRealm("PRIV.EXAMPLE.TEST"))
	g.Expect(k.Realm).To(Equal("PRIV.EXAMPLE.TEST"))
	g.Expect(k.Addr).To(HavePrefix("127.0.0.1:"))

	const pw = `a "quoted" pass word\`
	k.AddPrincipal("jen", pw)
	k.AddRandomKeyPrincipal("HTTP/pam.example.test")

	password := func(user, pw string) func(*config.Config) *client.Client {
		return func(cfg *config.Config) *client.Client {
			return client.NewWithPassword(user, k.Realm, pw, cfg, client.DisablePAFXFAST(true))
		}
	}
	g.Expect(login(t, k, "jen", password("jen", pw))).To(Succeed())
	g.Expect(login(t, k, "jen", password("jen", "wrong"))).To(MatchError(ContainSubstring("KDC_ERR_PREAUTH_FAILED")))

	// A keytab exported with -norandkey holds the password's keys: both keep working.
	kt := keytab.New()
	g.Expect(kt.Unmarshal(k.Keytab("jen", "HTTP/pam.example.test"))).To(Succeed())
	var names []string
	for _, e := range kt.Entries {
		names = append(names, strings.Join(e.Principal.Components, "/")+"@"+e.Principal.Realm)
	}
	g.Expect(names).To(ContainElements("jen@PRIV.EXAMPLE.TEST", "HTTP/pam.example.test@PRIV.EXAMPLE.TEST"))
	g.Expect(login(t, k, "jen", func(cfg *config.Config) *client.Client {
		return client.NewWithKeytab("jen", k.Realm, kt, cfg, client.DisablePAFXFAST(true))
	})).To(Succeed())
	g.Expect(login(t, k, "jen", password("jen", pw))).To(Succeed())

	k.ExpirePassword("jen")
	g.Expect(login(t, k, "jen", password("jen", pw))).To(MatchError(ContainSubstring("KDC_ERR_KEY_EXPIRED")))
	k.SetPassword("jen", "new password")
	g.Expect(login(t, k, "jen", password("jen", "new password"))).To(Succeed())

	issued := 0
	for _, r := range k.Requests() {
		g.Expect(r.Kind).To(Equal("AS_REQ"))
		g.Expect(r.Server).To(Equal("krbtgt/PRIV.EXAMPLE.TEST@PRIV.EXAMPLE.TEST"))
		if r.Status == "ISSUE" {
			g.Expect(r.Client).To(Equal("jen@PRIV.EXAMPLE.TEST"))
			issued++
		}
	}
	g.Expect(issued).To(Equal(4))

	k.Stop()
	k.Stop()
	_, err := net.DialTimeout("tcp", k.Addr, time.Second)
	g.Expect(err).To(HaveOccurred(), "a stopped KDC no longer answers")
}

func TestRealmsAreIndependent(t *testing.T) {
	g := NewWithT(t)
	a, b := Start(t), Start(t)
	g.Expect(a.Addr).NotTo(Equal(b.Addr))
	a.AddPrincipal("alice", "pw")
	err := login(t, b, "alice", func(cfg *config.Config) *client.Client {
		return client.NewWithPassword("alice", b.Realm, "pw", cfg, client.DisablePAFXFAST(true))
	})
	g.Expect(err).To(MatchError(ContainSubstring("KDC_ERR_C_PRINCIPAL_UNKNOWN")))
}

// fatalRecorder stands in for the test to catch the harness's Fatalf.
type fatalRecorder struct {
	testing.TB
	message string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.message = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestMissingBinariesFailWithTheFix(t *testing.T) {
	g := NewWithT(t)
	saved := searchDirs
	searchDirs = []string{t.TempDir()}
	t.Cleanup(func() { searchDirs = saved })
	t.Setenv("PATH", t.TempDir())

	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Start(rec)
	}()
	<-done
	g.Expect(rec.message).To(ContainSubstring("run `make kdc`"))
	g.Expect(rec.message).To(ContainSubstring("krb5kdc"))
}

func TestKadminFailureFailsTheTest(t *testing.T) {
	g := NewWithT(t)
	k := Start(t)
	rec := &fatalRecorder{TB: t}
	k.t = rec
	done := make(chan struct{})
	go func() {
		defer close(done)
		k.AddPrincipal("twice", "secret-one")
		k.AddPrincipal("twice", "secret-two")
	}()
	<-done
	g.Expect(rec.message).To(ContainSubstring("Principal or policy already exists"))
	g.Expect(rec.message).NotTo(ContainSubstring("secret-two"), "passwords are not echoed")
}
