package controllers

// Create mode: asking PAM for the elevation, exactly once per object whatever fails.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/credentials"
	"github.com/pam-operator/pam-operator/internal/pam"
)

// awaitsCreate reports whether el asks PAM for an elevation and has no request recorded yet.
func awaitsCreate(el *pamv1.PamElevation) bool {
	return el.Spec.Request != nil && el.Status.RequestID == ""
}

// createMarker is the object's identity, appended to the justification sent: a request whose
// create answer was lost is found among the account's requests by it, and adopted.
func createMarker(el *pamv1.PamElevation) string {
	uid := string(el.UID)
	if len(uid) > 8 {
		uid = uid[:8]
	}
	return fmt.Sprintf("[pam-operator %s/%s %s]", el.Namespace, el.Name, uid)
}

// createSettled reports whether a create asked for at el's RequestCreateTime has had its effect
// in PAM, answered or not: after the server's call timeout, and a sync interval besides, a
// request that a list does not show was not made.
func (r *PamElevationReconciler) createSettled(el *pamv1.PamElevation, server pamv1.ServerObject, now time.Time) (bool, time.Time) {
	timeout := 30 * time.Second // the API's default, should the object predate it
	if t := server.ServerSpec().Timeout; t != nil {
		timeout = t.Duration
	}
	at := el.Status.RequestCreateTime.Add(timeout + r.SyncInterval)
	return !now.Before(at), at
}

// ensureCreated gives a create-mode elevation its request: the one an earlier create made, found
// by its marker, or a new one. It reports whether el tracks a request now; when it does not, p
// says why and when to look again.
func (r *PamElevationReconciler) ensureCreated(ctx context.Context, el *pamv1.PamElevation, server pamv1.ServerObject, p *pass, closeNow bool) bool {
	if _, cluster := server.(*pamv1.ClusterPamServer); cluster && server.ServerSpec().RequestPolicy == nil && el.Status.RequestCreateTime == nil {
		p.problem = &problem{reason: pamv1.ReasonRoleNotAllowed, stalled: true,
			message: fmt.Sprintf("ClusterPamServer %s has no requestPolicy: it serves no create mode", server.GetName())}
		return false
	}
	pc, ok := r.connect(ctx, el, server, p, "Create")
	if !ok {
		return false
	}
	if el.Status.RequestCreateTime != nil {
		if found, err := r.findCreated(ctx, el, pc, p); err != nil || found {
			if err != nil {
				p.fail(err)
			}
			return found
		}
		if settled, at := r.createSettled(el, server, p.now); !settled {
			p.problem = &problem{reason: pamv1.ReasonPAMUnavailable, retryAfter: at.Sub(p.now),
				message: "The answer to the create was lost; looking for the request among the account's requests before asking again"}
			return false
		}
	}
	if closeNow {
		p.markClosed(closeReason(el), "No request was made in PAM")
		return false
	}
	role, ttl, prob, err := r.resolveRole(ctx, el, server, pc)
	switch {
	case err != nil:
		p.fail(err)
		return false
	case prob != nil:
		p.problem = prob
		return false
	}
	// The attempt is recorded before it is made: should the answer, or this process, be lost,
	// the next pass looks for the request instead of asking again.
	before := el.DeepCopy()
	el.Status.RequestCreateTime = &metav1.Time{Time: r.Clock.Now()}
	// The patch answers with the stored status, which lacks what this pass set before it
	// (status.expiresAt): that is kept for the pass's own patch, or the EXPIRES column would
	// stay empty until the next sync.
	status := el.Status.DeepCopy()
	if err := r.Status().Patch(ctx, el, client.MergeFrom(before)); err != nil {
		p.apiErr = err
		return false
	}
	p.written = el.DeepCopy() // as stored: the end patch counts from here
	el.Status = *status
	opts := pam.CreateOptions{RoleID: role.ID, TTL: ttl, Justification: el.Spec.Request.Justification + " " + createMarker(el)}
	if t := el.Spec.Request.StartAt; t != nil {
		opts.RequestedTime = t.Time
	}
	created, err := pc.Create(ctx, opts)
	if _, refused := credentials.AsError(err); !refused {
		observeCreate(err) // sent to PAM, whatever came back
	}
	if err != nil {
		audit(ctx, el, "create", role.DisplayName, "", "failed: "+err.Error())
		if errors.Is(err, pam.ErrCreateOutcomeUnknown) {
			p.problem = &problem{reason: pamv1.ReasonPAMUnavailable, retryAfter: time.Second,
				message: "The answer to the create was lost; looking for the request among the account's requests before asking again"}
			return false
		}
		el.Status.RequestCreateTime = nil // refused: nothing was made
		p.fail(err)
		return false
	}
	r.adopt(ctx, el, created, p)
	audit(ctx, el, "create", role.DisplayName, created.ID, "created, "+string(created.Status))
	r.Recorder.Eventf(el, nil, corev1.EventTypeNormal, "Created", "Create",
		"PAM request %s created for role %s: %s", created.ID, role.DisplayName, created.Status)
	return true
}

// noRequestMade reports whether the create el asked for made no request in PAM: a list does not
// show it, and the create has settled. A request found is recorded in el's status.
func (r *PamElevationReconciler) noRequestMade(ctx context.Context, el *pamv1.PamElevation, server pamv1.ServerObject, p *pass) bool {
	pc, ok := r.connect(ctx, el, server, p, "Release")
	if !ok {
		return false
	}
	found, err := r.findCreated(ctx, el, pc, p)
	switch {
	case err != nil:
		p.fail(err)
		return false
	case found:
		return false
	}
	settled, at := r.createSettled(el, server, p.now)
	if !settled {
		p.problem = &problem{reason: pamv1.ReasonPAMUnavailable, retryAfter: at.Sub(p.now),
			message: "The answer to the create was lost; looking for the request among the account's requests before releasing the object"}
	}
	return settled
}

// connect returns the client for el's calls to server, and tells el once when it is the copy
// of the credentials kept in escrow (which reads and closes, and never creates).
func (r *PamElevationReconciler) connect(ctx context.Context, el *pamv1.PamElevation, server pamv1.ServerObject, p *pass, action string) (pam.Client, bool) {
	pc, err := r.Connector.Connect(ctx, server)
	if err != nil {
		p.failConnect(err)
		return nil, false
	}
	r.noteEscrow(el, pc, action)
	return pc, true
}

// adopt records req as the request el tracks, read now.
func (r *PamElevationReconciler) adopt(ctx context.Context, el *pamv1.PamElevation, req *pam.Request, p *pass) {
	if id, err := pam.NormalizeID(req.ID); err == nil {
		el.Status.RequestID = id
	}
	r.applySync(ctx, el, req, r.Clock.Now(), true, p)
}

// findCreated looks for the request an earlier create of el made, by its marker, among the
// account's requests created since the attempt (less the skew margin: PAM's clock is not ours).
// More than one is adopted as the oldest and reported, never left unsaid.
func (r *PamElevationReconciler) findCreated(ctx context.Context, el *pamv1.PamElevation, pc pam.Client, p *pass) (bool, error) {
	marker := createMarker(el)
	var found []pam.Request
	err := pc.List(ctx, pam.FilterCreatedSince(el.Status.RequestCreateTime.Add(-r.ClockSkewMargin)), func(req pam.Request) {
		if strings.HasSuffix(req.Justification, marker) {
			found = append(found, req)
		}
	})
	if err != nil || len(found) == 0 {
		return false, err
	}
	slices.SortFunc(found, func(a, b pam.Request) int { return a.CreationTime.Compare(b.CreationTime) })
	r.adopt(ctx, el, &found[0], p)
	audit(ctx, el, "create", roleAsked(el), found[0].ID, "found after a lost answer; adopted")
	if len(found) > 1 {
		var others []string
		for _, o := range found[1:] {
			others = append(others, o.ID)
		}
		r.Recorder.Eventf(el, nil, corev1.EventTypeWarning, pamv1.ReasonDuplicateRequest, "Create",
			"PAM holds more requests made for this object than the one adopted (%s): %s; close them in MIM", found[0].ID, strings.Join(others, ", "))
	}
	return true, nil
}

// resolveRole finds the role el asks for among those the account may request, and the ttl to
// ask for, within the server's requestPolicy. A role that cannot be requested is a problem a
// person must fix: nothing is created.
func (r *PamElevationReconciler) resolveRole(ctx context.Context, el *pamv1.PamElevation, server pamv1.ServerObject, pc pam.Client) (pam.Role, time.Duration, *problem, error) {
	ask := el.Spec.Request
	policy := server.ServerSpec().RequestPolicy
	refuse := func(reason, format string, args ...any) (pam.Role, time.Duration, *problem, error) {
		return pam.Role{}, 0, &problem{reason: reason, message: fmt.Sprintf(format, args...), stalled: true}, nil
	}
	roles, err := pc.Roles(ctx)
	if err != nil {
		return pam.Role{}, 0, nil, err
	}
	var matches []pam.Role
	for _, role := range roles {
		if (ask.RoleID != "" && strings.EqualFold(role.ID, ask.RoleID)) || (ask.Role != "" && strings.EqualFold(role.DisplayName, ask.Role)) {
			matches = append(matches, role)
		}
	}
	switch len(matches) {
	case 0:
		return refuse(pamv1.ReasonRoleNotFound, "None of the %d roles the server's account may request is %s", len(roles), roleAsked(el))
	case 1:
	default:
		var ids []string
		for _, m := range matches {
			ids = append(ids, m.ID)
		}
		return refuse(pamv1.ReasonRoleAmbiguous, "%d roles are named %q (%s): name one by spec.request.roleID", len(matches), ask.Role, strings.Join(ids, ", "))
	}
	role := matches[0]
	if policy != nil && len(policy.AllowedRoles) > 0 && !slices.ContainsFunc(policy.AllowedRoles, func(allowed string) bool {
		return strings.EqualFold(allowed, role.ID) || strings.EqualFold(allowed, role.DisplayName)
	}) {
		return refuse(pamv1.ReasonRoleNotAllowed, "Role %q (%s) is not in the server's requestPolicy.allowedRoles", role.DisplayName, role.ID)
	}
	ttl := role.TTL
	if ask.TTL != nil {
		ttl = ask.TTL.Duration
	}
	if ttl <= 0 {
		return refuse(pamv1.ReasonRoleNotAllowed, "Role %q has no TTL in PAM: set spec.request.ttl", role.DisplayName)
	}
	if policy != nil && policy.MaxTTL != nil && ttl > policy.MaxTTL.Duration {
		return refuse(pamv1.ReasonRoleNotAllowed, "ttl %s is above the server's requestPolicy.maxTTL %s", ttl, policy.MaxTTL.Duration)
	}
	return role, ttl.Truncate(time.Second), nil, nil
}

// roleAsked names the role el asks for, as its spec does.
func roleAsked(el *pamv1.PamElevation) string {
	if el.Spec.Request == nil {
		return ""
	}
	if el.Spec.Request.RoleID != "" {
		return "role id " + el.Spec.Request.RoleID
	}
	return fmt.Sprintf("role %q", el.Spec.Request.Role)
}

// requestedRole is the role a create-mode el asks for, by name or id; "" in adopt mode, where
// the operator does not know it.
func requestedRole(el *pamv1.PamElevation) string {
	if el.Spec.Request == nil {
		return ""
	}
	if el.Spec.Request.Role != "" {
		return el.Spec.Request.Role
	}
	return el.Spec.Request.RoleID
}

// audit writes the one structured line a PAM write (create, close) leaves: what a platform
// collects as the record of who asked PAM for what. The reason of a create is the object's
// spec.request; of a close, why it was closed.
func audit(ctx context.Context, el *pamv1.PamElevation, write, role, requestID, outcome string) {
	if requestID == "" {
		requestID = requestIDOf(el)
	}
	reason := "spec.request"
	if write == "close" {
		reason = closeReason(el)
	}
	ctrl.LoggerFrom(ctx).WithName("audit").Info("PAM write", "write", write, "object", el.Name, "namespace", el.Namespace,
		"requestID", requestID, "role", role, "reason", reason, "outcome", outcome)
}
