#!/usr/bin/env bash
# `make bench-latency`: end-to-end latency (offer change accepted over HTTP -> notification
# stored) at fixed rates, with the relay's commit wake-ups and polling only, beside the seed's
# design at the same rates; and the outbox relay's rate with 1 and 2 matchmaking replicas
# against the Publisher's own rate. Release builds. Results: bench/results/latency.md and
# bench/results/relay.md. BENCH_RATES (default 1000,5000), BENCH_SECONDS (default 10) per case,
# BENCH_SEED_RATES (default 200,1000), BENCH_RELAY_EVENTS (default 20000), BENCH_RUNS (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/swappo/cargo-target}"

SEED_DIR="${SEED_BASELINE_DIR:-$(cd .. && pwd)/shared/bench/seed_baseline}"
[[ -f "$SEED_DIR/consumer.py" ]] || die "seed consumer not found in $SEED_DIR (set SEED_BASELINE_DIR)"

VENV="$SWAPPO_CACHE/venv"
if ! "$VENV/bin/python" -c 'import pika, sqlalchemy, psycopg2' 2>/dev/null; then
  log "creating $VENV (pika 1.3.2, sqlalchemy, psycopg2-binary)"
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet pika==1.3.2 sqlalchemy psycopg2-binary
fi

log "building the services and the drivers (release)"
cargo build --release --quiet -p swappo-matchmaking -p swappo-notifications
cargo build --release --quiet -p swappo-matchmaking --example bench_latency
cargo build --release --quiet -p swappo-messaging --example bench_publisher
R="$CARGO_TARGET_DIR/release"

"$VENV/bin/python" bench/latency_bench.py \
  --matchmaking-bin "$R/swappo-matchmaking" --notifications-bin "$R/swappo-notifications" \
  --driver-bin "$R/examples/bench_latency" --publisher-bin "$R/examples/bench_publisher" \
  --seed-consumer "$SEED_DIR/consumer.py" --seed-python "$VENV/bin/python" \
  --rates "${BENCH_RATES:-1000,5000}" --seconds "${BENCH_SECONDS:-10}" \
  --seed-rates "${BENCH_SEED_RATES:-200,1000}" --relay-events "${BENCH_RELAY_EVENTS:-20000}" \
  --runs "${BENCH_RUNS:-3}" --out-latency bench/results/latency.md --out-relay bench/results/relay.md ${BENCH_ARGS:-}
