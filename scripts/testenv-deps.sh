#!/usr/bin/env bash
# Installs (Debian packages) and starts RabbitMQ with the management plugin and PostgreSQL
# on loopback when they are not already running, creates the test user, vhost permissions
# and database, and waits until both answer. Idempotent: a second run only checks.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_packages() {
  local missing=()
  command -v rabbitmq-server >/dev/null 2>&1 || missing+=(rabbitmq-server)
  command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  # Tools the tests call: compose validates docker-compose.yml (tests/tests/images_and_compose.rs),
  # python3 runs bench/aggregate.py (tests/tests/bench_aggregate.rs).
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]} (Debian packages)"
    as_root apt-get update -qq
    # policy-rc.d may forbid starting services at install time; we start them below.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

rabbitmq_answers() { curl -fsS -u "$SWAPPO_TEST_USER:$SWAPPO_TEST_PASSWORD" http://127.0.0.1:15672/api/overview; }

RABBITMQ_CONF=/etc/rabbitmq/conf.d/90-swappo-testenv.conf
rabbitmq_conf() {
  cat <<CONF
# Written by swappo scripts/testenv-deps.sh: the local test broker.
listeners.tcp.default = 127.0.0.1:5672
management.tcp.ip = 127.0.0.1
management.tcp.port = 15672
prometheus.tcp.ip = 127.0.0.1
prometheus.tcp.port = 15692
# Queue counts in the management API refresh every second (default 5 s): tests and the
# autoscaler read depth from there and should not wait 5 s for it.
collect_statistics_interval = 1000
CONF
}
rabbitmq_conf_current() { [ "$(cat "$RABBITMQ_CONF" 2>/dev/null)" = "$(rabbitmq_conf)" ]; }

start_rabbitmq() {
  # Loopback only; management (15672) and prometheus (15692) plugins on.
  if ! rabbitmq_conf_current; then
    as_root mkdir -p "$(dirname "$RABBITMQ_CONF")"
    rabbitmq_conf | as_root tee "$RABBITMQ_CONF" >/dev/null
    if as_root rabbitmqctl -q status >/dev/null 2>&1; then
      log "rabbitmq configuration changed: restarting the broker"
      as_root rabbitmqctl -q stop >/dev/null
    fi
  fi
  as_root rabbitmq-plugins enable --offline rabbitmq_management rabbitmq_prometheus >/dev/null
  if ! as_root rabbitmqctl -q status >/dev/null 2>&1; then
    log "starting rabbitmq-server"
    as_root rabbitmq-server -detached >/dev/null 2>&1 || true
  fi
  wait_for "rabbitmq (rabbitmqctl await_startup)" 120 as_root rabbitmqctl -q await_startup
  if ! as_root rabbitmqctl -q list_users | grep -q "^${SWAPPO_TEST_USER}\b"; then
    log "creating rabbitmq user ${SWAPPO_TEST_USER}"
    as_root rabbitmqctl -q add_user "$SWAPPO_TEST_USER" "$SWAPPO_TEST_PASSWORD" >/dev/null
  fi
  # administrator: the tests create and delete their own vhosts through the management API.
  as_root rabbitmqctl -q set_user_tags "$SWAPPO_TEST_USER" administrator >/dev/null
  as_root rabbitmqctl -q set_permissions -p / "$SWAPPO_TEST_USER" '.*' '.*' '.*' >/dev/null
  wait_for "rabbitmq management API" 60 rabbitmq_answers
}

postgres_answers() { PGPASSWORD="$SWAPPO_TEST_PASSWORD" psql -h 127.0.0.1 -U "$SWAPPO_TEST_USER" -d swappo_test -Atc 'select 1'; }

start_postgres() {
  local ver cluster
  ver="$(pg_lsclusters -h | awk 'NR==1{print $1}')"
  cluster="$(pg_lsclusters -h | awk 'NR==1{print $2}')"
  if [ -z "$ver" ]; then
    ver="$(ls /usr/lib/postgresql | sort -n | tail -1)"; cluster=main
    as_root pg_createcluster "$ver" "$cluster" >/dev/null
  fi
  if ! pg_lsclusters -h | awk -v v="$ver" -v c="$cluster" '$1==v && $2==c {print $4}' | grep -q online; then
    log "starting postgresql $ver/$cluster"
    as_root pg_ctlcluster "$ver" "$cluster" start
  fi
  wait_for "postgresql" 60 pg_isready -h 127.0.0.1 -q
  local psql_admin=(as_root su postgres -c)
  if ! "${psql_admin[@]}" "psql -Atc \"select 1 from pg_roles where rolname='${SWAPPO_TEST_USER}'\"" | grep -q 1; then
    log "creating postgres role ${SWAPPO_TEST_USER}"
    "${psql_admin[@]}" "psql -qc \"create role ${SWAPPO_TEST_USER} login createdb password '${SWAPPO_TEST_PASSWORD}'\""
  fi
  if ! "${psql_admin[@]}" "psql -Atc \"select 1 from pg_database where datname='swappo_test'\"" | grep -q 1; then
    "${psql_admin[@]}" "psql -qc 'create database swappo_test owner ${SWAPPO_TEST_USER}'"
  fi
  wait_for "postgresql (as ${SWAPPO_TEST_USER})" 60 postgres_answers
}

# Packages first (a few `command -v` checks when all are there), then the fast path: both
# servers already answer with the test credentials (the usual case on a warm machine).
install_packages
if rabbitmq_conf_current && rabbitmq_answers >/dev/null 2>&1 && postgres_answers >/dev/null 2>&1; then
  log "rabbitmq and postgresql already answer"
  exit 0
fi
start_rabbitmq
start_postgres
log "rabbitmq: ${RABBITMQ_MANAGEMENT_URL//:${SWAPPO_TEST_PASSWORD}@/:***@}  postgres: ${DATABASE_URL//:${SWAPPO_TEST_PASSWORD}@/:***@}"
