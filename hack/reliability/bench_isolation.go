package main

// One server isolated from another: a server that accepts connections and never answers has
// closes due, and another server's delete → Close latency is timed against the same-run baseline.

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/hack/lab"
)

// hungCloses is how many closes are due on the hung server while the healthy one is timed.
const hungCloses = 200

func (b *bench) isolation(ctx context.Context) error {
	hung, err := lab.ServeEmulator(emulator.Options{Users: map[string]string{pamUser: pamPassword}}, nil)
	if err != nil {
		return err
	}
	defer hung.Close()
	const ns = "bench-hung"
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"},
			StringData: map[string]string{"username": pamUser, "password": pamPassword}},
		// The defaults a tenant would leave: 4 calls at a time, 30 s each.
		&pamv1.PamServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pam"}, Spec: pamv1.PamServerSpec{
			URL: hung.URL, CABundle: hung.CABundle,
			Auth: &pamv1.PamServerAuth{Basic: &pamv1.BasicAuth{SecretRef: pamv1.SecretReference{Name: "pam"}}}}},
	} {
		if err := b.h.client.Create(ctx, obj); err != nil {
			return err
		}
	}
	err = parallel(ctx, hungCloses, 16, func(i int) error {
		id := hung.AddRequest(emulator.Request{Owner: pamUser, RoleID: "2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d", RequestedTTL: 8 * time.Hour}).ID
		return b.h.client.Create(ctx, &pamv1.PamElevation{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("due-%03d", i)},
			Spec: pamv1.PamElevationSpec{RequestID: id, ServerRef: pamv1.ServerReference{Name: "pam"}}})
	})
	if err != nil {
		return err
	}
	if err := poll(ctx, 5*time.Minute, 200*time.Millisecond, func() (bool, error) {
		_, synced, err := b.baseline.count(ctx, ns)
		return synced == hungCloses, err
	}); err != nil {
		return err
	}

	// As many as the latency step: a p99 of a few hundred is its largest sample or two, on both
	// sides of the ratio (1.0× to 4.0× in runs of 200 on one tree).
	n := max(b.cfg.latencyCount, 1)
	names, ids, rawRTT, err := b.toDeleteOneByOne(ctx, n)
	if err != nil {
		return err
	}

	// From here on the hung server accepts every call and never answers.
	hung.InjectFault(emulator.Fault{Delay: time.Hour})
	before := b.reconcileStats()
	if err := b.h.client.DeleteAllOf(ctx, &pamv1.PamElevation{}, client.InNamespace(ns)); err != nil {
		return err
	}
	// What is timed is closes due on a hung server, not the deletion that made them due (the
	// mass revocation's subject): the timing starts once the manager has taken every one of
	// them in, and the hung server holds calls up to its limit.
	if err := poll(ctx, time.Minute, 50*time.Millisecond, func() (bool, error) {
		taken := b.reconcileStats().reconcileCount - before.reconcileCount
		return taken >= hungCloses && len(hung.Calls()) >= pamv1.DefaultRateLimitMaxConcurrentCalls, nil
	}); err != nil {
		return fmt.Errorf("the manager did not take in the hung server's %d deletions: %w", hungCloses, err)
	}
	note := fmt.Sprintf("%d closes due on a server that never answers", hungCloses)
	toClose, _, baseline, _, _, err := b.deleteOneByOne(ctx, b.ns, names, ids, rawRTT, nil)
	switch {
	case errors.Is(err, errNothingHappened):
		// The hung server's passes hold the workers: the healthy closes wait for them.
		b.report.add("isolation: a healthy server's close, "+note, 60_000, "ms", "not within a minute — goal missed")
	case err != nil:
		return err
	default:
		total, _, err := b.baseline.count(ctx, ns)
		if err != nil {
			return err
		}
		if total != hungCloses {
			return fmt.Errorf("%d of the %d elevations of the hung server went while it never answered", hungCloses-total, hungCloses)
		}
		b.report.add("isolation: delete → Close at PAM, p99, "+note, ms(quantile(toClose, 0.99)), "ms", "")
		b.report.add("isolation: baseline (event seen + raw Close), p99", ms(quantile(baseline, 0.99)), "ms", "")
		b.report.add("isolation: delete → Close p99 / baseline p99", ratio(quantile(toClose, 0.99), quantile(baseline, 0.99)), "×", "goal: ≤ 2")
	}

	// The hung server answers again: its closes go through, and nothing is left behind.
	hung.ClearFaults()
	if err := poll(ctx, 10*time.Minute, 200*time.Millisecond, func() (bool, error) {
		total, _, err := b.baseline.count(ctx, ns)
		return total == 0, err
	}); err != nil {
		return err
	}
	return b.deleteAll(ctx) // the healthy ones a missed goal left
}
