package pam_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	. "github.com/onsi/gomega"

	"github.com/pam-operator/pam-operator/internal/pam"
)

// The answers of a hostile or broken server, each bounded in what the client reads and holds,
// and in time. No test here measures time: each gives the client a per-call timeout far longer
// than it needs, and checks that the bound, not the clock, ended the call.

const hostileID = "5ec10e61-cdd1-404e-a18e-740467d87dbf"

// bodyCounter counts the bytes of answers' bodies the client reads, through the Auth hook,
// which wraps the client's transport.
type bodyCounter struct{ n atomic.Int64 }

func (c *bodyCounter) wrap(next http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		resp, err := next.RoundTrip(req)
		if resp != nil {
			resp.Body = &countingBody{ReadCloser: resp.Body, n: &c.n}
		}
		return resp, err
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// flood answers status with a body of up to size bytes of filler after prefix, written until
// the client hangs up.
func flood(status int, prefix string, size int) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, prefix)
		chunk := []byte(strings.Repeat(" ", 64<<10))
		for written := len(prefix); written < size; written += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}
}

// TestHugeAnswersAreCut: a 100 MiB answer is read no further than the cap of its call — 8 MiB
// for a list or a create, 64 KiB for a close, whose 200 is all that counts — and the call
// ends as soon as the cap is reached.
func TestHugeAnswersAreCut(t *testing.T) {
	const size = 100 << 20
	cases := []struct {
		reason string
		call   func(pam.Client) error
		// cap is the most the client may read; tooLarge, whether the call fails for it.
		cap      int64
		tooLarge bool
	}{
		{"a list", func(c pam.Client) error { return c.List(context.Background(), "", func(pam.Request) {}) }, 8<<20 + 1, true},
		{"a create", func(c pam.Client) error {
			_, err := c.Create(context.Background(), pam.CreateOptions{RoleID: hostileID, TTL: time.Hour})
			return err
		}, 8<<20 + 1, true},
		{"a close", func(c pam.Client) error { return c.Close(context.Background(), hostileID) }, 64 << 10, false},
		{"the roles", func(c pam.Client) error { _, err := c.Roles(context.Background()); return err }, 8<<20 + 1, true},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			srv := httptest.NewServer(flood(http.StatusOK, `{"value":[`, size))
			defer srv.Close()
			var read bodyCounter
			c := newClient(t, pam.Config{URL: srv.URL, Timeout: time.Minute, Auth: read.wrap})
			err := tc.call(c)
			if tc.tooLarge {
				g.Expect(err).To(MatchError(pam.ErrAnswerTooLarge))
				g.Expect(pam.ClassOf(err)).To(Equal(pam.ClassOther), "the cap, not the clock, ended it: %v", err)
				// A create answered 2xx was made, whatever its body: the caller must look for it.
				g.Expect(errors.Is(err, pam.ErrCreateOutcomeUnknown)).To(Equal(tc.reason == "a create"))
			} else {
				g.Expect(err).NotTo(HaveOccurred(), "PAM answered 200")
			}
			g.Expect(read.n.Load()).To(BeNumerically("<=", tc.cap))
		})
	}
}

// TestEndlessRolesAreRefused: an answer of small, valid roles without end is refused after
// 4096 of them, which an account that is a candidate for a few dozen never reaches, and the
// client stops reading there: the roles are held whole, the answer's 8 MiB cap alone would let
// a hostile server make it hold 160,000.
func TestEndlessRolesAreRefused(t *testing.T) {
	g := NewWithT(t)
	role := `{"RoleId":"` + hostileID + `","DisplayName":"r","TTL":"60"},`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"value":[`)
		chunk := strings.Repeat(role, 64)
		for {
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	var read bodyCounter
	roles, err := newClient(t, pam.Config{URL: srv.URL, Timeout: time.Minute, Auth: read.wrap}).Roles(context.Background())
	g.Expect(err).To(MatchError(pam.ErrAnswerTooLarge))
	g.Expect(err.Error()).To(ContainSubstring("more than 4096 roles"))
	g.Expect(pam.ClassOf(err)).To(Equal(pam.ClassOther))
	g.Expect(roles).To(BeNil())
	g.Expect(read.n.Load()).To(BeNumerically("<", 4097*len(role)+64<<10+64<<10), "read up to the 4097th role, a buffer and the drain")
}

// TestHugeHeadersAreRefused: headers are read up to 64 KiB. 9 MiB stays under Go's default
// limit of 10 MiB, so this fails without the client's own.
func TestHugeHeadersAreRefused(t *testing.T) {
	g := NewWithT(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Filler", strings.Repeat("x", 9<<20))
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	c := newClient(t, pam.Config{URL: srv.URL, Timeout: time.Minute})
	err := c.Close(context.Background(), hostileID)
	g.Expect(err).To(HaveOccurred())
	g.Expect(err.Error()).To(ContainSubstring("headers exceeded 65536 bytes"))
	g.Expect(err.Error()).NotTo(ContainSubstring("timed out"))
}

// TestSlowDripIsBoundedByTheTimeout: an answer that trickles in a byte at a time, in its
// headers or its body, ends at the call's timeout.
func TestSlowDripIsBoundedByTheTimeout(t *testing.T) {
	// drip writes head at once, then a byte of filler every 10 ms until the client hangs up.
	drip := func(head string) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ln.Close() })
		go func() {
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer conn.Close()
					_, _ = http.ReadRequest(bufio.NewReader(conn))
					if _, err := io.WriteString(conn, head); err != nil {
						return
					}
					// The pace is the hostile behaviour under test, not synchronisation.
					drip := time.NewTicker(10 * time.Millisecond)
					defer drip.Stop()
					for range drip.C {
						if _, err := conn.Write([]byte("x")); err != nil {
							return
						}
					}
				}()
			}
		}()
		return "http://" + ln.Addr().String()
	}
	cases := []struct {
		reason string
		head   string
		call   func(pam.Client) error
	}{
		{"headers", "HTTP/1.1 200 OK\r\nX-Filler: ", func(c pam.Client) error { return c.Close(context.Background(), hostileID) }},
		{"a list's body", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"value\":[\"", func(c pam.Client) error {
			return c.List(context.Background(), "", func(pam.Request) {})
		}},
		{"a create's body", "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n\r\n{\"RequestId\":\"", func(c pam.Client) error {
			_, err := c.Create(context.Background(), pam.CreateOptions{RoleID: hostileID, TTL: time.Hour})
			return err
		}},
		{"an error's body", "HTTP/1.1 500 Internal Server Error\r\n\r\n", func(c pam.Client) error {
			return c.Close(context.Background(), hostileID)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			c := newClient(t, pam.Config{URL: drip(tc.head), Timeout: 300 * time.Millisecond})
			err := tc.call(c)
			g.Expect(err).To(HaveOccurred())
			g.Expect(pam.ClassOf(err)).To(Equal(pam.ClassRetryable), err.Error())
		})
	}
}

// TestErrorTextIsBounded: whatever the server sends, an error's text — which goes into
// conditions and Events — is at most 1 KiB of printable characters, and keeps the status.
func TestErrorTextIsBounded(t *testing.T) {
	odata := func(message string) string {
		return `{"odata.error":{"code":"","message":{"lang":"en-US","value":"` + message + `"}}}`
	}
	cases := []struct {
		reason  string
		handler http.HandlerFunc
		status  int
		// want is in the text.
		want string
	}{
		{"a 1 MiB OData message, cut by the error body's cap", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, odata(strings.Repeat("a", 1<<20)))
		}, http.StatusInternalServerError, "HTTP 500"},
		{"a 60 KiB OData message with control characters", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, odata(strings.Repeat(`\u001b[31m\u202e\r\n`, 6<<10)))
		}, http.StatusBadRequest, "HTTP 400"},
		{"60 KiB of schemes offered by a 401", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("WWW-Authenticate", strings.Repeat("Scheme", 10<<10))
			w.WriteHeader(http.StatusUnauthorized)
		}, http.StatusUnauthorized, "server offers Scheme"},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			var read bodyCounter
			err := newClient(t, pam.Config{URL: srv.URL, Auth: read.wrap}).Close(context.Background(), hostileID)
			g.Expect(pam.StatusCodeOf(err)).To(Equal(tc.status))
			expectBoundedText(g, err.Error())
			g.Expect(err.Error()).To(ContainSubstring(tc.want))
			g.Expect(read.n.Load()).To(BeNumerically("<=", 64<<10))
		})
	}

	t.Run("a malformed status line of 60 KiB, quoted by the transport's error", func(t *testing.T) {
		g := NewWithT(t)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		g.Expect(err).NotTo(HaveOccurred())
		defer ln.Close()
		go func() {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
			_, _ = http.ReadRequest(bufio.NewReader(conn))
			// A status line without a space is quoted whole.
			_, _ = io.WriteString(conn, "\x1b[2J"+strings.Repeat("z", 60<<10)+"\r\n\r\n")
		}()
		err = newClient(t, pam.Config{URL: "http://" + ln.Addr().String()}).Close(context.Background(), hostileID)
		g.Expect(err).To(HaveOccurred())
		expectBoundedText(g, err.Error())
		g.Expect(err.Error()).To(ContainSubstring("malformed HTTP response"))
	})
}

// expectBoundedText checks that text is at most 1 KiB of printable characters.
func expectBoundedText(g Gomega, text string) {
	g.Expect(len(text)).To(BeNumerically("<=", 1<<10))
	g.Expect(utf8.ValidString(text)).To(BeTrue())
	g.Expect(strings.IndexFunc(text, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' })).To(Equal(-1), "%q", text)
}
