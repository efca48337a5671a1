#!/usr/bin/env bash
# Stops the local cluster started by scripts/cluster-up.sh: exactly the processes recorded in
# $SWAPPO_STATE/cluster/pids, each only after checking that its pid still runs the recorded
# binary with this cluster's state dir in its arguments; first the real node, with what it leaves
# behind (scripts/node-down.sh). Keeps the PKI, logs and imported images; the next cluster-up
# starts from an empty etcd. Idempotent.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=cluster-lib.sh
source "$here/cluster-lib.sh"
# shellcheck source=node-down.sh
source "$here/node-down.sh"

with_lock
# The node first (its pods need the API server gone last), whether or not SWAPPO_NODE is set
# now: what an earlier run started is removed either way.
node_down
# Reverse start order: clients first, etcd last.
for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
  stop_component "${COMPONENTS[i]}"
done
rm -rf "$CLUSTER_DIR/etcd"
log "cluster stopped"
