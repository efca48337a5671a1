#!/usr/bin/env bash
# `make bench-operator`: the operator at scale on the local control plane: reconcile time,
# resident memory, AMQP connections and API traffic at rest with 1, 100 and 1000
# SwappoMessaging objects (BENCH_SCALES="1 100 1000", rest window BENCH_REST=130 s), in two
# cases (BENCH_CASES="queues consumers": the second adds a consumer Deployment and a backlog per
# object, and the scale reaction while all poll); results in bench/results/operator.md.
# The operator measured is the release build; the driver is operator/tests/bench_operator.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/swappo/cargo-target}"
cargo build --release -p swappo-operator --bin swappo-operator
export SWAPPO_OPERATOR_BIN="$CARGO_TARGET_DIR/release/swappo-operator"
load_before=$(cut -d' ' -f1 /proc/loadavg)
out="$(pwd)/bench/results/operator.md"
export BENCH_CONDITIONS="Run by \`make bench-operator\` on $(date -u '+%Y-%m-%d %H:%M UTC'). Machine: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, load average (1 min) $load_before at the start; the control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok; Kubernetes $("$SWAPPO_TESTBIN/kube-apiserver" --version 2>/dev/null | awk '{print $2}')), RabbitMQ and the operator share its cores. $(rustc --version)."
KUBECONFIG="$SWAPPO_KUBECONFIG" SWAPPO_REQUIRE_CLUSTER=1 BENCH_OUT="$out" cargo test -p swappo-operator --test bench_operator -- --ignored --nocapture
log "wrote $out"
