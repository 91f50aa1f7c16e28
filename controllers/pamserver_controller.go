package controllers

import (
	"context"
	"fmt"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/credentials"
	"github.com/pam-operator/pam-operator/internal/pam"
)

// ServerReconciler reports whether a PamServer or ClusterPamServer configuration can be used:
// its URL parses, its CA bundle holds certificates, and its Secret exists with the keys its auth
// method needs. It calls PAM only to list the roles its account may request, and never on its
// worker (serverroles.go); elevations report what PAM answers. It also keeps the
// server and its Secret from being deleted while an elevation may still need them (inuse.go).
type ServerReconciler struct {
	client.Client
	// Connector validates configurations and builds the clients elevations share.
	Connector ServerConnector
	// NewObject returns an empty object of the kind this reconciler serves.
	NewObject func() pamv1.ServerObject
	// RetryInterval is how soon a server whose configuration cannot be used is checked again.
	RetryInterval time.Duration
	// RecheckInterval is how often a usable server's Secret is checked again.
	RecheckInterval time.Duration
	// Refused, when set, brings the servers whose login was just refused, so that their status
	// records it at once.
	Refused <-chan event.GenericEvent

	// index tells whether elevations still need a server; set up by SetupWithManager.
	index *elevationIndex

	// roles lists the roles of the servers that serve create mode, once per RecheckInterval.
	roles serverRoles
}

// +kubebuilder:rbac:groups=pam.mim.dev,resources=pamservers/status;clusterpamservers/status,verbs=patch

// Reconcile validates one server and writes its Ready and Stalled conditions.
func (r *ServerReconciler) Reconcile(ctx context.Context, req reconcile.Request) (ctrl.Result, error) {
	server := r.NewObject()
	if err := r.Get(ctx, req.NamespacedName, server); err != nil {
		if client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, err
		}
		server.SetName(req.Name)
		server.SetNamespace(req.Namespace)
		r.Connector.Forget(server)
		r.roles.forget(req.NamespacedName)
		forgetServerMetrics(pamv1.KeyOf(server))
		// Normally dropped before the in-use finalizer goes; a server deleted mid-way (between
		// the escrow's write and the finalizer's, or with the finalizer removed by hand) leaves
		// it here. Nothing can use it: a server of the same name has another UID.
		return ctrl.Result{}, r.Connector.DropEscrow(ctx, server)
	}

	// One read of the credentials serves both the validity check and the escrow.
	pc, creds, err := r.Connector.Check(ctx, server)
	if _, invalid := credentials.AsError(err); err != nil && !invalid {
		return ctrl.Result{}, err
	}
	if err := protectServer(ctx, r.Client, r.index, r.Connector, server, creds); err != nil {
		return ctrl.Result{}, err
	}

	original := server.DeepCopyObject().(pamv1.ServerObject)
	result := r.deriveStatus(ctx, server, pc, err)
	status := server.ServerStatus()
	if equality.Semantic.DeepEqual(original.ServerStatus(), status) {
		return result, nil
	}
	return result, client.IgnoreNotFound(r.Status().Patch(ctx, server, client.MergeFrom(original)))
}

// deriveStatus sets the server's conditions, its login backoff and its roles from what the
// check found (err, from Connector.Check), and returns when to check again.
func (r *ServerReconciler) deriveStatus(ctx context.Context, server pamv1.ServerObject, pc pam.Client, err error) ctrl.Result {
	status := server.ServerStatus()
	gen := server.GetGeneration()
	set := func(condType string, s metav1.ConditionStatus, reason, message string) {
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{
			Type: condType, Status: s, Reason: reason, Message: message, ObservedGeneration: gen,
		})
	}

	// Secrets are not watched (that needs the right to list them all), so a server that reads
	// one is checked again on a timer: soon while it is broken, at the sync interval after.
	var result ctrl.Result
	if ce, ok := credentials.AsError(err); ok {
		set(pamv1.ConditionReady, metav1.ConditionFalse, ce.Reason, ce.Message)
		set(pamv1.ConditionStalled, metav1.ConditionTrue, ce.Reason, ce.Message)
		result.RequeueAfter = r.RetryInterval
	} else {
		set(pamv1.ConditionReady, metav1.ConditionTrue, pamv1.ReasonConfigured, "The configuration is valid")
		meta.RemoveStatusCondition(&status.Conditions, pamv1.ConditionStalled)
		if server.ServerSpec().Auth.SecretName() != "" || servesCreateMode(server) {
			result.RequeueAfter = r.RecheckInterval
		}
		if servesCreateMode(server) {
			r.roles.refresh(ctx, server, pc, status)
		}
	}
	status.ObservedGeneration = gen
	status.LoginBackoff = r.Connector.LoginBackoff(server)
	if lb := status.LoginBackoff; lb != nil && err == nil {
		// Usable, but its account's logins are paused: what `kubectl get` should say first.
		msg := fmt.Sprintf("Logins as %s are paused until %s, so that Active Directory does not lock the account; set its current credentials in the Secret to try again at once. Refused: %s",
			lb.Account, lb.RetryAt.UTC().Format(time.RFC3339), lb.Message)
		set(pamv1.ConditionReady, metav1.ConditionFalse, pamv1.ReasonAuthBackoff, msg)
		set(pamv1.ConditionStalled, metav1.ConditionTrue, pamv1.ReasonAuthBackoff, msg)
	}
	if lb := status.LoginBackoff; lb != nil {
		// Checked again when its logins may resume, to clear it.
		if resume := max(time.Until(lb.RetryAt.Time), time.Second); result.RequeueAfter == 0 || resume < result.RequeueAfter {
			result.RequeueAfter = resume
		}
	}
	return result
}

// servesCreateMode reports whether create-mode elevations may request through the server: a
// ClusterPamServer only with a requestPolicy.
func servesCreateMode(server pamv1.ServerObject) bool {
	_, cluster := server.(*pamv1.ClusterPamServer)
	return !cluster || server.ServerSpec().RequestPolicy != nil
}

// SetupWithManager registers the reconciler for the kind NewObject returns.
func (r *ServerReconciler) SetupWithManager(mgr ctrl.Manager, name string) error {
	index, err := newElevationIndex(context.Background(), mgr.GetCache())
	if err != nil {
		return err
	}
	r.index = index
	r.roles = serverRoles{interval: r.RecheckInterval, newObject: r.NewObject, listed: make(chan event.GenericEvent)}
	b := ctrl.NewControllerManagedBy(mgr).
		Named(name).
		// A finalizer change comes back here: the in-use decision it carried may be stale by now.
		For(r.NewObject(), builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, finalizersChanged))).
		Watches(&pamv1.PamElevation{}, handler.Funcs{
			CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				r.elevationChanged(ctx, nil, e.Object, q)
			},
			UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				r.elevationChanged(ctx, e.ObjectOld, e.ObjectNew, q)
			},
			DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				r.elevationChanged(ctx, e.Object, nil, q)
			},
		}).
		WatchesRawSource(source.Channel(r.roles.listed, &handler.EnqueueRequestForObject{})).
		WithOptions(controller.Options{RateLimiter: errorBackoff(r.RetryInterval)})
	if r.Refused != nil {
		b = b.WatchesRawSource(source.Channel(r.Refused, &handler.EnqueueRequestForObject{}))
	}
	return b.Complete(r)
}

// finalizersChanged passes updates that add or remove a finalizer.
var finalizersChanged = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	return !slices.Equal(e.ObjectOld.GetFinalizers(), e.ObjectNew.GetFinalizers())
}}

// releaseSettle is how long a server whose protection may no longer be needed waits for its
// pass: the thousand elevations of a mass revocation leaving cost a pass a second, not one each.
const releaseSettle = time.Second

// elevationChanged queues an elevation's server when the elevation's event may have made the
// server's in-use protection wrong. It decides from the event alone: an elevation that comes to
// need an unprotected server queues it at once; one that stops needing a protected server (or
// moves to another) queues a pass after releaseSettle, which finds out whether any other still
// needs it. Most events (status changes) change neither.
func (r *ServerReconciler) elevationChanged(ctx context.Context, old, cur client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	prev, _ := old.(*pamv1.PamElevation)
	el, _ := cur.(*pamv1.PamElevation)
	if prev != nil && el != nil && prev.ServerKey() == el.ServerKey() {
		if needsServer(prev) != needsServer(el) {
			r.queueIfWrong(ctx, el, needsServer(el), q)
		}
		return
	}
	// Created, deleted, or pointed at another server.
	if prev != nil {
		r.queueIfWrong(ctx, prev, false, q)
	}
	if el != nil {
		r.queueIfWrong(ctx, el, needsServer(el), q)
	}
}

// queueIfWrong queues the elevation's server when its protection may not match needed.
func (r *ServerReconciler) queueIfWrong(ctx context.Context, el *pamv1.PamElevation, needed bool, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	if (el.Spec.ServerRef.Kind == pamv1.ServerKindClusterPamServer) != r.isCluster() {
		return
	}
	key := types.NamespacedName{Name: el.Spec.ServerRef.Name}
	if !r.isCluster() {
		key.Namespace = el.Namespace
	}
	server := r.NewObject()
	// Only its finalizers are read: the cached object is not copied.
	if err := r.Get(ctx, key, server, client.UnsafeDisableDeepCopy); err != nil {
		// A server that does not exist has nothing to protect; its creation brings it here.
		return
	}
	switch protected := controllerutil.ContainsFinalizer(server, InUseFinalizer); {
	case needed && !protected:
		q.Add(reconcile.Request{NamespacedName: key})
	case !needed && protected:
		q.AddAfter(reconcile.Request{NamespacedName: key}, releaseSettle)
	}
}

func (r *ServerReconciler) isCluster() bool {
	_, ok := r.NewObject().(*pamv1.ClusterPamServer)
	return ok
}
