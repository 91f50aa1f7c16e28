package credentials

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/pam-operator/pam-operator/internal/pam"
)

// TestProbeWithoutAVerdictDoesNotLetEveryCallerTry: after the backoff one call tries the
// credentials again; when it gets no verdict (the connection failed, or the handshake never
// carried the credentials), the callers after it do not each try in turn — each could be a bad
// logon Active Directory counts — but wait for the next probe, a pause later.
func TestProbeWithoutAVerdictDoesNotLetEveryCallerTry(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	const backoff = 15 * time.Minute
	b := &loginBreaker{account: `PRIV\jen`}
	refusal := &pam.Error{Op: "close", StatusCode: http.StatusUnauthorized, Class: pam.ClassAuth, Err: errors.New("401")}
	noVerdict := &pam.Error{Op: "close", Class: pam.ClassRetryable, Err: errors.New("connection reset")}

	try, err := b.enter(context.Background(), clock)
	if err != nil || !try {
		t.Fatalf("first call: try=%v err=%v, want the one try", try, err)
	}
	b.leave(try, refusal, now, backoff)
	if _, err := b.enter(context.Background(), clock); err == nil {
		t.Fatal("a call went out while the breaker was open")
	}

	now = now.Add(backoff)
	try, err = b.enter(context.Background(), clock)
	if err != nil || !try {
		t.Fatalf("after the backoff: try=%v err=%v, want one try", try, err)
	}
	b.leave(try, noVerdict, now, backoff)
	for i := range 10 {
		if _, err := b.enter(context.Background(), clock); !errors.As(err, new(*LoginBackoffError)) {
			t.Fatalf("caller %d after a probe without a verdict: %v, want LoginBackoffError", i, err)
		}
	}

	now = now.Add(probePause)
	try, err = b.enter(context.Background(), clock)
	if err != nil || !try {
		t.Fatalf("after the pause: try=%v err=%v, want one try", try, err)
	}
	b.leave(try, nil, now, backoff)
	if try, err := b.enter(context.Background(), clock); err != nil || try {
		t.Fatalf("after an accepted try: try=%v err=%v, want calls to go freely", try, err)
	}
}
