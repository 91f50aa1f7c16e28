package controllers

// The roles a server's account may request, listed off the server controller's worker.

import (
	"context"
	"math"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/pam"
)

// maxStatusRoles bounds status.roles: an account that may request thousands of roles must not
// grow the object without limit; roleCount still says how many there are.
const maxStatusRoles = 100

// rolesListLimit bounds a list with its wait for one of the server's call slots: spec.timeout
// is at most 2m, and the calls that hold the slots end by theirs.
const rolesListLimit = 5 * time.Minute

// serverRoles lists the servers' roles in goroutines of their own: a server that accepts
// connections and never answers must not hold, for its timeout, the worker that keeps every
// other server's conditions and in-use finalizer. A finished list queues its server, whose next
// pass writes it into the status; a failed one leaves the last.
type serverRoles struct {
	// interval is how often a server's roles are listed.
	interval time.Duration
	// listed queues a server whose list finished.
	listed    chan event.GenericEvent
	newObject func() pamv1.ServerObject

	mu      sync.Mutex
	asked   map[types.NamespacedName]time.Time // when each server's last list began
	running map[types.NamespacedName]bool
	results map[types.NamespacedName][]pam.Role // finished lists not yet written
}

// refresh writes the server's finished list into status, and starts the next list once
// interval has passed since the last began and none is running.
func (s *serverRoles) refresh(ctx context.Context, server pamv1.ServerObject, pc pam.Client, status *pamv1.PamServerStatus) {
	key := client.ObjectKeyFromObject(server)
	s.mu.Lock()
	defer s.mu.Unlock()
	if roles, ok := s.results[key]; ok {
		delete(s.results, key)
		writeRoles(status, roles)
	}
	if last, ok := s.asked[key]; s.running[key] || ok && time.Since(last) < s.interval {
		return
	}
	if s.asked == nil {
		s.asked, s.running, s.results = map[types.NamespacedName]time.Time{}, map[types.NamespacedName]bool{}, map[types.NamespacedName][]pam.Role{}
	}
	s.asked[key], s.running[key] = time.Now(), true
	go s.list(context.WithoutCancel(ctx), key, pc)
}

// list lists key's roles and queues the server to write them.
func (s *serverRoles) list(ctx context.Context, key types.NamespacedName, pc pam.Client) {
	ctx, cancel := context.WithTimeout(ctx, rolesListLimit)
	defer cancel()
	roles, err := pc.Roles(ctx)
	s.mu.Lock()
	wanted := s.running[key] // not when the server was deleted meanwhile
	delete(s.running, key)
	if wanted && err == nil {
		s.results[key] = roles
	}
	s.mu.Unlock()
	if err != nil {
		ctrl.LoggerFrom(ctx).Info("Listing the roles the account may request failed", "error", err.Error())
		return
	}
	if !wanted {
		return
	}
	server := s.newObject()
	server.SetNamespace(key.Namespace)
	server.SetName(key.Name)
	select {
	case s.listed <- event.GenericEvent{Object: server}:
	case <-ctx.Done(): // its next recheck writes them
	}
}

// forget drops what is known of a deleted server's roles.
func (s *serverRoles) forget(key types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.asked, key)
	delete(s.running, key)
	delete(s.results, key)
}

// writeRoles writes roles into status, the first maxStatusRoles of them.
func writeRoles(status *pamv1.PamServerStatus, roles []pam.Role) {
	status.RoleCount = int32(min(len(roles), math.MaxInt32))
	status.Roles = nil
	for _, role := range roles[:min(len(roles), maxStatusRoles)] {
		// PAM's name comes unaltered, for exact matching; the status shows a bounded copy.
		name := strings.ToValidUTF8(role.DisplayName[:min(len(role.DisplayName), 256)], "")
		out := pamv1.ServerRole{Name: name, ID: role.ID, Approval: role.ApprovalEnabled, MFA: role.MFAEnabled}
		if role.TTL > 0 {
			out.TTL = &metav1.Duration{Duration: role.TTL}
		}
		if role.AvailabilityWindowEnabled {
			out.AvailabilityWindow = role.AvailableFrom.Format("15:04") + "-" + role.AvailableTo.Format("15:04")
		}
		status.Roles = append(status.Roles, out)
	}
}
