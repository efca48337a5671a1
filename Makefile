# Swappo messaging: entry points. `make help` lists every target with its one-line comment.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Cargo's target dir lives outside the repo so a fresh clone (and CI) reuses the warm cache.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/swappo/cargo-target
# Two cores: one test binary at a time keeps memory and the shared broker calm; the test
# threads inside each binary still run in parallel.
CARGO_TEST_FLAGS ?=

.PHONY: help
help: ## List the targets and what each does
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sort | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

.PHONY: build
build: ## Build every crate of the workspace (debug)
	cargo build --workspace --all-targets

.PHONY: fmt
fmt: ## Format the code with rustfmt
	cargo fmt --all

.PHONY: lint
lint: ## rustfmt check and clippy with -D warnings
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

.PHONY: crds
crds: ## Regenerate crds/, the chart's copy and docs/crd-reference.md from the operator's types (tests fail when stale)
	cargo run -q -p swappo-operator --bin crdgen > crds/swappo.io_swappomessagings.yaml
	cp crds/swappo.io_swappomessagings.yaml charts/swappo-operator/crds/swappo.io_swappomessagings.yaml
	SWAPPO_UPDATE_CRD_REFERENCE=1 cargo test -q -p swappo-e2e --test crd_reference

.PHONY: helm-lint
helm-lint: ## helm lint --strict every chart in charts/ (helm from testenv-bins, else from PATH)
	source scripts/env.sh && export PATH="$$SWAPPO_TESTBIN:$$PATH" && \
	  for chart in charts/*/; do helm lint --strict "$$chart" || exit 1; done

.PHONY: testenv-deps
testenv-deps: ## Install (Debian) and start RabbitMQ + management and PostgreSQL on loopback
	bash scripts/testenv-deps.sh

.PHONY: testenv-down
testenv-down: ## Stop the local RabbitMQ and PostgreSQL started by testenv-deps
	bash scripts/testenv-down.sh

.PHONY: testenv-bins
testenv-bins: ## Build the control plane, kubelet, kube-proxy, containerd, crictl, CoreDNS, pause from the Go proxy (cached); install the node's Debian parts
	bash scripts/node-deps.sh
	bash scripts/testenv-bins.sh

.PHONY: cluster-up
cluster-up: testenv-bins ## Start the local cluster: control plane, kwok's fake node and a real node (containerd, kubelet, kube-proxy, CoreDNS; SWAPPO_NODE=0: none)
	bash scripts/cluster-up.sh

.PHONY: cluster-down
cluster-down: ## Stop exactly what cluster-up started; remove the node's pods, mounts, shims, cgroups, bridge and rules
	bash scripts/cluster-down.sh

.PHONY: node-teardown-check
node-teardown-check: cluster-up ## Destructive: a pod on the real node, then cluster-down must leave no process, mount, cgroup, bridge or rule behind; then cluster-up again
	source scripts/env.sh && KUBECONFIG="$$SWAPPO_KUBECONFIG" SWAPPO_REQUIRE_NODE=1 cargo test -p swappo-e2e --test node_teardown -- --ignored
	bash scripts/cluster-up.sh

.PHONY: images
images: ## Build every OCI image from Debian packages and release binaries (no Docker) and import them into the node (images/build.sh)
	bash scripts/node-deps.sh
	bash images/build.sh --import-if-up all

.PHONY: test
# The app images (operator, services) are built (cached by content: seconds when warm, a release
# build of the workspace cold) and imported, and every test that needs them must run
# (SWAPPO_REQUIRE_APP_IMAGES), including demo-check. SWAPPO_APP_IMAGES=0 opts out: no app image
# build, their node tests and demo-check skip, saying so (README, "The real node"). The RabbitMQ
# image (Debian's package, cached by stamp) is always built and imported: the broker's node
# tests run it.
# `make test` puts its own debug build in the app images (SWAPPO_APP_PROFILE=debug, stripped):
# `cargo test --workspace` compiles those binaries anyway, and a release build of the workspace
# would cost CI a second compile (7 min 31 s measured cold on 2 cores). `make images` and `make
# demo` build release images, as users run them.
SWAPPO_APP_IMAGES ?= 1
test: export SWAPPO_APP_PROFILE = debug
test: testenv-deps cluster-up ## Run every test (unit and integration) against the real local parts, then the real-node demo (demo-check), then the node teardown check
	bash images/build.sh --import-if-up rabbitmq
	if [ "$(SWAPPO_APP_IMAGES)" != 0 ]; then bash images/build.sh --import-if-up app; fi
	source scripts/env.sh && KUBECONFIG="$$SWAPPO_KUBECONFIG" SWAPPO_REQUIRE_CLUSTER=1 SWAPPO_REQUIRE_TOOLS=1 \
	  SWAPPO_REQUIRE_NODE=$${SWAPPO_NODE:-1} SWAPPO_REQUIRE_APP_IMAGES=$(SWAPPO_APP_IMAGES) \
	  cargo test --workspace --no-fail-fast $(CARGO_TEST_FLAGS)
	$(MAKE) --no-print-directory demo-check
	# Last, as it takes the cluster down (and brings it up again): cluster-down leaves nothing.
	if [ "$${SWAPPO_NODE:-1}" != 0 ]; then $(MAKE) --no-print-directory node-teardown-check; fi

.PHONY: bench-consumer
bench-consumer: testenv-deps ## Consumer benchmark: notifications service vs the seed consumer -> bench/results/consumer.md
	bash bench/consumer.sh

.PHONY: bench-publisher
bench-publisher: testenv-deps ## Publisher benchmark: swappo-messaging vs the seed publisher and RabbitMQ PerfTest -> bench/results/publisher.md
	bash bench/publisher.sh

.PHONY: profile-publisher
profile-publisher: testenv-deps ## Where the publisher benchmark's CPU goes: callgrind instruction counts by function (not part of make bench)
	bash bench/profile_publisher.sh

.PHONY: bench-latency
bench-latency: testenv-deps ## End-to-end latency at 1,000/5,000 events/s (LISTEN/NOTIFY vs polling, vs the seed) and the outbox relay rate -> bench/results/latency.md, relay.md
	bash bench/latency.sh

.PHONY: bench-autoscaler
bench-autoscaler: testenv-deps cluster-up ## Autoscaler benchmark: seconds from a backlog to the scale patch, p50/p95 -> bench/results/autoscaler.md
	bash bench/autoscaler.sh

.PHONY: bench-operator
bench-operator: testenv-deps cluster-up ## Operator scale benchmark: reconcile time, RSS and API traffic at rest with 1/100/1000 objects -> bench/results/operator.md
	bash bench/operator.sh

.PHONY: bench-probes
bench-probes: cluster-up ## Broker probes under CPU pressure on the real node: the seed's exec probes vs ours, per CPU limit and hog level -> bench/results/broker_probes.md
	bash images/build.sh --import-if-up rabbitmq
	bash bench/probes.sh

.PHONY: demo
demo: ## The user story on the real node: CRDs, helm install operator and services, a SwappoMessaging, load, live view, outage drill, account (DEMO_DURATION=60 for unattended)
	bash scripts/demo.sh

.PHONY: demo-check
demo-check: testenv-deps cluster-up ## The real-node demo unattended with its outage drill: lost 0, nothing left installed (tests/tests/demo_smoke.rs; about 2 min warm on a quiet 2-core machine, 10 on a loaded one; skipped with SWAPPO_APP_IMAGES=0)
	@if [ "$(SWAPPO_APP_IMAGES)" = 0 ]; then echo "demo-check skipped: SWAPPO_APP_IMAGES=0 (it runs the app images on the node)"; exit 0; fi
	bash images/build.sh --import rabbitmq app
	cargo build -p swappo-demo --bin swappo-demo
	source scripts/env.sh && KUBECONFIG="$$SWAPPO_KUBECONFIG" cargo test -p swappo-e2e --test demo_smoke -- --ignored --nocapture

.PHONY: bench
bench: ## Run every benchmark target (bench-*) and write one dated table to bench/results/README.md
	bash bench/all.sh
