#!/usr/bin/env bash
# `make bench-consumer`: the notifications service (release build) against the seed's Python
# consumer, side by side in one run; results in bench/results/consumer.md.
# BENCH_EVENTS (default 20000) events per consumer.
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

"$VENV/bin/python" bench/consumer_bench.py -n "${BENCH_EVENTS:-20000}" \
  --service-bin "$BIN" --seed-consumer "$SEED_DIR/consumer.py" \
  --out bench/results/consumer.md ${BENCH_ARGS:-}
