package pam_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pam-operator/pam-operator/internal/pam"
	"github.com/pam-operator/pam-operator/internal/pam/pamtest"
)

// blockingClient is a fake PAM whose closes hold their call until released, and report when
// they have started.
func blockingClient() (c *pamtest.Client, started chan string, release chan struct{}) {
	started, release = make(chan string, 8), make(chan struct{})
	return &pamtest.Client{
		CloseFunc: func(_ context.Context, id string) error {
			started <- id
			<-release
			return nil
		},
		GetFunc: func(_ context.Context, id string) (*pam.Request, error) { return &pam.Request{ID: id}, nil },
	}, started, release
}

// TestPassIsRefusedNotHeldWhenEverySlotIsTaken: a pass (a context from WithPass) whose server has
// every call slot taken is refused at once with ErrServerBusy instead of holding its worker,
// and is told when a slot frees; the calls of one pass share its slot, so a pass that has begun
// finishes; a call outside a pass (the sweep) waits for a slot instead.
func TestPassIsRefusedNotHeldWhenEverySlotIsTaken(t *testing.T) {
	fake, started, release := blockingClient()
	c := pam.WithLimiter(fake, pam.NewLimiter(pam.Limit{QPS: 1000, Burst: 1000, MaxConcurrentCalls: 2}))

	passes := make(chan error, 2)
	for _, id := range []string{"a", "b"} {
		go func() {
			ctx, pass := pam.WithPass(context.Background(), id)
			defer pass.End()
			err := c.Close(ctx, id)
			if err == nil {
				// The confirming read of the same pass uses the slot it holds.
				_, err = c.Get(ctx, id)
			}
			passes <- err
		}()
		<-started
	}

	ctx, pass := pam.WithPass(context.Background(), "c")
	defer pass.End()
	err := c.Close(ctx, "c")
	var busy *pam.BusyError
	if !errors.As(err, &busy) || !errors.Is(err, pam.ErrServerBusy) {
		t.Fatalf("a third pass got %v, want ErrServerBusy", err)
	}
	woken := make(chan struct{})
	busy.NotifyWhenFree(0, func() { close(woken) })

	sweep := make(chan error, 1)
	go func() { sweep <- c.List(context.Background(), "", func(pam.Request) {}) }()

	select {
	case <-woken:
		t.Fatal("told a slot freed while none had")
	case err := <-sweep:
		t.Fatalf("a call outside a pass did not wait for a slot: %v", err)
	default:
	}
	close(release) // both passes finish, with their confirming reads
	for range 2 {
		if err := <-passes; err != nil {
			t.Fatalf("a pass that had its slot failed: %v", err)
		}
	}
	<-woken
	select {
	case err := <-sweep:
		if err == nil || errors.Is(err, pam.ErrServerBusy) {
			// ListFunc is unset: the fake answers an error of its own, which shows the call ran.
			t.Fatalf("the sweep's call: %v, want it to reach the server", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the sweep's call never got a slot")
	}
}

// refusedPass makes a pass of key call c while every slot is taken, and returns its refusal.
func refusedPass(t *testing.T, c pam.Client, key string) *pam.BusyError {
	t.Helper()
	ctx, pass := pam.WithPass(context.Background(), key)
	_, err := c.Get(ctx, key)
	pass.End()
	var busy *pam.BusyError
	if !errors.As(err, &busy) || pass.Busy() != busy {
		t.Fatalf("pass %s got %v, want ErrServerBusy", key, err)
	}
	return busy
}

// heldSlot returns a client of a server with one call slot, which a pass holds until release is
// closed; holderDone tells how that pass's call ended.
func heldSlot() (c pam.Client, release chan struct{}, holderDone <-chan error) {
	fake, started, release := blockingClient()
	c = pam.WithLimiter(fake, pam.NewLimiter(pam.Limit{QPS: 1000, Burst: 1000, MaxConcurrentCalls: 1}))
	done := make(chan error, 1)
	go func() {
		ctx, pass := pam.WithPass(context.Background(), "holder")
		defer pass.End()
		done <- c.Close(ctx, "holder")
	}()
	<-started
	return c, release, done
}

// TestSlotOfferedToAPassThatNeedsNoneGoesToTheNext: the passes waiting for a slot are told in
// turn, one per free slot; one that ends without taking the slot it was offered (it found
// nothing to call PAM for) hands it to the next, so no wake-up is lost and none is wasted.
func TestSlotOfferedToAPassThatNeedsNoneGoesToTheNext(t *testing.T) {
	c, release, holderDone := heldSlot()

	woken := make(chan string, 3)
	var refused []*pam.BusyError
	for _, key := range []string{"first", "second", "third"} {
		busy := refusedPass(t, c, key)
		busy.NotifyWhenFree(0, func() { woken <- key })
		refused = append(refused, busy)
	}
	close(release)
	if err := <-holderDone; err != nil {
		t.Fatal(err)
	}
	if got := <-woken; got != "first" {
		t.Fatalf("told %s first, want the oldest waiting pass", got)
	}
	select {
	case got := <-woken:
		t.Fatalf("told %s too, of the one slot already offered", got)
	default:
	}
	// The first pass finds nothing to call PAM for: its slot goes to the second.
	refused[0].PassEnded()
	if got := <-woken; got != "second" {
		t.Fatalf("told %s, want the second", got)
	}
	// The second takes it; the third is told when it gives it back.
	ctx, pass := pam.WithPass(context.Background(), "second")
	if _, err := c.Get(ctx, "second"); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-woken:
		t.Fatalf("told %s while the slot was taken", got)
	default:
	}
	pass.End()
	refused[1].PassEnded()
	if got := <-woken; got != "third" {
		t.Fatalf("told %s, want the third", got)
	}
}

// TestHigherPriorityPassesAreToldFirst: on a busy server a close waiting for a slot goes before
// the reads that waited longer, and passes of one priority are told oldest first.
func TestHigherPriorityPassesAreToldFirst(t *testing.T) {
	c, release, holderDone := heldSlot()

	woken := make(chan string, 4)
	refused := map[string]*pam.BusyError{}
	for _, w := range []struct {
		key      string
		priority int
	}{{"read", 0}, {"close", 100}, {"second read", 0}, {"second close", 100}} {
		busy := refusedPass(t, c, w.key)
		busy.NotifyWhenFree(w.priority, func() { woken <- w.key })
		refused[w.key] = busy
	}
	close(release)
	if err := <-holderDone; err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"close", "second close", "read", "second read"} {
		got := <-woken
		if got != want {
			t.Fatalf("told %s, want %s", got, want)
		}
		refused[got].PassEnded() // it needed no call: the slot goes on
	}
}

// TestRolesTakeTheServersSlot: reading the roles counts against the server like a list: a pass
// refused a slot does not read them, and a pass that holds its slot reads them with it.
func TestRolesTakeTheServersSlot(t *testing.T) {
	fake, started, release := blockingClient()
	fake.RolesFunc = func(context.Context) ([]pam.Role, error) { return []pam.Role{{ID: "r"}}, nil }
	c := pam.WithLimiter(fake, pam.NewLimiter(pam.Limit{QPS: 1000, Burst: 1000, MaxConcurrentCalls: 1}))

	holder := make(chan error, 1)
	go func() {
		ctx, pass := pam.WithPass(context.Background(), "holder")
		defer pass.End()
		err := c.Close(ctx, "a")
		if err == nil {
			_, err = c.Roles(ctx) // the slot the pass holds
		}
		holder <- err
	}()
	<-started

	ctx, pass := pam.WithPass(context.Background(), "other")
	_, err := c.Roles(ctx)
	pass.End()
	var pe *pam.Error
	if !errors.Is(err, pam.ErrServerBusy) || !errors.As(err, &pe) || pe.Op != "list" {
		t.Fatalf("roles of a pass without a slot: got %v, want ErrServerBusy on op list", err)
	}
	close(release)
	if err := <-holder; err != nil {
		t.Fatalf("the pass holding the slot: %v", err)
	}
	if got := fake.Count("roles"); got != 1 {
		t.Fatalf("roles reached PAM %d times, want 1: the refused pass's must not", got)
	}
}
