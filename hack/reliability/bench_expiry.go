package main

// Expiry → Close lag, and that nothing closes early.

import (
	"context"
	"math/rand"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
)

// expiry creates elevations whose expiresAt is spread over a window and measures how late (or
// early) each Close reached the emulator.
func (b *bench) expiry(ctx context.Context) error {
	n := b.cfg.expiryCount
	rng := rand.New(rand.NewSource(1))
	// The first expiry comes once all of them should be created and synced (at twice the pace
	// measured before, plus 10 s): what is measured is the precision of expiry, not how fast
	// elevations are created. Whether that held is reported.
	setup := b.perElevationSetup
	if setup == 0 {
		setup = 10 * time.Millisecond // the memory benchmark, which measures it, did not run
	}
	lead := 10*time.Second + 2*time.Duration(n)*setup
	start := time.Now().Add(lead)
	expires := make([]time.Time, n)
	for i := range expires {
		// metav1.Time keeps whole seconds.
		expires[i] = start.Add(time.Duration(rng.Int63n(int64(b.cfg.expirySpread)))).Truncate(time.Second)
	}
	_, ids, err := b.createElevations(ctx, n, func(i int, el *pamv1.PamElevation) {
		at := metav1.NewTime(expires[i])
		el.Spec.ExpiresAt = &at
	})
	if err != nil {
		return err
	}
	if err := b.waitSynced(ctx, n); err != nil {
		return err
	}
	if ready := time.Now(); ready.After(start) {
		b.report.add("expiry: created and synced after the first expiresAt by", ms(ready.Sub(start)), "ms", "the lead was too short: the lags include creation")
	}
	var lags []time.Duration
	early := 0
	if err := poll(ctx, b.cfg.expirySpread+5*time.Minute, 250*time.Millisecond, func() (bool, error) {
		return b.h.closes.count(ids) == n, nil
	}); err != nil {
		return err
	}
	for i, id := range ids {
		closedAt, _ := b.h.closes.get(id)
		lag := closedAt.Sub(expires[i])
		if lag < 0 {
			early++
		}
		lags = append(lags, lag)
	}
	b.report.add("expiry → Close at PAM, p50", ms(quantile(lags, 0.5)), "ms", "")
	b.report.add("expiry → Close at PAM, p99", ms(quantile(lags, 0.99)), "ms", "goal: < 100")
	b.report.add("expiry → Close at PAM, max", ms(quantile(lags, 1)), "ms", "")
	b.report.add("closes before expiresAt", float64(early), "closes", "goal: 0")
	return b.deleteAll(ctx)
}
