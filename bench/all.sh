#!/usr/bin/env bash
# `make bench`: runs every `bench-*` target of the Makefile (publisher, consumer, and any added
# later: autoscaler, operator scale...), one after the other so they never share the two cores,
# then writes one dated table of all results to bench/results/README.md (bench/aggregate.py).
# Each benchmark writes its own bench/results/<name>.md; a failed one is listed as failed and
# the others still run. BENCH_ONLY="bench-consumer bench-publisher" runs a subset;
# BENCH_SKIP_RUN=1 only re-aggregates the result files already there (with the last run's list).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=../scripts/env.sh
source scripts/env.sh
LOGS="$SWAPPO_STATE/bench"
mkdir -p "$LOGS" bench/results
RUNS="$LOGS/runs.tsv"

targets="${BENCH_ONLY:-$(grep -oE '^bench-[a-z0-9-]+:' Makefile | tr -d : | sort -u | tr '\n' ' ')}"
if [ "${BENCH_SKIP_RUN:-0}" != 1 ]; then
  : > "$RUNS"
  for t in $targets; do
    log "make $t (log: $LOGS/$t.log)"
    start=$(date +%s)
    if make --no-print-directory "$t" >"$LOGS/$t.log" 2>&1; then rc=0; else rc=$?; fi
    secs=$(($(date +%s) - start))
    if [ "$rc" = 0 ]; then log "$t done in ${secs}s"; else log "$t FAILED (exit $rc) after ${secs}s; see $LOGS/$t.log"; fi
    printf '%s\t%s\t%s\n' "$t" "$rc" "$secs" >> "$RUNS"
  done
fi

python3 bench/aggregate.py --results bench/results --runs "$RUNS" --out bench/results/README.md
agg=$?
cat bench/results/README.md
# Fail when a benchmark failed, so CI and people notice; the table is written either way.
if awk -F'\t' '$2 != 0 { bad = 1 } END { exit !bad }' "$RUNS"; then
  log "some benchmarks failed: see the table"
  exit 1
fi
exit "$agg"
