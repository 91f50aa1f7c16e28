package controllers

import (
	"context"
	"math"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/validation/path"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
)

// escrowCollector deletes, once this replica leads, the credential escrows that nothing needs:
// those of servers that no longer exist, or exist as another object of the same name, or that
// no elevation needs. While the operator runs, the server reconciler drops each escrow when its
// server stops being needed or is deleted; a crash between an escrow's write and its server's
// in-use finalizer, or a server deleted while no replica ran, leaves one that only this finds.
// It runs once the caches have synced, so the elevation index it asks is complete.
type escrowCollector struct {
	connector ServerConnector
	// reader reads servers from the API server: as they are now, whatever the cache holds.
	reader   client.Reader
	index    *elevationIndex
	maxDelay time.Duration
	log      logr.Logger
}

// NeedLeaderElection makes the collector run on the leader only, which alone keeps escrows.
func (e *escrowCollector) NeedLeaderElection() bool { return true }

// Start collects until one collection has succeeded, retrying on the usual backoff: a failure
// must not stop the manager, and the escrows wait at no cost but their existence.
func (e *escrowCollector) Start(ctx context.Context) error {
	ctx = ctrl.LoggerInto(ctx, e.log)
	backoff := wait.Backoff{Duration: initialRetryDelay, Factor: 2, Steps: math.MaxInt32, Cap: e.maxDelay}
	_ = wait.ExponentialBackoffWithContext(ctx, backoff, func(ctx context.Context) (bool, error) {
		if err := e.collect(ctx); err != nil {
			e.log.Error(err, "Collecting the credential escrows nothing needs failed; retrying")
			return false, nil
		}
		return true, nil
	})
	return nil // done, or the manager is stopping
}

func (e *escrowCollector) collect(ctx context.Context) (err error) {
	defer recoverAsError(&err)
	return e.connector.CollectEscrows(ctx, e.needed)
}

// needed reports whether the escrow written for the server serverKey, object uid, is still
// needed: that server exists as that very object, and an elevation may still close through it.
func (e *escrowCollector) needed(ctx context.Context, serverKey string, uid types.UID) (bool, error) {
	server := serverOfKey(serverKey)
	if server == nil {
		return false, nil
	}
	if err := e.reader.Get(ctx, client.ObjectKeyFromObject(server), server); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	return server.GetUID() == uid && e.index.inUse(serverKey), nil
}

// serverOfKey returns an empty server named by a pamv1.KeyOf key, nil when key is not one.
func serverOfKey(key string) pamv1.ServerObject {
	kind, rest, _ := strings.Cut(key, "/")
	var server pamv1.ServerObject
	switch pamv1.ServerKind(kind) {
	case pamv1.ServerKindClusterPamServer:
		server = &pamv1.ClusterPamServer{}
		server.SetName(rest)
	case pamv1.ServerKindPamServer:
		namespace, name, _ := strings.Cut(rest, "/")
		server = &pamv1.PamServer{}
		server.SetNamespace(namespace)
		server.SetName(name)
	default:
		return nil
	}
	// Only names a Get can ask for: a hand-made escrow must not fail every collection.
	for _, name := range []string{server.GetNamespace(), server.GetName()} {
		if len(path.IsValidPathSegmentName(name)) > 0 {
			return nil
		}
	}
	if server.GetName() == "" || pamv1.KeyOf(server) != key {
		return nil
	}
	return server
}
