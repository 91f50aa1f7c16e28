package emulator

import (
	"fmt"
	"math/rand"
	"net/http"
	"strings"
	"time"
)

// Fault is a failure the emulator injects into matching calls. Its parts combine in this order:
// Delay, then Drop, or else Status, or else LoseResponse, or else MalformedBody, or else
// HoldAnswer.
type Fault struct {
	// Endpoint limits the fault to one endpoint; "" means every endpoint.
	Endpoint Endpoint
	// Status answers with this HTTP status and an OData v3 error body, instead of handling the call.
	Status int
	// RetryAfter is sent as the Retry-After header with Status, e.g. "2".
	RetryAfter string
	// Delay waits this long before the call is handled, or until the client gives up.
	Delay time.Duration
	// Drop closes the connection without any answer, before handling the call.
	Drop bool
	// LoseResponse handles the call for real (a close takes effect) and then drops the
	// connection: "a 200 whose body is lost".
	LoseResponse bool
	// MalformedBody handles the call for real and answers its status with the first half of
	// its body, which is then not JSON: "a 201 whose body cannot be read".
	MalformedBody bool
	// HoldAnswer handles the call for real and then never answers, until the client gives up:
	// the moment between PAM's work and its answer, in which a client may crash.
	HoldAnswer bool
	// Times applies the fault to the next N matching calls; 0 means until ClearFaults.
	Times int
	// Fraction applies the fault to this share of matching calls; 0 or 1 means every call. The
	// draw uses Options.Seed, so a run is reproducible.
	Fraction float64
}

// String is the short description written to the call log, e.g. "status 503" or "delay 2s, drop".
func (f Fault) String() string {
	var parts []string
	if f.Delay > 0 {
		parts = append(parts, "delay "+f.Delay.String())
	}
	switch {
	case f.Drop:
		parts = append(parts, "drop")
	case f.Status != 0 && f.RetryAfter != "":
		parts = append(parts, fmt.Sprintf("status %d retry-after %s", f.Status, f.RetryAfter))
	case f.Status != 0:
		parts = append(parts, fmt.Sprintf("status %d", f.Status))
	case f.LoseResponse:
		parts = append(parts, "lose-response")
	case f.MalformedBody:
		parts = append(parts, "malformed-body")
	case f.HoldAnswer:
		parts = append(parts, "hold-answer")
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

type activeFault struct {
	Fault
	remaining int // meaningful when Times > 0
}

type faultSet struct {
	rng    *rand.Rand // guarded by Server.mu
	active []*activeFault
}

func newFaultSet(seed int64) faultSet {
	return faultSet{rng: rand.New(rand.NewSource(seed))}
}

// InjectFault adds a fault; when several match a call, the first added that applies wins.
func (s *Server) InjectFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.active = append(s.faults.active, &activeFault{Fault: f, remaining: f.Times})
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.active = nil
}

// pickLocked returns the fault for a call to ep, if any, consuming one of its Times.
func (fs *faultSet) pickLocked(ep Endpoint) (Fault, bool) {
	for i, f := range fs.active {
		if f.Endpoint != "" && f.Endpoint != ep {
			continue
		}
		// A fractional fault that does not fire lets the later ones have their turn.
		if f.Fraction > 0 && f.Fraction < 1 && fs.rng.Float64() >= f.Fraction {
			continue
		}
		if f.Times > 0 {
			f.remaining--
			if f.remaining <= 0 {
				fs.active = append(fs.active[:i:i], fs.active[i+1:]...)
			}
		}
		return f.Fault, true
	}
	return Fault{}, false
}

// wait sleeps for d unless the client goes away first; it reports whether the full time passed.
func wait(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// dropConnection closes the client's connection without writing anything. Where the connection
// cannot be hijacked (HTTP/2, or a wrapping ResponseWriter), the server is made to abort the
// response instead, which resets the stream.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}
