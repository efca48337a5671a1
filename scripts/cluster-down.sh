#!/usr/bin/env bash
# Stops the local control plane started by scripts/cluster-up.sh: exactly the processes recorded
# in $SWAPPO_STATE/cluster/pids, each only after checking that its pid still runs the recorded
# binary with this cluster's state dir in its arguments. Keeps the PKI and logs; the next
# cluster-up starts from an empty etcd. Idempotent.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=cluster-lib.sh
source "$here/cluster-lib.sh"

with_lock
# Reverse start order: clients first, etcd last.
for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
  stop_component "${COMPONENTS[i]}"
done
rm -rf "$CLUSTER_DIR/etcd"
log "control plane stopped"
