#!/usr/bin/env bash
# `make bench-publisher-profile`: where the publisher benchmark's client CPU goes, by instruction
# count (valgrind's callgrind: it counts instructions, so the profile is the same on a loaded
# machine, unlike wall-clock samples). Runs the release `bench_publisher` example under callgrind
# against a private vhost of the local broker and prints the functions with the most inclusive
# and self instructions, plus instructions per confirmed message.
# PROFILE_EVENTS (default 20000) events; PROFILE_KIND (default classic) queue type.
# The figures of record are in bench/results/publisher.md ("Where the time goes").
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/swappo/cargo-target}"

if ! command -v valgrind >/dev/null || ! command -v callgrind_annotate >/dev/null; then
  log "installing Debian's valgrind (callgrind)"
  sudo_="" ; [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi

log "building the publisher benchmark (release)"
cargo build --release --quiet -p swappo-messaging --example bench_publisher
BIN="$CARGO_TARGET_DIR/release/examples/bench_publisher"

N="${PROFILE_EVENTS:-20000}"
KIND="${PROFILE_KIND:-classic}"
VHOST="swappo-profile-publisher"
OUT="$SWAPPO_STATE/bench/callgrind.publisher.out"
mkdir -p "$(dirname "$OUT")"

# A private vhost on the shared broker, removed afterwards.
mgmt() { curl -fsS -u "$SWAPPO_TEST_USER:$SWAPPO_TEST_PASSWORD" -H 'content-type: application/json' "$@"; }
api="http://127.0.0.1:15672/api"
mgmt -X DELETE "$api/vhosts/$VHOST" >/dev/null 2>&1 || true
mgmt -X PUT "$api/vhosts/$VHOST" >/dev/null
mgmt -X PUT "$api/permissions/$VHOST/$SWAPPO_TEST_USER" -d '{"configure":".*","write":".*","read":".*"}' >/dev/null
trap 'mgmt -X DELETE "$api/vhosts/$VHOST" >/dev/null 2>&1 || true' EXIT
url="amqp://$SWAPPO_TEST_USER:$SWAPPO_TEST_PASSWORD@127.0.0.1:5672/$VHOST"

log "callgrind: $N events to a $KIND queue (slow: about 50x the native run)"
valgrind --tool=callgrind --callgrind-out-file="$OUT" "$BIN" --url "$url" --queue profile --kind "$KIND" -n "$N" 2>"$OUT.log"
grep -E "msg/s" "$OUT.log" || true
total="$(callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')"
echo "instructions: $total in total, $((total / N)) per message (start-up and connection included)"
echo "--- inclusive (top 40) ---"
callgrind_annotate --inclusive=yes "$OUT" 2>/dev/null | sed -n '/^Ir/,$p' | head -45
echo "--- self (top 30) ---"
callgrind_annotate "$OUT" 2>/dev/null | sed -n '/^Ir/,$p' | head -35
