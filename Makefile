# pam-operator. Every tool is built from a pinned Go module (under hack/tools) into ./bin on
# first use; nothing is downloaded from anywhere but the Go module proxy.

IMG ?= pam-operator:latest
GO ?= go
LOCALBIN ?= $(CURDIR)/bin
TOOLS_DIR := $(CURDIR)/hack/tools
TOOLS_MOD := $(TOOLS_DIR)/go.mod

# The Kubernetes release the local control plane is built from (see hack/tools/go.mod).
KUBE_VERSION := v1.37.2
KUBE_LDFLAGS := -X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 \
	-X k8s.io/client-go/pkg/version.gitVersion=$(KUBE_VERSION) \
	-X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=37

CONTROLLER_GEN := $(LOCALBIN)/controller-gen
KUSTOMIZE := $(LOCALBIN)/kustomize
KUBE_APISERVER := $(LOCALBIN)/kube-apiserver
ETCD := $(LOCALBIN)/etcd
KUBECTL := $(LOCALBIN)/kubectl
# promtool has a module of its own: Prometheus needs newer otel, grpc and client_golang.
PROMTOOL := $(LOCALBIN)/promtool
PROMTOOL_MOD := $(TOOLS_DIR)/promtool/go.mod
CONTROL_PLANE := $(KUBE_APISERVER) $(ETCD) $(KUBECTL)

# envtest finds kube-apiserver, etcd and kubectl here instead of downloading them.
export KUBEBUILDER_ASSETS := $(LOCALBIN)

.DEFAULT_GOAL := help

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_-]+:.*?##/ { printf "  %-18s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code for the API types.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs and RBAC from the markers in the code.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths=./api/... paths=./controllers/... paths=./internal/credentials/... paths=./ \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	@$(MAKE) --no-print-directory chart-crds

CHART_DIR := charts/pam-operator

.PHONY: chart-crds
chart-crds: ## Copy the generated CRDs, RBAC rules and alert rules into the Helm chart (run by 'make manifests').
	@rm -rf $(CHART_DIR)/files/crds $(CHART_DIR)/files/rbac
	@mkdir -p $(CHART_DIR)/files/crds $(CHART_DIR)/files/rbac
	cp config/crd/bases/*.yaml $(CHART_DIR)/files/crds/
	cp config/rbac/role.yaml $(CHART_DIR)/files/rbac/role.yaml
	cp config/prometheus/rules.yaml $(CHART_DIR)/files/prometheus-rules.yaml

.PHONY: fmt
fmt: ## Format the code.
	$(GO) fmt ./...

.PHONY: vet
vet: ## Run go vet.
	$(GO) vet ./...

.PHONY: verify-fmt
verify-fmt: ## Fail when a Go file is not gofmt-formatted.
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './bin/*')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

.PHONY: verify-generated
verify-generated: $(CONTROLLER_GEN) ## Fail when 'make generate manifests' changes anything.
	@tmp=$$(mktemp -d); cp -R api config charts $$tmp/; \
	$(MAKE) --no-print-directory generate manifests >/dev/null; \
	if ! diff -r $$tmp/api api || ! diff -r $$tmp/config config || ! diff -r $$tmp/charts charts; then \
		rm -rf $$tmp; echo "Generated files were stale: run 'make generate manifests' and commit the result."; exit 1; \
	fi; rm -rf $$tmp; echo "Generated code and manifests are current."

.PHONY: kdc
kdc: ## Install MIT Kerberos from Debian (krb5-kdc, krb5-admin-server) when missing: the Kerberos tests run a real KDC.
	@if [ ! -x /usr/sbin/krb5kdc ]; then \
		echo ">> Installing krb5-kdc and krb5-admin-server from Debian: the Kerberos tests start a throwaway MIT KDC (krb5kdc, kdb5_util, kadmin.local)"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends krb5-kdc krb5-admin-server >/dev/null || \
		{ apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends krb5-kdc krb5-admin-server >/dev/null; }; \
	fi

.PHONY: apache
apache: ## Install Apache httpd with mod_auth_gssapi and gss-ntlmssp from Debian when missing: the Windows authentication tests run against them.
	@if [ ! -x /usr/sbin/apache2 ] || [ ! -f /usr/lib/apache2/modules/mod_auth_gssapi.so ] || [ ! -f /etc/gss/mech.d/mech.ntlmssp.conf ]; then \
		echo ">> Installing apache2, libapache2-mod-auth-gssapi and gss-ntlmssp from Debian: Kerberos and NTLM are tested against Apache's acceptors (MIT GSS-API, gss-ntlmssp)"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends apache2 libapache2-mod-auth-gssapi gss-ntlmssp >/dev/null || \
		{ apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends apache2 libapache2-mod-auth-gssapi gss-ntlmssp >/dev/null; }; \
	fi

.PHONY: test
test: kdc apache verify-generated verify-fmt vet test-alerts test-chart $(CONTROL_PLANE) $(KUSTOMIZE) ## Check generated files, vet, and run every test on the local control plane.
	$(GO) test ./... -count=1 -timeout 30m

.PHONY: test-alerts
test-alerts: $(PROMTOOL) ## Run the alert rules' unit tests (config/prometheus/rules_test.yaml) with promtool.
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(GO) run ./hack/promrules config/prometheus/rules.yaml > "$$tmp/rules.yaml" && \
	cp config/prometheus/rules_test.yaml "$$tmp/" && \
	$(PROMTOOL) test rules "$$tmp/rules_test.yaml"

.PHONY: test-chart
test-chart: $(CONTROL_PLANE) ## Lint, render and install the Helm chart on the local control plane with Helm's Go SDK (hack/helmtest, a module of its own).
	cd hack/helmtest && $(GO) vet ./... && $(GO) test ./... -count=1 -timeout 15m

.PHONY: bench
bench: manifests $(CONTROL_PLANE) $(KUSTOMIZE) ## Run the performance benchmarks, print the table and write it to bin/bench/ (ARGS="--bench-mass 1000 ...").
	$(GO) run ./hack/reliability --bench $(ARGS)

.PHONY: reliability
reliability: manifests $(CONTROL_PLANE) ## Run the long fault, outage, crash and failover scenarios and print the table (ARGS="--elevations 500 ...").
	$(GO) run ./hack/reliability $(ARGS)

.PHONY: control-plane
control-plane: $(CONTROL_PLANE) ## Build kube-apiserver, etcd and kubectl into ./bin.

##@ Build and run

.PHONY: build
build: generate ## Build the manager into bin/manager.
	$(GO) build -trimpath -o $(LOCALBIN)/manager .

.PHONY: run
run: manifests build $(CONTROL_PLANE) ## Run the manager against $$KUBECONFIG, or against the local control plane when it is unset.
	@if [ -n "$$KUBECONFIG" ]; then $(GO) run . $(ARGS); else $(GO) run ./hack/local run $(ARGS); fi

.PHONY: local-env
local-env: manifests $(CONTROL_PLANE) ## Start the local control plane and the PAM emulator in the foreground.
	$(GO) run ./hack/local env

.PHONY: demo
DEMO_AUTH ?= basic
demo: manifests build $(CONTROL_PLANE) ## Walk through apply, delete and expiry on the local control plane (DEMO_AUTH=ntlm for NTLM).
	DEMO_AUTH=$(DEMO_AUTH) $(GO) run ./hack/local demo

.PHONY: docker-build
docker-build: ## Build the image IMG.
	docker build -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push the image IMG.
	docker push $(IMG)

.PHONY: build-installer
build-installer: manifests $(KUSTOMIZE) ## Write dist/install.yaml with the image IMG.
	@mkdir -p dist
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default > dist/install.yaml
	@echo "Wrote dist/install.yaml"

.PHONY: deploy
deploy: build-installer $(KUBECTL) ## Install the operator with the image IMG into the cluster of $$KUBECONFIG.
	$(KUBECTL) apply --server-side -f dist/install.yaml

.PHONY: undeploy
undeploy: $(KUBECTL) ## Remove the operator (delete PamElevations first: their finalizers need it).
	$(KUBECTL) delete --ignore-not-found -f dist/install.yaml

##@ Tools (built from hack/tools/go.mod)

$(CONTROLLER_GEN): $(TOOLS_MOD)
	@echo ">> Building controller-gen from the pinned module (first use only)"
	@mkdir -p $(LOCALBIN)
	cd $(TOOLS_DIR) && $(GO) build -trimpath -o $@ sigs.k8s.io/controller-tools/cmd/controller-gen

$(KUSTOMIZE): $(TOOLS_MOD)
	@echo ">> Building kustomize from the pinned module (first use only)"
	@mkdir -p $(LOCALBIN)
	cd $(TOOLS_DIR) && $(GO) build -trimpath -o $@ sigs.k8s.io/kustomize/kustomize/v5

$(KUBE_APISERVER): $(TOOLS_MOD)
	@echo ">> Building kube-apiserver $(KUBE_VERSION) from k8s.io/kubernetes: about 8 minutes on 2 cores the first time, cached afterwards"
	@mkdir -p $(LOCALBIN)
	cd $(TOOLS_DIR) && $(GO) build -trimpath -ldflags '$(KUBE_LDFLAGS)' -o $@ k8s.io/kubernetes/cmd/kube-apiserver

$(KUBECTL): $(TOOLS_MOD)
	@echo ">> Building kubectl $(KUBE_VERSION) from k8s.io/kubernetes (a few minutes the first time)"
	@mkdir -p $(LOCALBIN)
	cd $(TOOLS_DIR) && $(GO) build -trimpath -ldflags '$(KUBE_LDFLAGS)' -o $@ k8s.io/kubernetes/cmd/kubectl

$(ETCD): $(TOOLS_MOD)
	@echo ">> Building etcd from go.etcd.io/etcd/server/v3 (a minute or two the first time)"
	@mkdir -p $(LOCALBIN)
	cd $(TOOLS_DIR) && $(GO) build -trimpath -o $@ go.etcd.io/etcd/server/v3

$(PROMTOOL): $(PROMTOOL_MOD)
	@echo ">> Building promtool from github.com/prometheus/prometheus (hack/tools/promtool/go.mod): about 10 minutes on 2 cores the first time, cached afterwards"
	@mkdir -p $(LOCALBIN)
	cd $(TOOLS_DIR)/promtool && $(GO) build -trimpath -o $@ github.com/prometheus/prometheus/cmd/promtool
