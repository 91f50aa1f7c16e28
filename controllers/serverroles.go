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

	mu       sync.Mutex
	byServer map[types.NamespacedName]*rolesListing
}

// rolesListing is the listing of one server's roles.
type rolesListing struct {
	asked   time.Time // when the last list began
	running bool
	// listed is a finished list, and unwritten whether the status has yet to show it.
	listed    []pam.Role
	unwritten bool
}

// refresh writes the server's finished list into status, and starts the next list once
// interval has passed since the last began and none is running.
func (s *serverRoles) refresh(ctx context.Context, server pamv1.ServerObject, pc pam.Client, status *pamv1.PamServerStatus) {
	key := client.ObjectKeyFromObject(server)
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.byServer[key]
	if l == nil {
		if s.byServer == nil {
			s.byServer = map[types.NamespacedName]*rolesListing{}
		}
		l = &rolesListing{}
		s.byServer[key] = l
	}
	if l.unwritten {
		writeRoles(status, l.listed)
		l.listed, l.unwritten = nil, false
	}
	if l.running || !l.asked.IsZero() && time.Since(l.asked) < s.interval {
		return
	}
	l.asked, l.running = time.Now(), true
	go s.list(context.WithoutCancel(ctx), key, l, pc)
}

// list lists the server's roles into l and queues the server to write them.
func (s *serverRoles) list(ctx context.Context, key types.NamespacedName, l *rolesListing, pc pam.Client) {
	ctx, cancel := context.WithTimeout(ctx, rolesListLimit)
	defer cancel()
	roles, err := pc.Roles(ctx)
	s.mu.Lock()
	l.running = false
	wanted := s.byServer[key] == l // not when the server was deleted meanwhile
	if wanted && err == nil {
		l.listed, l.unwritten = roles, true
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
	delete(s.byServer, key)
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
