#!/usr/bin/env bash
# `make bench-consumer`: the notifications service (release build) against the seed's Python
# consumer, side by side in one run; results in bench/results/consumer.md.
# BENCH_EVENTS (default 50000) events per service run (start-up is reported apart, the rate is
# the steady one); BENCH_SEED_EVENTS (default 10000) for the seed; BENCH_CURVE (default
# 200:200:20,500:500:20,100:100:5) more classic runs at PREFETCH:BATCH_SIZE:BATCH_LINGER_MS.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/swappo/cargo-target}"

SEED_DIR="${SEED_BASELINE_DIR:-$(cd .. && pwd)/shared/bench/seed_baseline}"
[[ -f "$SEED_DIR/consumer.py" ]] || die "seed consumer not found in $SEED_DIR (set SEED_BASELINE_DIR)"

# The seed's Python dependencies, in a venv outside the repo, created once.
VENV="$SWAPPO_CACHE/venv"
if ! "$VENV/bin/python" -c 'import pika, sqlalchemy, psycopg2' 2>/dev/null; then
  log "creating $VENV (pika 1.3.2, sqlalchemy, psycopg2-binary)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet pika==1.3.2 sqlalchemy psycopg2-binary
fi

log "building swappo-notifications (release)"
cargo build --release --quiet -p swappo-notifications
BIN="$CARGO_TARGET_DIR/release/swappo-notifications"

"$VENV/bin/python" bench/consumer_bench.py -n "${BENCH_EVENTS:-50000}" --seed-n "${BENCH_SEED_EVENTS:-10000}" \
  --curve "${BENCH_CURVE-200:200:20,500:500:20,100:100:5}" \
  --service-bin "$BIN" --seed-consumer "$SEED_DIR/consumer.py" \
  --out bench/results/consumer.md ${BENCH_ARGS:-}
