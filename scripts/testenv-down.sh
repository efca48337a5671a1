#!/usr/bin/env bash
# Stops the local RabbitMQ and PostgreSQL that testenv-deps.sh started. Data stays.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if command -v rabbitmqctl >/dev/null 2>&1 && as_root rabbitmqctl -q status >/dev/null 2>&1; then
  log "stopping rabbitmq"; as_root rabbitmqctl -q stop
fi
pg_lsclusters -h 2>/dev/null | while read -r ver cluster _ status _; do
  if [ "$status" = online ]; then log "stopping postgresql $ver/$cluster"; as_root pg_ctlcluster "$ver" "$cluster" stop; fi
done
