package v1alpha1

// Condition types, following the kstatus conventions that Flux and Argo CD read.
const (
	// ConditionReady is True when the object is where it should be.
	ConditionReady = "Ready"
	// ConditionClosed is True once the PAM request is no longer open.
	ConditionClosed = "Closed"
	// ConditionReconciling is True while the operator is working towards the desired state.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is True when progress needs a person.
	ConditionStalled = "Stalled"
)

// Reasons shared by conditions and events. Each is stable, CamelCase and meant to be matched on.
const (
	// ReasonActive: the request is tracked and open in PAM.
	ReasonActive = "Active"
	// ReasonPending: PAM shows the request in a state it does not document; it counts as open.
	ReasonPending = "Pending"
	// ReasonProcessing: PAM is processing the request; it is not active yet.
	ReasonProcessing = "Processing"
	// ReasonPendingApproval: the request waits for an approver of its role in MIM.
	ReasonPendingApproval = "PendingApproval"
	// ReasonPendingMFA: the request waits for the requesting account's multi-factor check.
	ReasonPendingMFA = "PendingMFA"
	// ReasonRejected: an approver rejected the request; it was never granted. Terminal.
	ReasonRejected = "Rejected"
	// ReasonCloseRequested: the operator closed the request because spec.closed is true.
	ReasonCloseRequested = "CloseRequested"
	// ReasonRoleNotFound: no role the server's account may request has the name or id asked
	// for; nothing was created.
	ReasonRoleNotFound = "RoleNotFound"
	// ReasonRoleAmbiguous: two or more roles have the name asked for; nothing was created.
	ReasonRoleAmbiguous = "RoleAmbiguous"
	// ReasonRoleNotAllowed: the server's requestPolicy does not allow the role or the ttl;
	// nothing was created.
	ReasonRoleNotAllowed = "RoleNotAllowed"
	// ReasonSyncing: the first read of the request from PAM has not happened yet.
	ReasonSyncing = "Syncing"
	// ReasonExpired: the operator closed the request at its expiry.
	ReasonExpired = "Expired"
	// ReasonDeleted: the operator closed the request because the object is being deleted.
	ReasonDeleted = "Deleted"
	// ReasonEndedInPAM: PAM reports the request Closed, Expired or Rejected on its own.
	ReasonEndedInPAM = "EndedInPAM"
	// ReasonClosing: a close is under way or being retried.
	ReasonClosing = "Closing"
	// ReasonPAMError: PAM gave an answer the operator cannot use (an unexpected status or body).
	ReasonPAMError = "PAMError"
	// ReasonCloseFailed: PAM refused a close with an answer that retrying will not change by itself.
	ReasonCloseFailed = "CloseFailed"
	// ReasonPAMUnavailable: PAM could not be reached or answered with a retryable error.
	ReasonPAMUnavailable = "PAMUnavailable"
	// ReasonUnauthorized: PAM answered 401 or 403 to the configured credentials.
	ReasonUnauthorized = "Unauthorized"
	// ReasonAuthBackoff: a login with the account's current credentials was refused, and
	// nothing sends them again until the time the message gives, or until the Secret's data
	// changes: each refused logon counts towards the account's lockout.
	ReasonAuthBackoff = "AuthBackoff"
	// ReasonRequestNotFound: PAM does not list the request for the configured account.
	ReasonRequestNotFound = "RequestNotFound"
	// ReasonServerNotFound: the referenced PamServer or ClusterPamServer does not exist.
	ReasonServerNotFound = "ServerNotFound"
	// ReasonSecretNotFound: the server's credentials Secret does not exist.
	ReasonSecretNotFound = "SecretNotFound"
	// ReasonInvalidServerConfig: the server's configuration or its Secret cannot be used.
	ReasonInvalidServerConfig = "InvalidServerConfig"
	// ReasonDuplicateRequest: another PamElevation already tracks the same request; this one
	// never closes it.
	ReasonDuplicateRequest = "DuplicateRequest"
	// ReasonNamespaceNotAllowed: the ClusterPamServer's allowedNamespaces does not select the
	// elevation's namespace. The elevation reads and takes nothing through it; a request it
	// already tracks is still closed on deletion and expiry.
	ReasonNamespaceNotAllowed = "NamespaceNotAllowed"
	// ReasonServerNotAllowed: the operator runs with --namespaced-servers=false and the
	// elevation names a PamServer. Nothing is sent through it, not even a close: the
	// administrator said where credentials may go.
	ReasonServerNotAllowed = "ServerNotAllowed"
	// ReasonInsecureTransport: the server's auth method would send a password over plain http.
	ReasonInsecureTransport = "InsecureTransport"
	// ReasonHostNotAllowed: a dial was refused by policy: the server's host, the target behind a
	// proxy, or a KDC is at a link-local or cloud metadata address, which is never dialled, or
	// outside the administrator's --allowed-pam-hosts. Closes stop too, since the policy says
	// where credentials may go: the finalizer holds until the server or the policy changes, or
	// a person sets deletionPolicy Orphan.
	ReasonHostNotAllowed = "HostNotAllowed"
	// ReasonOrphaned: the object was released without calling PAM (deletionPolicy Orphan).
	ReasonOrphaned = "Orphaned"
	// ReasonConfigured: a server configuration is valid and usable.
	ReasonConfigured = "Configured"
	// ReasonCredentialEscrowUsed: the server's Secret could not be read and a call for the
	// elevation went out with the copy the operator kept in escrow (an Event, once per elevation).
	ReasonCredentialEscrowUsed = "CredentialEscrowUsed"
)
