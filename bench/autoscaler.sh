#!/usr/bin/env bash
# `make bench-autoscaler`: seconds from a backlog appearing to the operator's scale patch,
# p50/p95 over BENCH_RUNS (default 10) runs per depth source (management API, AMQP passive
# declare), on the local control plane and RabbitMQ; results in bench/results/autoscaler.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/swappo/cargo-target}"
load_before=$(cut -d' ' -f1 /proc/loadavg)
out="$(pwd)/bench/results/autoscaler.md"
export BENCH_CONDITIONS="Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load average (1 min) $load_before at the start, on $(date -u '+%Y-%m-%d %H:%M UTC')."
BENCH_OUT="$out" cargo test -p swappo-operator --test bench_autoscaler -- --ignored --nocapture
log "wrote $out"
