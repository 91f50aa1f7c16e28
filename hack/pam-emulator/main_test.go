package main

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/pam-operator/pam-operator/internal/pam/emulator"
)

func TestParseFault(t *testing.T) {
	cases := []struct {
		reason, spec string
		want         emulator.Fault
		ok           bool
	}{
		{"status until stopped", "close-request:503", emulator.Fault{Endpoint: emulator.EndpointCloseRequest, Status: 503}, true},
		{"status for N calls", "list-requests:500:3", emulator.Fault{Endpoint: emulator.EndpointListRequests, Status: 500, Times: 3}, true},
		{"status with Retry-After", "close-request:429:5:2", emulator.Fault{Endpoint: emulator.EndpointCloseRequest, Status: 429, RetryAfter: "5", Times: 2}, true},
		{"drop on any endpoint", "any:drop:1", emulator.Fault{Drop: true, Times: 1}, true},
		{"lost answer", "close-request:lose-response", emulator.Fault{Endpoint: emulator.EndpointCloseRequest, LoseResponse: true}, true},
		{"delay", "list-requests:delay=2s:4", emulator.Fault{Endpoint: emulator.EndpointListRequests, Delay: 2 * time.Second, Times: 4}, true},
		{"no status", "close-request", emulator.Fault{}, false},
		{"not a status", "close-request:abc", emulator.Fault{}, false},
		{"bad delay", "close-request:delay=soon", emulator.Fault{}, false},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			g := NewWithT(t)
			got, err := parseFault(tc.spec)
			if !tc.ok {
				g.Expect(err).To(HaveOccurred())
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got).To(Equal(tc.want))
		})
	}
}
