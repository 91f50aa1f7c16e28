package kerberos_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/pam-operator/pam-operator/internal/pam/auth/kerberos"
)

// hungKDC accepts connections, reads what is sent, and never answers, until hangUp.
type hungKDC struct {
	ln       net.Listener
	accepted atomic.Int32
	mu       sync.Mutex
	conns    []net.Conn
}

func newHungKDC(t *testing.T) *hungKDC {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k := &hungKDC{ln: ln}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			k.accepted.Add(1)
			k.mu.Lock()
			k.conns = append(k.conns, conn)
			k.mu.Unlock()
			go func() { _, _ = io.Copy(io.Discard, conn) }()
		}
	}()
	t.Cleanup(k.hangUp)
	return k
}

// hangUp closes the listener and every connection, which ends gokrb5's wait at once.
func (k *hungKDC) hangUp() {
	_ = k.ln.Close()
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range k.conns {
		_ = c.Close()
	}
}

// exchangesUnderWay counts the goroutines inside a gokrb5 exchange with a KDC.
func exchangesUnderWay() int {
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	return strings.Count(stacks, "gokrb5/v8/client.dialSendTCP")
}

// TestKDCExchangeEndsWithTheRequest: a KDC that never answers holds a request no longer than
// the request's context, though gokrb5 would wait seconds for it; requests that give up leave
// one exchange under way at most, not one each.
func TestKDCExchangeEndsWithTheRequest(t *testing.T) {
	g := NewWithT(t)
	kdc := newHungKDC(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("WWW-Authenticate", "Negotiate")
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(srv.Close)
	c, err := kerberos.New(kerberos.Config{Username: user, Realm: "HUNG.TEST", Password: password, KDCs: []string{kdc.ln.Addr().String()}})
	g.Expect(err).NotTo(HaveOccurred())
	hc := &http.Client{Transport: c.Wrap(http.DefaultTransport.(*http.Transport).Clone())}

	get := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	err = get()
	g.Expect(err).To(MatchError(context.DeadlineExceeded), "the request's deadline, not gokrb5's, ended it")
	g.Expect(err).To(MatchError(ContainSubstring("no ticket for HTTP/127.0.0.1 from the KDCs of realm HUNG.TEST")))
	g.Expect(exchangesUnderWay()).To(Equal(1), "the exchange goes on, within gokrb5's own deadlines")

	// While that exchange still waits for the KDC, more requests give up at their deadlines
	// waiting for it, and start none of their own.
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { errs[i] = get() })
	}
	wg.Wait()
	for _, err := range errs {
		g.Expect(errors.Is(err, context.DeadlineExceeded)).To(BeTrue(), "%v", err)
	}
	g.Expect(kdc.accepted.Load()).To(BeEquivalentTo(1), "one exchange with the KDC")
	g.Expect(exchangesUnderWay()).To(BeNumerically("<=", 1))

	// Once the KDC hangs up, the exchange ends and Close finds nothing left running.
	kdc.hangUp()
	c.Close()
	g.Expect(exchangesUnderWay()).To(BeZero())
}
