package emulator

import (
	"fmt"
	"math/rand"
	"time"
)

// Fault is a failure the emulator injects into matching calls.
type Fault struct {
	// Endpoint limits the fault to one endpoint; "" means every endpoint.
	Endpoint Endpoint
	// Status answers with this HTTP status and an OData error body, instead of handling the call.
	Status int
	// RetryAfter is sent as the Retry-After header with Status, e.g. "2".
	RetryAfter string
	// Delay waits this long before the call is handled (or the client gives up).
	Delay time.Duration
	// Drop closes the connection without any answer, before handling the call.
	Drop bool
	// LoseResponse handles the call for real (a close takes effect) and then drops the
	// connection: "a 200 whose body is lost".
	LoseResponse bool
	// Times applies the fault to the next N matching calls; 0 means until ClearFaults.
	Times int
	// Fraction applies the fault to this share of matching calls; 0 or 1 means every call.
	Fraction float64
}

func (f Fault) String() string {
	switch {
	case f.Drop:
		return "drop"
	case f.LoseResponse:
		return "lose-response"
	case f.Status != 0 && f.RetryAfter != "":
		return fmt.Sprintf("status %d retry-after %s", f.Status, f.RetryAfter)
	case f.Status != 0:
		return fmt.Sprintf("status %d", f.Status)
	}
	return "delay " + f.Delay.String()
}

type activeFault struct {
	Fault
	remaining int // meaningful when Times > 0
}

type faultSet struct {
	rng    *rand.Rand
	active []*activeFault
}

func newFaultSet(seed int64) faultSet {
	return faultSet{rng: rand.New(rand.NewSource(seed))}
}

// InjectFault adds a fault; faults are tried in the order they were added.
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

// pickLocked returns the fault for a call to ep, consuming one of its Times.
func (fs *faultSet) pickLocked(ep Endpoint) *Fault {
	for i, f := range fs.active {
		if f.Endpoint != "" && f.Endpoint != ep {
			continue
		}
		if f.Fraction > 0 && f.Fraction < 1 && fs.rng.Float64() >= f.Fraction {
			continue
		}
		picked := f.Fault
		if f.Times > 0 {
			f.remaining--
			if f.remaining <= 0 {
				fs.active = append(fs.active[:i:i], fs.active[i+1:]...)
			}
		}
		return &picked
	}
	return nil
}
