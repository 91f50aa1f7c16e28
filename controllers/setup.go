package controllers

import (
	"cmp"
	"context"
	"fmt"
	"runtime/debug"
	"time"

	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/credentials"
	"github.com/pam-operator/pam-operator/internal/dialpolicy"
)

// Options configure the controllers.
type Options struct {
	// ClusterResourceNamespace is where ClusterPamServer Secrets are read from.
	ClusterResourceNamespace string
	// OperatorNamespace is where the operator keeps its credential escrow; empty means
	// ClusterResourceNamespace.
	OperatorNamespace string
	// SyncInterval is how often open requests are read from PAM.
	SyncInterval time.Duration
	// MaxRetryDelay caps the retry backoff.
	MaxRetryDelay time.Duration
	// MaxConcurrentReconciles bounds parallel PamElevation reconciles.
	MaxConcurrentReconciles int
	// ClockSkewMargin is how far past PAM's own ExpirationTime a request counts as ended
	// without confirmation.
	ClockSkewMargin time.Duration
	// Clock is the time source; nil means the real clock.
	Clock clock.PassiveClock
	// UserAgent is sent to PAM.
	UserAgent string
	// AuthFailureBackoff is how long an account whose login was refused is left alone.
	AuthFailureBackoff time.Duration
	// RefuseNamespacedServers turns PamServers off (--namespaced-servers=false): tenants cannot
	// name where credentials go, only the administrator's ClusterPamServers can.
	RefuseNamespacedServers bool
	// DialPolicy says where PAM hosts and KDCs may be dialled (--allowed-pam-hosts); nil
	// refuses only link-local and cloud metadata addresses.
	DialPolicy *dialpolicy.Policy
}

// Setup registers every reconciler with the manager.
func Setup(ctx context.Context, mgr ctrl.Manager, opts Options) error {
	connector := &credentials.Connector{
		Client:                   mgr.GetClient(),
		LiveReader:               &credentials.CoalescingReader{Reader: mgr.GetAPIReader()},
		Writer:                   mgr.GetClient(),
		OperatorNamespace:        cmp.Or(opts.OperatorNamespace, opts.ClusterResourceNamespace),
		ClusterResourceNamespace: opts.ClusterResourceNamespace,
		UserAgent:                opts.UserAgent,
		Observe:                  observePAMCall,
		Clock:                    opts.Clock,
		RefuseNamespacedServers:  opts.RefuseNamespacedServers,
		DialPolicy:               opts.DialPolicy,
		Workers:                  opts.MaxConcurrentReconciles,
		AuthFailureBackoff:       opts.AuthFailureBackoff,
	}
	if err := (&PamElevationReconciler{
		Client:                  mgr.GetClient(),
		APIReader:               mgr.GetAPIReader(),
		Connector:               connector,
		Recorder:                mgr.GetEventRecorder("pam-operator"),
		Clock:                   opts.Clock,
		SyncInterval:            opts.SyncInterval,
		MaxRetryDelay:           opts.MaxRetryDelay,
		MaxConcurrentReconciles: opts.MaxConcurrentReconciles,
		ClockSkewMargin:         opts.ClockSkewMargin,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	retry, recheck := opts.MaxRetryDelay, opts.SyncInterval
	if retry <= 0 {
		retry = DefaultMaxRetryDelay
	}
	if recheck <= 0 {
		recheck = DefaultSyncInterval
	}
	// A refused login is recorded in its server's status at once: a crash right after must not
	// forget that the account's logins are paused.
	refused := map[bool]chan event.GenericEvent{false: make(chan event.GenericEvent, 64), true: make(chan event.GenericEvent, 64)}
	connector.OnLoginRefused = func(server pamv1.ServerObject) {
		select {
		case refused[server.GetNamespace() == ""] <- event.GenericEvent{Object: server}:
		default: // its periodic check records it
		}
	}
	if err := (&ServerReconciler{Client: mgr.GetClient(), Connector: connector, RetryInterval: retry, RecheckInterval: recheck,
		NewObject: func() pamv1.ServerObject { return &pamv1.PamServer{} }, Refused: refused[false],
	}).SetupWithManager(mgr, "pamserver"); err != nil {
		return err
	}
	if err := (&ServerReconciler{Client: mgr.GetClient(), Connector: connector, RetryInterval: retry, RecheckInterval: recheck,
		NewObject: func() pamv1.ServerObject { return &pamv1.ClusterPamServer{} }, Refused: refused[true],
	}).SetupWithManager(mgr, "clusterpamserver"); err != nil {
		return err
	}
	if err := registerBreakerMetrics(mgr.GetCache(), cmp.Or[clock.PassiveClock](opts.Clock, clock.RealClock{})); err != nil {
		return err
	}
	index, err := newElevationIndex(ctx, mgr.GetCache())
	if err != nil {
		return err
	}
	return mgr.Add(&escrowCollector{connector: connector, reader: mgr.GetAPIReader(), index: index, maxDelay: retry,
		log: mgr.GetLogger().WithName("escrow-collector")})
}

// recoverAsError, deferred, turns a panic in a goroutine of the operator's own into *err, as
// controller-runtime does for a reconcile: one bad object or server must not end the process and,
// with it, every close it owes.
func recoverAsError(err *error) {
	if p := recover(); p != nil {
		*err = fmt.Errorf("panic: %v [recovered]\n%s", p, debug.Stack())
	}
}

// errorBackoff is the retry schedule of a pass that returned an error (the API server failed):
// controller-runtime's own goes up to 1000 s, past the cap --max-retry-delay promises.
func errorBackoff(maxDelay time.Duration) workqueue.TypedRateLimiter[reconcile.Request] {
	return workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](initialRetryDelay, maxDelay)
}
