package controllers

import (
	"context"

	"k8s.io/apimachinery/pkg/types"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/credentials"
	"github.com/pam-operator/pam-operator/internal/pam"
)

// Connector turns servers into authenticated PAM clients; *credentials.Connector is the one the
// manager uses. Its errors are a *credentials.Error when a person must fix a configuration, and
// transient failures of the Kubernetes API otherwise.
type Connector interface {
	// Server fetches the server an elevation references.
	Server(ctx context.Context, el *pamv1.PamElevation) (pamv1.ServerObject, error)
	// CheckNamespaceAllowed fails when the server may not serve the namespace.
	CheckNamespaceAllowed(ctx context.Context, server pamv1.ServerObject, namespace string) error
	// Connect returns a client for the server's current configuration and credentials.
	Connect(ctx context.Context, server pamv1.ServerObject) (pam.Client, error)
	// ConnectAhead returns the client last built for the server at once, nil if none, and a
	// function that returns the client for the credentials as they are now.
	ConnectAhead(ctx context.Context, server pamv1.ServerObject) (ahead pam.Client, current func() (pam.Client, error))
	// Batcher is the server's shared list of requests, read by periodic syncs.
	Batcher(server pamv1.ServerObject) *pam.Batcher
}

// ServerConnector is what the server reconcilers need besides: a check of a server's
// configuration that reads its credentials, the escrow of those credentials, and forgetting a
// deleted server. The escrow collector (escrowcollector.go) uses it too.
type ServerConnector interface {
	Connector
	// Check connects and returns the credentials it read, nil when there were none.
	Check(ctx context.Context, server pamv1.ServerObject) (pam.Client, *credentials.Credentials, error)
	// KeepEscrow keeps a copy of creds while elevations need the server.
	KeepEscrow(ctx context.Context, server pamv1.ServerObject, creds *credentials.Credentials) error
	// DropEscrow deletes the copy once nothing needs it.
	DropEscrow(ctx context.Context, server pamv1.ServerObject) error
	// CollectEscrows deletes every copy that needed says nothing needs; needed is asked while
	// no copy can be kept, and must not call back.
	CollectEscrows(ctx context.Context, needed func(ctx context.Context, serverKey string, uid types.UID) (bool, error)) error
	// Forget drops what is kept for a deleted server.
	Forget(server pamv1.ServerObject)
	// LoginBackoff is the refused login that pauses the logins of the server's account, nil
	// when none does: the server's status keeps it across restarts.
	LoginBackoff(server pamv1.ServerObject) *pamv1.LoginBackoff
}

var _ ServerConnector = (*credentials.Connector)(nil)
