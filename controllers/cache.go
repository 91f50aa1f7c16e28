package controllers

import (
	"unique"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
)

// CacheOptions are the manager's cache options: every cached object is stripped of what no
// controller reads, and an elevation's strings that thousands of elevations share are held once.
func CacheOptions() cache.Options {
	return cache.Options{DefaultTransform: StripForCache}
}

// lastAppliedAnnotation is where kubectl apply keeps a full copy of the object.
const lastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"

// StripForCache drops managed fields and kubectl's copy of the last applied object, which
// together are most of an elevation's size, and interns the strings elevations share.
func StripForCache(obj any) (any, error) {
	if accessor, ok := obj.(metav1.Object); ok {
		accessor.SetManagedFields(nil)
		if annotations := accessor.GetAnnotations(); annotations[lastAppliedAnnotation] != "" {
			delete(annotations, lastAppliedAnnotation)
			accessor.SetAnnotations(annotations)
		}
	}
	if el, ok := obj.(*pamv1.PamElevation); ok {
		internElevation(el)
	}
	return obj, nil
}

// internElevation replaces the strings an elevation shares with many others — its kind,
// namespace, server, finalizer, request state and condition texts — by one canonical copy each.
func internElevation(el *pamv1.PamElevation) {
	el.APIVersion, el.Kind = intern(el.APIVersion), intern(el.Kind)
	el.Namespace = intern(el.Namespace)
	for i := range el.Finalizers {
		el.Finalizers[i] = intern(el.Finalizers[i])
	}
	el.Spec.ServerRef.Kind = intern(el.Spec.ServerRef.Kind)
	el.Spec.ServerRef.Name = intern(el.Spec.ServerRef.Name)
	el.Spec.DeletionPolicy = intern(el.Spec.DeletionPolicy)
	el.Status.RequestStatus = intern(el.Status.RequestStatus)
	for i := range el.Status.Conditions {
		c := &el.Status.Conditions[i]
		c.Type, c.Reason, c.Message = intern(c.Type), intern(c.Reason), intern(c.Message)
		c.Status = intern(c.Status)
	}
}

// intern returns the canonical copy of s. The canonical copies are weakly held: one no cached
// object uses any more is collected.
func intern[S ~string](s S) S {
	if s == "" {
		return s
	}
	return unique.Make(s).Value()
}
