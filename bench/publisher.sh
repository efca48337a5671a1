#!/usr/bin/env bash
# `make bench-publisher`: confirmed persistent events/s of swappo-messaging's Publisher (release
# build) against the seed's pika publisher (with and without confirms) and RabbitMQ PerfTest, side
# by side in one run, same queue type and message size; results in bench/results/publisher.md.
# BENCH_EVENTS (default 50000) events per Rust/PerfTest run; BENCH_WINDOW (default 256) messages
# in flight; BENCH_RUNS (default 3) runs per tool, the median is reported.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/swappo/cargo-target}"

SEED_DIR="${SEED_BASELINE_DIR:-$(cd .. && pwd)/shared/bench/seed_baseline}"
[[ -f "$SEED_DIR/publisher.py" ]] || die "seed publisher not found in $SEED_DIR (set SEED_BASELINE_DIR)"

# The seed's Python dependency, in the shared venv outside the repo.
VENV="$SWAPPO_CACHE/venv"
if ! "$VENV/bin/python" -c 'import pika' 2>/dev/null; then
  log "installing pika 1.3.2 into $VENV"
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet pika==1.3.2
fi

# RabbitMQ PerfTest from Maven Central (the jar and its dependencies), cached by version.
PERFTEST_VERSION="${PERFTEST_VERSION:-2.22.1}"
PERFTEST_DIR="$SWAPPO_CACHE/perf-test/$PERFTEST_VERSION"
if ! ls "$PERFTEST_DIR"/lib/perf-test-*.jar >/dev/null 2>&1; then
  log "fetching com.rabbitmq:perf-test:$PERFTEST_VERSION with its dependencies into $PERFTEST_DIR"
  mkdir -p "$PERFTEST_DIR"
  cat > "$PERFTEST_DIR/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.swappo.bench</groupId><artifactId>perf-test-fetch</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>com.rabbitmq</groupId><artifactId>perf-test</artifactId><version>$PERFTEST_VERSION</version></dependency>
  </dependencies>
</project>
POM
  mvn -q -B -f "$PERFTEST_DIR/pom.xml" dependency:copy-dependencies -DoutputDirectory="$PERFTEST_DIR/lib" \
    -DincludeScope=runtime
fi

log "building the publisher benchmark (release)"
cargo build --release --quiet -p swappo-messaging --example bench_publisher
BIN="$CARGO_TARGET_DIR/release/examples/bench_publisher"

python3 bench/publisher_bench.py \
  --rust-bin "$BIN" --seed-publisher "$SEED_DIR/publisher.py" --seed-python "$VENV/bin/python" \
  --perftest-classpath "$PERFTEST_DIR/lib/*" --perftest-version "$PERFTEST_VERSION" \
  -n "${BENCH_EVENTS:-50000}" --window "${BENCH_WINDOW:-256}" --runs "${BENCH_RUNS:-3}" \
  --out bench/results/publisher.md ${BENCH_ARGS:-}
