package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ElevationFinalizer holds a PamElevation until its PAM request is confirmed closed.
const ElevationFinalizer = "pam.mim.dev/close"

// DeletionPolicy says what happens in PAM when a PamElevation is deleted.
// +kubebuilder:validation:Enum=Close;Orphan
type DeletionPolicy string

const (
	// DeletionPolicyClose closes the PAM request before the object is allowed to go.
	DeletionPolicyClose DeletionPolicy = "Close"
	// DeletionPolicyOrphan lets the object go without calling PAM; the elevation stays as PAM has it.
	DeletionPolicyOrphan DeletionPolicy = "Orphan"
)

// ServerKind names the kind of object a ServerReference points at.
// +kubebuilder:validation:Enum=PamServer;ClusterPamServer
type ServerKind string

const (
	// ServerKindPamServer is a PamServer in the same namespace as the referrer.
	ServerKindPamServer ServerKind = "PamServer"
	// ServerKindClusterPamServer is a cluster-scoped ClusterPamServer.
	ServerKindClusterPamServer ServerKind = "ClusterPamServer"
)

// ServerReference points at the PamServer or ClusterPamServer that says how to reach MIM PAM
// and as which privileged account.
type ServerReference struct {
	// Kind of the server: PamServer (in the same namespace) or ClusterPamServer.
	// +kubebuilder:default=PamServer
	// +optional
	Kind ServerKind `json:"kind,omitempty"`

	// Name of the server.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
}

// ElevationRequest is the elevation create mode asks PAM for.
// +kubebuilder:validation:XValidation:rule="has(self.role) != has(self.roleID)",message="set exactly one of role (the role's DisplayName) and roleID"
type ElevationRequest struct {
	// Role is the PAM role to request, by its DisplayName as GET pamroles lists it for the
	// server's account. A name two roles share is refused (RoleAmbiguous): use roleID.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Role string `json:"role,omitempty"`

	// RoleID is the PAM role to request, by its RoleId GUID.
	// +kubebuilder:validation:MaxLength=36
	// +kubebuilder:validation:XValidation:rule="self.matches('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')",message="roleID must be a GUID: 8-4-4-4-12 hexadecimal digits, without braces"
	// +optional
	RoleID string `json:"roleID,omitempty"`

	// Justification is sent to PAM as the request's Justification, for the approvers and the
	// audit; the operator appends the object's identity to it, which is how it finds a request
	// whose create answer was lost.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.trim().size() > 0",message="justification must not be blank"
	Justification string `json:"justification"`

	// TTL is how long the elevation lasts once active, as a Go duration such as "2h"; sent as
	// RequestedTTL in whole seconds. Unset: the role's TTL.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s')",message="ttl must be at least 1s"
	// +optional
	TTL *metav1.Duration `json:"ttl,omitempty"`

	// StartAt is when the elevation should start (RFC 3339), sent as RequestedTime. Unset: now.
	// PAM judges a time in the past.
	// +optional
	StartAt *metav1.Time `json:"startAt,omitempty"`
}

// PamElevationSpec names a MIM PAM request, or asks for one, and says when it must end.
// +kubebuilder:validation:XValidation:rule="!(has(self.expiresAt) && has(self.ttl))",message="set at most one of expiresAt and ttl"
// +kubebuilder:validation:XValidation:rule="has(self.requestID) != has(self.request)",message="set exactly one of requestID (adopt an existing request) and request (create one)"
// +kubebuilder:validation:XValidation:rule="has(self.requestID) == has(oldSelf.requestID) && has(self.request) == has(oldSelf.request)",message="requestID and request cannot be added or removed: create another PamElevation"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.closed) || !oldSelf.closed || (has(self.closed) && self.closed)",message="closed cannot be undone: a closed request stays closed; create another PamElevation"
type PamElevationSpec struct {
	// RequestID adopts an existing PAM request: its GUID (8-4-4-4-12 hexadecimal digits,
	// without braces), as MIM returned it when the elevation was requested. Letters may be upper
	// or lower case; the operator compares and sends it in lower case. Immutable: to track
	// another request, create another PamElevation. Exactly one of requestID and request.
	// +kubebuilder:validation:MaxLength=36
	// +kubebuilder:validation:XValidation:rule="self.matches('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')",message="requestID must be a GUID: 8-4-4-4-12 hexadecimal digits, without braces"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="requestID is immutable"
	// +optional
	RequestID string `json:"requestID,omitempty"`

	// Request asks PAM for an elevation (create mode): exactly one request per object, whatever
	// fails. Immutable. Exactly one of requestID and request.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="request is immutable: create another PamElevation"
	// +optional
	Request *ElevationRequest `json:"request,omitempty"`

	// ServerRef is the PamServer or ClusterPamServer through which the request is closed. Its
	// credentials must be those of the account that created the request: MIM lets only the
	// requester close a request.
	ServerRef ServerReference `json:"serverRef"`

	// ExpiresAt is the time (RFC 3339) at which the operator closes the request. Unset, together
	// with ttl, means the request is closed only when this object is deleted.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// TTL is how long after the object's creation the operator closes the request, as a Go
	// duration such as "30m" or "8h". At most one of expiresAt and ttl may be set.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="ttl must be positive"
	// +optional
	TTL *metav1.Duration `json:"ttl,omitempty"`

	// DeletionPolicy says what deleting this object does in PAM. Close (the default) closes the
	// request first and keeps the object until PAM confirms; Orphan lets the object go without
	// calling PAM. Setting Orphan on an object that is already being deleted releases it.
	// +kubebuilder:default=Close
	// +optional
	DeletionPolicy DeletionPolicy `json:"deletionPolicy,omitempty"`

	// Closed, set to true, closes the request now and keeps this object as the record (reason
	// CloseRequested). It cannot be undone.
	// +optional
	Closed bool `json:"closed,omitempty"`
}

// PamElevationStatus is what the operator last observed of the request and did about it.
type PamElevationStatus struct {
	// RequestID is the PAM request this object tracks, in lower case: spec.requestID in adopt
	// mode, the request the operator created in create mode (written before anything else).
	// +optional
	RequestID string `json:"requestID,omitempty"`

	// RequestCreateTime is when the operator last asked PAM to create the request, written
	// before the call: should its answer be lost, the request is looked for among the
	// account's requests from then on, and adopted, never asked for twice.
	// +optional
	RequestCreateTime *metav1.Time `json:"requestCreateTime,omitempty"`

	// RequestStatus is the last RequestStatus read from PAM: Processing, PendingMFA,
	// PendingApproval, Active, Closing, Closed, Expired or Rejected.
	// +optional
	RequestStatus string `json:"requestStatus,omitempty"`

	// ExpiresAt is the expiry the operator acts on, from spec.expiresAt or creation time + spec.ttl.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// ClosedAt is when the operator's close succeeded, or when PAM was seen to have ended the request.
	// +optional
	ClosedAt *metav1.Time `json:"closedAt,omitempty"`

	// RequestExpirationTime is the ExpirationTime PAM reported for the request at the last sync:
	// when MIM itself ends the elevation. Once it has passed by more than the operator's clock-skew
	// margin, a deletion completes even while PAM is unreachable, because the access has ended.
	// +optional
	RequestExpirationTime *metav1.Time `json:"requestExpirationTime,omitempty"`

	// LastSyncTime is the last successful read of the request from PAM.
	// +optional
	LastSyncTime *metav1.Time `json:"lastSyncTime,omitempty"`

	// ObservedGeneration is the generation of the spec the conditions describe.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready, Closed, Reconciling and Stalled, following the kstatus conventions.
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// PamElevation tracks one MIM PAM request, or asks PAM for one, and closes it when the object
// is deleted, expires or is marked closed.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=pamel,categories=pam
// +kubebuilder:printcolumn:name="Request ID",type=string,JSONPath=`.status.requestID`
// +kubebuilder:printcolumn:name="Server",type=string,JSONPath=`.spec.serverRef.name`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.requestStatus`
// +kubebuilder:printcolumn:name="Expires",type=string,JSONPath=`.status.expiresAt`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Closed",type=string,JSONPath=`.status.conditions[?(@.type=="Closed")].reason`,priority=1
// +kubebuilder:printcolumn:name="Last Sync",type=date,JSONPath=`.status.lastSyncTime`,priority=1
type PamElevation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec names the PAM request and when it must end.
	Spec PamElevationSpec `json:"spec"`
	// Status is what the operator observed and did.
	// +optional
	Status PamElevationStatus `json:"status,omitempty"`
}

// PamElevationList is a list of PamElevation.
// +kubebuilder:object:root=true
type PamElevationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []PamElevation `json:"items"`
}

func init() {
	SchemeBuilder.Register(&PamElevation{}, &PamElevationList{})
}

// Expiry is when the request must be closed: spec.expiresAt, else creation time + spec.ttl.
// The second result is false when neither is set.
func (e *PamElevation) Expiry() (metav1.Time, bool) {
	switch {
	case e.Spec.ExpiresAt != nil:
		return *e.Spec.ExpiresAt, true
	case e.Spec.TTL != nil:
		return metav1.NewTime(e.CreationTimestamp.Add(e.Spec.TTL.Duration)), true
	}
	return metav1.Time{}, false
}

// ServerKey is the namespaced identity of the referenced server, for the field index that maps
// servers back to their elevations: "PamServer/<namespace>/<name>" or "ClusterPamServer/<name>".
func (e *PamElevation) ServerKey() string {
	if e.Spec.ServerRef.Kind == ServerKindClusterPamServer {
		return ServerIndexKey(ServerKindClusterPamServer, "", e.Spec.ServerRef.Name)
	}
	return ServerIndexKey(ServerKindPamServer, e.Namespace, e.Spec.ServerRef.Name)
}

// ServerIndexKey builds the key ServerKey returns, for a server of the given kind.
func ServerIndexKey(kind ServerKind, namespace, name string) string {
	if kind == ServerKindClusterPamServer {
		return string(kind) + "/" + name
	}
	return string(kind) + "/" + namespace + "/" + name
}
