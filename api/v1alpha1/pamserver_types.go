package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// SecretReference names a Secret. There is no namespace field on purpose: a PamServer reads
// only from its own namespace and a ClusterPamServer only from the cluster resource namespace,
// so a reference can never reach into someone else's namespace.
type SecretReference struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// BasicAuth sends HTTP basic credentials, for a proxy in front of MIM that terminates Windows
// authentication.
type BasicAuth struct {
	// SecretRef names a Secret with the keys `username` and `password`.
	SecretRef SecretReference `json:"secretRef"`
}

// NTLMAuth authenticates with NTLMv2, as IIS's Windows authentication accepts from a computer
// outside the domain.
type NTLMAuth struct {
	// SecretRef names a Secret with the keys `username` and `password`, and optionally `domain`
	// (the NetBIOS domain name). `username` may also be written `DOMAIN\user` or
	// `user@domain.example`.
	SecretRef SecretReference `json:"secretRef"`
}

// ConfigMapReference names a ConfigMap in the same namespace as the Secret references.
type ConfigMapReference struct {
	// Name of the ConfigMap.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// KerberosAuth authenticates with Kerberos through SPNEGO (`Negotiate`), as IIS prefers.
// +kubebuilder:validation:XValidation:rule="has(self.krb5ConfigMapRef) != has(self.kdcs)",message="set either krb5ConfigMapRef or kdcs (with realm), not both"
// +kubebuilder:validation:XValidation:rule="has(self.krb5ConfigMapRef) || has(self.realm)",message="kdcs need a realm"
type KerberosAuth struct {
	// SecretRef names a Secret with the key `username` (the user principal, `user` or
	// `user@REALM`) and either `password` or `keytab` (a binary keytab holding the
	// principal's keys).
	SecretRef SecretReference `json:"secretRef"`

	// Realm is the Kerberos realm of the user, for Active Directory the DNS domain in upper
	// case, e.g. CORP.EXAMPLE.COM. Required with kdcs.
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][A-Za-z0-9.-]*$`
	// +optional
	Realm string `json:"realm,omitempty"`

	// KDCs are the realm's key distribution centers (domain controllers) as host or host:port,
	// used to build the Kerberos configuration when no krb5ConfigMapRef is given.
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=261
	// +kubebuilder:validation:items:Pattern=`^[A-Za-z0-9.:\[\]-]+$`
	// +listType=atomic
	// +optional
	KDCs []string `json:"kdcs,omitempty"`

	// Krb5ConfigMapRef names a ConfigMap with the key `krb5.conf`, a complete Kerberos
	// configuration, read from the same namespace as the Secret.
	// +optional
	Krb5ConfigMapRef *ConfigMapReference `json:"krb5ConfigMapRef,omitempty"`

	// ServicePrincipalName of the MIM PAM REST API's application pool account. Defaults to
	// HTTP/<host of url>, which must be registered (setspn) on that account.
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^[^/\s]+/[^\s]+$`
	// +optional
	ServicePrincipalName string `json:"servicePrincipalName,omitempty"`
}

// PamServerAuth says how the operator authenticates to MIM PAM. Leave it empty for none, or set
// exactly one method. MIM's own IIS site accepts only ntlm and kerberos; basic is for a proxy
// in front of it that terminates Windows authentication.
// +kubebuilder:validation:MaxProperties=1
type PamServerAuth struct {
	// Basic is HTTP basic authentication.
	// +optional
	Basic *BasicAuth `json:"basic,omitempty"`
	// NTLM is NTLMv2 over one kept-alive connection per handshake, with channel binding over
	// https.
	// +optional
	NTLM *NTLMAuth `json:"ntlm,omitempty"`
	// Kerberos is Kerberos through SPNEGO (`Negotiate`).
	// +optional
	Kerberos *KerberosAuth `json:"kerberos,omitempty"`
}

// PamServerSpec says how to reach MIM PAM and as which privileged account.
// +kubebuilder:validation:XValidation:rule="!has(self.auth) || !has(self.auth.basic) || !isURL(self.url) || url(self.url).getScheme() == 'https'",message="basic auth sends the password with every request: url must be https"
type PamServerSpec struct {
	// URL of the MIM PAM REST API: http(s)://host[:port][/prefix]. Resource paths
	// (/api/pamresources/...) are joined to it, so a prefix behind a proxy is kept. No user
	// information, query or fragment.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHost() != ''",message="url must be an absolute http or https URL"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*@')",message="url must not contain user information; put credentials in a Secret"
	// +kubebuilder:validation:XValidation:rule="!self.contains('?') && !self.contains('#')",message="url must not contain a query or fragment"
	URL string `json:"url"`

	// Version is sent as the query parameter `v` on every call, e.g. "1". Unset means the
	// newest version the server has.
	// +kubebuilder:validation:Pattern=`^[0-9]+(\.[0-9]+)?$`
	// +kubebuilder:validation:MaxLength=16
	// +optional
	Version string `json:"version,omitempty"`

	// CABundle is PEM-encoded CA certificates to trust for https, for example an internal CA.
	// Unset means the system roots.
	// +kubebuilder:validation:MaxLength=1048576
	// +optional
	CABundle string `json:"caBundle,omitempty"`

	// Timeout for one call to PAM, as a Go duration. Defaults to 30s.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="timeout must be positive"
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('2m')",message="timeout must be at most 2m: a call holds one of the server's slots that long"
	// +kubebuilder:default="30s"
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// Auth is how to authenticate: none, or exactly one method.
	// +optional
	Auth *PamServerAuth `json:"auth,omitempty"`

	// RateLimit bounds the calls made to this server, so that thousands of elevations deleted at
	// once reach MIM at a pace it survives. Unset means the defaults of each field.
	// +optional
	RateLimit *RateLimit `json:"rateLimit,omitempty"`

	// RequestPolicy bounds what create-mode elevations may ask PAM for through this server. On
	// a ClusterPamServer, unset means no create mode at all; on a PamServer, every role the
	// account may request, for as long as the role allows.
	// +optional
	RequestPolicy *RequestPolicy `json:"requestPolicy,omitempty"`
}

// RequestPolicy bounds the elevations create mode may request through a server. A request
// outside it is refused (RoleNotAllowed) before anything is sent to PAM.
type RequestPolicy struct {
	// AllowedRoles are the roles that may be requested, each by DisplayName or RoleId (case
	// does not matter). Unset: every role the account may request.
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=256
	// +listType=set
	// +optional
	AllowedRoles []string `json:"allowedRoles,omitempty"`

	// MaxTTL is the longest ttl a request may ask for, as a Go duration such as "4h". Unset: the
	// role's own TTL is the bound, as PAM applies it.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s')",message="maxTTL must be at least 1s"
	// +optional
	MaxTTL *metav1.Duration `json:"maxTTL,omitempty"`
}

// RateLimit bounds the calls made to one server, by all of its elevations together. Each Close
// starts a MIM request and its workflow in the MIM Service, which also serves the portal and
// synchronization: the defaults (10 per second, bursts of 20, 4 at a time) keep a mass
// revocation to a fraction of what one MIM Service node handles, while closing 1,000
// elevations within a few minutes.
type RateLimit struct {
	// QPS is the sustained number of calls per second.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +kubebuilder:default=10
	// +optional
	QPS int32 `json:"qps,omitempty"`
	// Burst is how many calls may go at once above the sustained rate.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +kubebuilder:default=20
	// +optional
	Burst int32 `json:"burst,omitempty"`
	// MaxConcurrentCalls caps the calls in flight at any moment, and so the operator's workers
	// one server can hold: a hung server holds no more, and never every worker (at run time,
	// at most --max-concurrent-reconciles less one).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=32
	// +kubebuilder:default=4
	// +optional
	MaxConcurrentCalls int32 `json:"maxConcurrentCalls,omitempty"`
}

// Defaults of RateLimit, for servers that set none.
const (
	DefaultRateLimitQPS                = 10
	DefaultRateLimitBurst              = 20
	DefaultRateLimitMaxConcurrentCalls = 4
)

// Effective returns the limits with defaults filled in.
func (l *RateLimit) Effective() RateLimit {
	out := RateLimit{QPS: DefaultRateLimitQPS, Burst: DefaultRateLimitBurst, MaxConcurrentCalls: DefaultRateLimitMaxConcurrentCalls}
	if l == nil {
		return out
	}
	if l.QPS > 0 {
		out.QPS = l.QPS
	}
	if l.Burst > 0 {
		out.Burst = l.Burst
	}
	if l.MaxConcurrentCalls > 0 {
		out.MaxConcurrentCalls = l.MaxConcurrentCalls
	}
	return out
}

// PamServerStatus reports whether the configuration can be used.
type PamServerStatus struct {
	// ObservedGeneration is the generation of the spec the conditions describe.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready and Stalled.
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// LoginBackoff records that PAM or the KDC refused the login of the server's account with
	// its current credentials: nothing sends them again until RetryAt, or until the Secret's
	// data changes. Every server that uses the same account and credentials shares it, and it
	// survives a restart, so a crash loop cannot add refused logons towards the account's
	// lockout.
	// +optional
	LoginBackoff *LoginBackoff `json:"loginBackoff,omitempty"`

	// Roles are the PAM roles the server's account may request, as GET pamroles listed them
	// at the last check, in PAM's order, at most 100 of them (RoleCount says how many there
	// were).
	// +kubebuilder:validation:MaxItems=100
	// +listType=atomic
	// +optional
	Roles []ServerRole `json:"roles,omitempty"`

	// RoleCount is how many roles PAM listed, also those Roles has no room for.
	// +optional
	RoleCount int32 `json:"roleCount,omitempty"`
}

// ServerRole is a PAM role the server's account may request.
type ServerRole struct {
	// Name is the role's DisplayName, what spec.request.role names.
	Name string `json:"name"`
	// ID is the role's RoleId GUID, lower case.
	ID string `json:"id"`
	// TTL is the role's longest elevation, and the default of spec.request.ttl.
	// +optional
	TTL *metav1.Duration `json:"ttl,omitempty"`
	// Approval is true when a request waits for an approver (PendingApproval).
	// +optional
	Approval bool `json:"approval,omitempty"`
	// MFA is true when a request waits for the account's multi-factor check (PendingMFA).
	// +optional
	MFA bool `json:"mfa,omitempty"`
	// AvailabilityWindow, when set, is the time of day the role may be requested in, as PAM
	// gave it ("08:00-18:00").
	// +optional
	AvailabilityWindow string `json:"availabilityWindow,omitempty"`
}

// LoginBackoff is a refused login of an account, and when it is tried again.
type LoginBackoff struct {
	// Account is whom the credentials log in as: user, DOMAIN\user or user@REALM.
	Account string `json:"account"`
	// CredentialHash identifies the credentials refused, as a keyed hash that cannot be
	// reversed without the operator's key: other credentials are not held back.
	CredentialHash string `json:"credentialHash"`
	// RefusedAt is when the login was refused.
	RefusedAt metav1.Time `json:"refusedAt"`
	// RetryAt is when one login is tried again with the same credentials.
	RetryAt metav1.Time `json:"retryAt"`
	// Message is why the login was refused.
	// +optional
	Message string `json:"message,omitempty"`
}

// PamServer tells elevations in its namespace how to reach MIM PAM and as whom. Its Secret is
// read from the same namespace.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=pam
// +kubebuilder:printcolumn:name="URL",type=string,JSONPath=`.spec.url`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type PamServer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec says how to reach PAM.
	Spec PamServerSpec `json:"spec"`
	// Status reports whether the configuration can be used.
	// +optional
	Status PamServerStatus `json:"status,omitempty"`
}

// PamServerList is a list of PamServer.
// +kubebuilder:object:root=true
type PamServerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []PamServer `json:"items"`
}

// ClusterPamServerSpec is a PamServerSpec that may limit which namespaces use it.
type ClusterPamServerSpec struct {
	PamServerSpec `json:",inline"`

	// AllowedNamespaces selects, by their labels, the namespaces whose PamElevations may use
	// this server. Unset means no namespace; {} means every namespace. An elevation in another
	// namespace is refused (Stalled, NamespaceNotAllowed) and reads or takes nothing through
	// it; a request an elevation already tracks is still closed when the namespace stops being
	// selected.
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="operator must be In, NotIn, Exists or DoesNotExist"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, (e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0))",message="In and NotIn need values; Exists and DoesNotExist take none"
	// +optional
	AllowedNamespaces *metav1.LabelSelector `json:"allowedNamespaces,omitempty"`
}

// ClusterPamServer is a PamServer for elevations in any namespace, or in those its
// allowedNamespaces select. Its Secret is read from the operator's cluster resource namespace.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,categories=pam
// +kubebuilder:printcolumn:name="URL",type=string,JSONPath=`.spec.url`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ClusterPamServer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec says how to reach PAM, and for which namespaces.
	Spec ClusterPamServerSpec `json:"spec"`
	// Status reports whether the configuration can be used.
	// +optional
	Status PamServerStatus `json:"status,omitempty"`
}

// ClusterPamServerList is a list of ClusterPamServer.
// +kubebuilder:object:root=true
type ClusterPamServerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterPamServer `json:"items"`
}

func init() {
	SchemeBuilder.Register(&PamServer{}, &PamServerList{}, &ClusterPamServer{}, &ClusterPamServerList{})
}

// ServerObject is implemented by PamServer and ClusterPamServer, so one reconciler and one
// connector serve both kinds.
// +kubebuilder:object:generate=false
type ServerObject interface {
	client.Object
	// ServerSpec returns the spec shared by both kinds.
	ServerSpec() *PamServerSpec
	// ServerStatus returns the status shared by both kinds.
	ServerStatus() *PamServerStatus
}

// ServerSpec implements ServerObject.
func (s *PamServer) ServerSpec() *PamServerSpec { return &s.Spec }

// ServerStatus implements ServerObject.
func (s *PamServer) ServerStatus() *PamServerStatus { return &s.Status }

// ServerSpec implements ServerObject.
func (s *ClusterPamServer) ServerSpec() *PamServerSpec { return &s.Spec.PamServerSpec }

// ServerStatus implements ServerObject.
func (s *ClusterPamServer) ServerStatus() *PamServerStatus { return &s.Status }

// SecretName is the name of the Secret the auth method reads, "" when there is none.
func (a *PamServerAuth) SecretName() string {
	switch {
	case a == nil:
		return ""
	case a.Basic != nil:
		return a.Basic.SecretRef.Name
	case a.NTLM != nil:
		return a.NTLM.SecretRef.Name
	case a.Kerberos != nil:
		return a.Kerberos.SecretRef.Name
	}
	return ""
}

// KeyOf is the key of a server as PamElevation.ServerKey names it.
func KeyOf(server ServerObject) string {
	if server.GetNamespace() == "" {
		return ServerIndexKey(ServerKindClusterPamServer, "", server.GetName())
	}
	return ServerIndexKey(ServerKindPamServer, server.GetNamespace(), server.GetName())
}
