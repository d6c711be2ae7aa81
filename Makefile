# QleetOS — the front door. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

ENV_DIR ?= /tmp/qleetos-env
CARGO ?= cargo
ENV_BIN := target/debug/qleetos-env

.PHONY: help
help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

.PHONY: deps
deps: ## Install what the environment and tests need: etcd, bind9, npm (Debian), schemathesis (PyPI)
	@bash scripts/install-deps.sh
	@bash scripts/install-python-deps.sh

.PHONY: kube-bins
kube-bins: ## Build the pinned Kubernetes binaries, cert-manager, external-dns and Traefik controllers and helm, package the chart repository of the tests (the official external-dns chart, e2e/charts), install the pinned nats-server and anvil (Ethereum dev chain) once (cached in ~/.cache/qleetos), download the CloudNativePG and Crossplane CRDs the example services and the Prometheus Operator ServiceMonitor CRD the chart are checked against (Go module cache), build the Cluster API v1.14.2 core manager and kwokctl (clusters on demand) and metrics-server v0.9.0 (autoscaling) and an OCI registry (go-containerregistry v0.22.1, charts from oci://)
	@bash e2e/scripts/kube-bins.sh >/dev/null
	@bash e2e/scripts/nats-server.sh >/dev/null
	@bash e2e/scripts/cert-manager.sh >/dev/null
	@bash e2e/scripts/external-dns.sh >/dev/null
	@bash e2e/scripts/helm.sh >/dev/null
	@bash e2e/scripts/charts.sh >/dev/null
	@bash e2e/scripts/traefik.sh >/dev/null
	@bash e2e/scripts/anvil.sh >/dev/null
	@bash e2e/scripts/operator-crds.sh >/dev/null
	@bash e2e/scripts/cluster-api.sh >/dev/null
	@bash e2e/scripts/metrics-server.sh >/dev/null
	@bash e2e/scripts/oci-registry.sh >/dev/null

.PHONY: build
build: ## Build every binary of the workspace
	$(CARGO) build --workspace --bins

.PHONY: image
image: deps ## Build the container image (release binaries) with buildah, without a daemon; writes target/image/qleetos-VERSION.oci.tar
	$(CARGO) build --release --workspace --bins
	@bash scripts/build-image.sh --profile release

.PHONY: image-check
image-check: deps build ## Assemble the image from the debug binaries and check each starts in it as user 65532 and prints its version
	@bash scripts/build-image.sh --profile debug --tag localhost/qleetos:check --check

.PHONY: generate
generate: ## Regenerate the CRD YAML (crds/yaml and charts/qleetos/crds) and copy the default profiles into the chart
	$(CARGO) run -q -p qleetos-crds --bin crdgen
	@cp examples/support-services/*.yaml charts/qleetos/files/support-services/

.PHONY: check-generated
check-generated: ## Fail when the committed CRD YAML differs from the Rust types, or the chart's profiles from examples/
	$(CARGO) run -q -p qleetos-crds --bin crdgen -- --check
	@diff -r examples/support-services charts/qleetos/files/support-services || { echo "charts/qleetos/files/support-services differs from examples/support-services: make generate" >&2; exit 1; }

.PHONY: lint
lint: ## rustfmt and clippy (warnings are errors)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: unit
unit: ## Unit tests only (no clusters)
	$(CARGO) test --workspace --lib --bins

.PHONY: e2e
e2e: deps kube-bins build ## End-to-end tests against real API servers
	$(CARGO) test -p qleetos-e2e --test e2e

.PHONY: bench
bench: deps kube-bins build ## Benchmarks (queue throughput vs bare client with work queues on one and on three NATS servers, one change's latency under an open-loop stream at 50 % and 80 % of capacity with 10,000 Workloads converged and the restart then, gateway vs direct patch, apply-to-Ready on a new cluster vs an existing one, time to failover vs placing anew, runtimes used and their cost under Spread vs Cheapest+Pack vs by name, a burst of pods scheduled through the node scaler vs onto nodes already there) on release binaries; prints tables, asserts nothing
	$(CARGO) build --release --workspace --bins
	BENCH_NATS_REPLICAS=$${BENCH_NATS_REPLICAS:-1,3} $(CARGO) bench -p qleetos-e2e --bench queue
	$(CARGO) bench -p qleetos-e2e --bench steady
	$(CARGO) bench -p qleetos-e2e --bench gateway
	$(CARGO) bench -p qleetos-e2e --bench provisioning
	$(CARGO) bench -p qleetos-e2e --bench failover
	$(CARGO) bench -p qleetos-e2e --bench placement
	$(CARGO) bench -p qleetos-e2e --bench nodes

.PHONY: test
test: deps kube-bins check-generated lint build image-check ## The whole test suite: generated files, lint, the container image, unit and end-to-end tests
	$(CARGO) test --workspace

.PHONY: env-up
env-up: deps kube-bins build ## Start the local environment (management + 2 workload clusters + operator) in the background
	@target/debug/qleetctl up --dir $(ENV_DIR)

.PHONY: env-down
env-down: ## Stop the local environment
	@if [ -x target/debug/qleetctl ]; then target/debug/qleetctl down --dir $(ENV_DIR); else echo "nothing to stop"; fi

.PHONY: env-status
env-status: ## Show runtimes and workloads of the local environment
	@KUBECONFIG=$$($(ENV_BIN) --dir $(ENV_DIR) kubeconfig) target/debug/qleetctl status
	@$(ENV_BIN) --dir $(ENV_DIR) status

.PHONY: run
run: env-up ## Start the environment and deploy the headline sample first: the Web3 dApp (HTTPS, DNS, an Ethereum RPC node) in region local-2, where no cluster runs (examples/web3-empty-region.yaml), printing each layer as it comes (cluster, support services, RPC node, certificate, DNS, HTTPS, RPC answer, app) with its time; then the other samples (hello; hello in region local-1; web, with ingress, TLS and DNS; web3 on an existing runtime), and where they landed, their URLs, certificates, RPC nodes and health
	@kubectl=$$(bash e2e/scripts/kube-bins.sh)/kubectl; export KUBECONFIG=$$($(ENV_BIN) --dir $(ENV_DIR) kubeconfig); \
	$$kubectl apply -f examples/tenant-policies.yaml && \
	$$kubectl apply --server-side -f examples/support-services/ && \
	$$kubectl apply -f examples/services/ethereum-rpc.yaml && \
	$$kubectl apply -f examples/runtime-profiles/local.yaml && \
	$$kubectl apply -f examples/web3-empty-region.yaml && \
	echo && $(ENV_BIN) --dir $(ENV_DIR) story --namespace web3-edge --workload dapp && echo && \
	$$kubectl apply -f examples/hello-workload.yaml && \
	$$kubectl apply -f examples/web-workload.yaml && \
	$$kubectl apply -f examples/web3-workload.yaml && \
	$$kubectl apply -f examples/on-demand-workload.yaml && \
	$$kubectl wait --for=condition=Ready workload/hello -n demo --timeout=180s && \
	$$kubectl wait --for=condition=Ready workload/hello -n anywhere --timeout=300s && \
	$$kubectl wait --for=condition=Ready workload/shop -n web --timeout=300s && \
	$$kubectl wait --for=condition=Ready workload/dapp -n web3 --timeout=300s && \
	$$kubectl wait --for=condition=Ready workloadservicedependency/rpc -n web3 --timeout=120s && \
	target/debug/qleetctl status && echo && target/debug/qleetctl get dependencies -A && echo && \
	$$kubectl get kubernetesruntimeprofiles,supportservices,tenantpolicies
	@$(ENV_BIN) --dir $(ENV_DIR) status
	@echo; echo "The environment keeps running: export KUBECONFIG=$$($(ENV_BIN) --dir $(ENV_DIR) kubeconfig); take the headline sample away with 'make web3-down', stop everything with 'make env-down'."

.PHONY: web3-down
web3-down: ## Delete the headline sample (examples/web3-empty-region.yaml) and watch it go in reverse: the app, its RPC node, the support services, then the idle cluster; ends with the count of objects, clusters, processes and folders left (all zero)
	@$(ENV_BIN) --dir $(ENV_DIR) teardown --namespace web3-edge
