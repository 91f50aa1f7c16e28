// Package helmtest tests the Helm chart in charts/pam-operator with Helm's own Go SDK: lint,
// rendering, the values schema, and an install, upgrade and uninstall on the local control
// plane (kube-apiserver and etcd from ./bin, run by envtest).
//
// It is a module of its own so that Helm's dependency tree stays out of the operator's go.mod;
// `make test-chart` runs it.
package helmtest
