package main

// Delete → Close latency against a same-run baseline: a minimal controller that only sees the
// deletion, plus the emulator's raw Close round trip.

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/emulator"
	"github.com/pam-operator/pam-operator/internal/pam"
	"github.com/pam-operator/pam-operator/internal/pam/auth"
)

// latency deletes elevations one by one and times the Close reaching the emulator and the
// object going, against a minimal controller that sees the same deletion plus a raw Close.
func (b *bench) latency(ctx context.Context) error {
	n := b.cfg.latencyCount
	names, ids, rawRTT, err := b.toDeleteOneByOne(ctx, n)
	if err != nil {
		return err
	}
	// Only for this step: in the others it would be one more process decoding every change.
	var external *externalWatcher
	if b.cfg.baselineApart {
		if external, err = b.startExternalWatcher(ctx); err != nil {
			return err
		}
		defer external.stop()
	}
	gcsBefore := b.managerGCs()
	toClose, toGone, baseline, apart, deletedAt, err := b.deleteOneByOne(ctx, b.ns, names, ids, rawRTT, external)
	if err != nil {
		return err
	}
	// The slowest closes, against when the baseline saw the same deletion: whether the event
	// came late to both or the manager was slow after it.
	slowest := make([]int, n)
	for i := range slowest {
		slowest[i] = i
	}
	slices.SortFunc(slowest, func(i, j int) int { return cmp.Compare(toClose[j], toClose[i]) })
	for _, i := range slowest[:min(5, n)] {
		apartNote := ""
		if external != nil {
			apartNote = fmt.Sprintf(", in its own process %.2f ms", ms(apart[i]-rawRTT[i]))
		}
		fmt.Fprintf(b.progress, "    slow close %s, deleted at %s: %.2f ms; the baseline saw it after %.2f ms%s (raw Close %.2f ms)\n",
			names[i], deletedAt[i].UTC().Format(time.RFC3339Nano), ms(toClose[i]), ms(baseline[i]-rawRTT[i]), apartNote, ms(rawRTT[i]))
	}
	b.report.add("delete → close: the manager's garbage collections during the step", b.managerGCs()-gcsBefore, "GCs", "")
	for _, q := range []float64{0.5, 0.9, 0.99} {
		label := fmt.Sprintf("p%d", int(q*100))
		b.report.add("delete → Close at PAM, "+label, ms(quantile(toClose, q)), "ms", "")
		b.report.add("delete → object gone, "+label, ms(quantile(toGone, q)), "ms", "")
		b.report.add("baseline (event seen + raw Close), "+label, ms(quantile(baseline, q)), "ms", "")
		if external != nil {
			b.report.add("baseline in its own process (event seen + raw Close), "+label, ms(quantile(apart, q)), "ms", "")
		}
	}
	b.report.add("delete → Close p99 / baseline p99", ratio(quantile(toClose, 0.99), quantile(baseline, 0.99)), "×", "goal: ≤ 1.5")
	if external != nil {
		b.report.add("delete → Close p99 / baseline in its own process p99", ratio(quantile(toClose, 0.99), quantile(apart, 0.99)), "×", "")
	}
	return nil
}

// toDeleteOneByOne creates n elevations, waits until each has been read from PAM, and times n
// raw Close round trips of the emulator, the baseline's part for each deletion deleteOneByOne
// times.
func (b *bench) toDeleteOneByOne(ctx context.Context, n int) (names, ids []string, rawRTT []time.Duration, err error) {
	if names, ids, err = b.createElevations(ctx, n, nil); err != nil {
		return nil, nil, nil, err
	}
	if err := b.waitSynced(ctx, n); err != nil {
		return nil, nil, nil, err
	}
	rawRTT, err = b.rawCloseRoundTrips(ctx, n)
	return names, ids, rawRTT, err
}

// deleteOneByOne deletes the elevations of namespace one at a time, each once the one before is
// gone, and returns for each how long its Close took to reach PAM and the object to go, and the
// baseline's time (the deletion seen plus the raw Close round trip rawRTT), also in a process of
// its own when external is set.
func (b *bench) deleteOneByOne(ctx context.Context, namespace string, names, ids []string, rawRTT []time.Duration, external *externalWatcher) (toClose, toGone, baseline, apart []time.Duration, deletedAt []time.Time, err error) {
	for i := range names {
		el := &pamv1.PamElevation{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: names[i]}}
		if err := b.h.client.Delete(ctx, el); err != nil {
			return nil, nil, nil, nil, nil, err
		}
		deleted := time.Now()
		deletedAt = append(deletedAt, deleted)
		closedAt, err := b.h.closes.wait(ctx, ids[i], time.Minute)
		if err != nil {
			return nil, nil, nil, nil, nil, err
		}
		gone, err := b.baseline.gone.wait(ctx, names[i], time.Minute)
		if err != nil {
			return nil, nil, nil, nil, nil, err
		}
		seen, ok := b.baseline.deleting.get(names[i])
		if !ok {
			return nil, nil, nil, nil, nil, fmt.Errorf("the baseline controller never saw %s deleted", names[i])
		}
		if external != nil {
			seenApart, err := external.deleting.wait(ctx, names[i], time.Minute)
			if err != nil {
				return nil, nil, nil, nil, nil, fmt.Errorf("the baseline controller in its own process: %w", err)
			}
			apart = append(apart, seenApart.Sub(deleted)+rawRTT[i])
		}
		toClose = append(toClose, closedAt.Sub(deleted))
		toGone = append(toGone, gone.Sub(deleted))
		baseline = append(baseline, seen.Sub(deleted)+rawRTT[i])
	}
	return toClose, toGone, baseline, apart, deletedAt, nil
}

// rawCloseRoundTrips closes n requests of their own from a plain client, one at a time.
func (b *bench) rawCloseRoundTrips(ctx context.Context, n int) ([]time.Duration, error) {
	pc, err := pam.NewClient(pam.Config{URL: b.h.pamURL, CABundle: []byte(b.h.pam.CABundle), Auth: auth.Basic(pamUser, pamPassword)})
	if err != nil {
		return nil, err
	}
	out := make([]time.Duration, n)
	for i := range n {
		id := b.h.pam.AddRequest(emulator.Request{Owner: pamUser, RoleID: "2f5a1c3e-1111-4a2b-8c3d-4e5f6a7b8c9d", RequestedTTL: time.Hour}).ID
		start := time.Now()
		if err := pc.Close(ctx, id); err != nil {
			return nil, err
		}
		out[i] = time.Since(start)
	}
	return out, nil
}

// deletionWatcher is the latency baseline: the least a controller-runtime controller can do,
// note when it sees an elevation's deletion. It also notes when each elevation is gone, and its
// cache lets the benchmarks count elevations without listing them from the API server.
type deletionWatcher struct {
	cache    client.Reader
	deleting *timeLog
	gone     *timeLog
}

// report, unless nil, is told of each pass: the elevation's name, and when it saw the elevation
// deleted, or the zero time.
func startDeletionWatcher(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme, report func(name string, deletionSeen time.Time)) (*deletionWatcher, error) {
	w := &deletionWatcher{deleting: newTimeLog(), gone: newTimeLog()}
	if report == nil {
		report = func(string, time.Time) {}
	}
	seen := func(name string, at time.Time) {
		w.deleting.record(name, at)
		report(name, at)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0"})
	if err != nil {
		return nil, err
	}
	w.cache = mgr.GetCache()
	err = ctrl.NewControllerManagedBy(mgr).Named("baseline").For(&pamv1.PamElevation{}).
		Complete(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			el := &pamv1.PamElevation{}
			if err := w.cache.Get(ctx, req.NamespacedName, el); err != nil {
				if apierrors.IsNotFound(err) {
					// Its pass may come only after the object is gone: it sees the deletion then.
					now := time.Now()
					seen(req.Name, now)
					w.gone.record(req.Name, now)
				}
				return reconcile.Result{}, client.IgnoreNotFound(err)
			}
			if !el.DeletionTimestamp.IsZero() {
				seen(req.Name, time.Now())
			} else {
				report(req.Name, time.Time{})
			}
			return reconcile.Result{}, nil
		}))
	if err != nil {
		return nil, err
	}
	go func() { _ = mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		return nil, fmt.Errorf("the baseline controller's cache did not sync")
	}
	return w, nil
}

// count returns how many elevations the namespace holds and how many of them were read from
// PAM, from the watcher's cache.
func (w *deletionWatcher) count(ctx context.Context, namespace string) (total, synced int, err error) {
	var list pamv1.PamElevationList
	if err := w.cache.List(ctx, &list, client.InNamespace(namespace), client.UnsafeDisableDeepCopy); err != nil {
		return 0, 0, err
	}
	for i := range list.Items {
		if list.Items[i].Status.LastSyncTime != nil {
			synced++
		}
	}
	return len(list.Items), synced, nil
}
