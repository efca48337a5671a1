#!/usr/bin/env bash
# `make bench-probes`: the seed's broker (exec probes, 1 s timeout) and the operator's broker pod
# side by side on the real node under CPU pressure (CPU limits x a neighbour's busy loops): per
# level the CLI probe's duration and both brokers' restarts, NotReady seconds and failed probes
# over the same window; results in bench/results/broker_probes.md. About 25 minutes with the
# default levels (BENCH_PROBES_LIMITS="none 500m 250m", BENCH_PROBES_HOGS="0 1 2 4").
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/swappo/cargo-target}"
export KUBECONFIG="$SWAPPO_KUBECONFIG" SWAPPO_REQUIRE_NODE=1
load_before=$(cut -d' ' -f1 /proc/loadavg)
out="$(pwd)/bench/results/broker_probes.md"
export BENCH_CONDITIONS="Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), shared (other builds and tests may run: the load average is given per row), load average (1 min) $load_before at the start, on $(date -u '+%Y-%m-%d %H:%M UTC'); kubelet $("$SWAPPO_TESTBIN/kubectl" --kubeconfig "$KUBECONFIG" get node swappo-node-0 -o jsonpath='{.status.nodeInfo.kubeletVersion}' 2>/dev/null || echo '?'), cgroup $(stat -fc %T /sys/fs/cgroup | sed 's/cgroup2fs/v2/; s/tmpfs/v1/')."
BENCH_OUT="$out" cargo test -p swappo-e2e --test broker_probes_under_pressure -- --ignored --nocapture sweep_of_cpu_pressure
log "wrote $out"
