package pam_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/internal/pam"
	"github.com/pam-operator/pam-operator/pamapi"
)

// listCounter is a client whose lists are counted: all, those whose answer was too large, and
// those answered with requests.
type listCounter struct {
	pam.Client
	lists, overflows, nonEmpty int
}

func (c *listCounter) List(ctx context.Context, filter string, each func(pam.Request)) error {
	c.lists++
	n := 0
	err := c.Client.List(ctx, filter, func(r pam.Request) {
		n++
		each(r)
	})
	switch {
	case errors.Is(err, pam.ErrAnswerTooLarge):
		c.overflows++
	case err == nil && n > 0:
		c.nonEmpty++
	}
	return err
}

// fetch lists the account's requests through b, and returns the batch and how the client
// counted that fetch's lists.
func fetch(g Gomega, b *pam.Batcher, c pam.Client) (*pam.Batch, *listCounter) {
	counter := &listCounter{Client: c}
	batch, err := b.Fetch(context.Background(), func(context.Context) (pam.Client, error) { return counter, nil },
		pam.BatchSince(time.Now()), time.Now)
	g.Expect(err).NotTo(HaveOccurred())
	return batch, counter
}

const batchRole = "2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d"

// addRequests adds n ended requests of the account, created evenly over span from from.
func addRequests(emu *emulator.Server, n int, from time.Time, span time.Duration, justification string) (first emulator.Request) {
	for i := range n {
		r := emu.AddRequest(emulator.Request{Owner: user, RoleID: batchRole, RequestedTTL: time.Hour, Justification: justification,
			CreationTime: from.Add(time.Duration(i) * (span / time.Duration(n))), Status: pamapi.StatusExpired})
		if i == 0 {
			first = r
		}
	}
	return first
}

// TestBatchHalvesOnlyTheWindowThatOverflows: an account whose requests of one quarter of an hour
// fill more than one answer (8 MiB) is still listed whole, over real HTTP, by halving the window
// that overflows, and only it; the next fetch asks for the windows that fitted.
func TestBatchHalvesOnlyTheWindowThatOverflows(t *testing.T) {
	g := NewWithT(t)
	emu, url := newEmulator(t)
	c := newClient(t, pam.Config{URL: url, Version: "1"})
	oldest := addRequests(emu, 26000, time.Now().Add(-3*24*time.Hour), 15*time.Minute, "") // about 10 MB of answer
	last := emu.AddRequest(emulator.Request{Owner: user, RoleID: batchRole, RequestedTTL: time.Hour})

	b := pam.NewBatcher(nil)
	batch, first := fetch(g, b, c)
	for _, want := range []emulator.Request{oldest, last} {
		req, found := batch.Request(want.ID)
		g.Expect(found).To(BeTrue(), "request %s, created %s", want.ID, want.CreationTime)
		g.Expect(req.Status).To(Equal(want.Status))
	}
	// From 7 days down to under 15 minutes is some ten halvings: each asks for the half that
	// overflows again and for its sibling once, never for a window that fitted.
	g.Expect(first.overflows).To(BeNumerically(">", 5))
	g.Expect(first.lists).To(Equal(2*first.overflows+1), "windows that fitted were asked for again")

	// The next fetch asks for each window that fitted with requests in it once, the empty days
	// merged into their neighbours, and no answer is too large.
	_, next := fetch(g, b, c)
	g.Expect(next.overflows).To(BeZero())
	g.Expect(next.lists).To(Equal(first.nonEmpty), "the empty windows were not merged, or full ones were")
	_, again := fetch(g, b, c)
	g.Expect(again.lists).To(Equal(next.lists), "the split is kept")
}

// TestBatchKeepsTheHalvesOfLongRequests: requests differ in length, so windows are not merged on
// their counts. Short requests fill one answer with more of them than two halves of long ones
// hold together; merged by count, the long ones would overflow again at every fetch.
func TestBatchKeepsTheHalvesOfLongRequests(t *testing.T) {
	g := NewWithT(t)
	emu, url := newEmulator(t)
	c := newClient(t, pam.Config{URL: url, Version: "1"})
	addRequests(emu, 18000, time.Now().Add(-5*24*time.Hour), time.Hour, "")                       // about 7 MB
	addRequests(emu, 11000, time.Now().Add(-2*24*time.Hour), time.Hour, strings.Repeat("j", 500)) // about 10 MB

	b := pam.NewBatcher(nil)
	_, first := fetch(g, b, c)
	g.Expect(first.overflows).To(BeNumerically(">", 1), "the long requests' window was not halved")
	_, next := fetch(g, b, c)
	g.Expect(next.overflows).To(BeZero(), "the halves of the long requests were merged again")
	g.Expect(next.lists).To(Equal(first.nonEmpty), "the short requests and the halves of the long ones")
	_, again := fetch(g, b, c)
	g.Expect(again.overflows).To(BeZero())
	g.Expect(again.lists).To(Equal(next.lists), "the split is kept")
}

// TestBatchThatCannotFitKeepsItsHalves: requests all created within one second, more than one
// answer holds, cannot be listed: the list fails once its window is a second long, and the next
// fetch starts from the halves the failed one found, overflowing only in that second.
func TestBatchThatCannotFitKeepsItsHalves(t *testing.T) {
	g := NewWithT(t)
	emu, url := newEmulator(t)
	c := newClient(t, pam.Config{URL: url, Version: "1"})
	addRequests(emu, 26000, time.Now().Add(-3*24*time.Hour), 0, "") // about 10 MB, all at one instant

	b := pam.NewBatcher(nil)
	failedFetch := func() *listCounter {
		counter := &listCounter{Client: c}
		_, err := b.Fetch(context.Background(), func(context.Context) (pam.Client, error) { return counter, nil },
			pam.BatchSince(time.Now()), time.Now)
		g.Expect(err).To(MatchError(pam.ErrAnswerTooLarge))
		return counter
	}
	// From 7 days to under two seconds is some nineteen halvings.
	g.Expect(failedFetch().overflows).To(BeNumerically(">", 15))
	g.Expect(failedFetch().overflows).To(Equal(1), "the halves of the failed list were lost")
}
