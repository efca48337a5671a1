# shellcheck shell=bash disable=SC2034  # sourced: the variables are used by the scripts that source it
# Shared by scripts/cluster-up.sh and scripts/cluster-down.sh: sourced, never run.
# The local control plane's layout: every component runs from $SWAPPO_TESTBIN on loopback,
# with its state under $CLUSTER_DIR:
#   pki/        CA, apiserver serving cert, admin client cert, service-account signing key
#   etcd/       etcd's data (wiped at each fresh start: the cluster is throwaway test state)
#   logs/       one log per component;  pids/  one pid file per component ("pid argv0")
#   kubeconfig  admin identity (client cert in group system:masters)
#   node/       the real node's configs, kubelet root, containerd images, volumes (node-lib.sh)
# shellcheck source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

CLUSTER_DIR="$SWAPPO_STATE/cluster"
PKI="$CLUSTER_DIR/pki"
LOGS="$CLUSTER_DIR/logs"
PIDS="$CLUSTER_DIR/pids"
KUBECONFIG_PATH="$SWAPPO_KUBECONFIG"

# Fixed loopback ports, chosen away from the defaults (2379, 6443, 10257, 10259, 10247) so a
# developer's own cluster or tools on the same machine do not clash with ours.
ETCD_PORT=12379
ETCD_PEER_PORT=12380
APISERVER_PORT=16443
KCM_PORT=16257
SCHEDULER_PORT=16259
KWOK_PORT=16247

# shellcheck source=node-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"

# Start order; cluster-down stops them in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
if node_enabled; then
  # The API server listens on the node bridge's address: pods reach it through the `kubernetes`
  # Service (an endpoint cannot be 127.0.0.1), and the address is not on any uplink.
  APISERVER_ADDRESS="$NODE_IP"
  COMPONENTS+=("${NODE_COMPONENTS[@]}")
else
  APISERVER_ADDRESS=127.0.0.1
fi
APISERVER_URL="https://$APISERVER_ADDRESS:$APISERVER_PORT"

# The fake node kwok manages (scripts/cluster-up.sh creates it).
KWOK_NODE=kwok-node-0

kubectl_() { "$SWAPPO_TESTBIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" --request-timeout=10s "$@"; }

# component_pid NAME: prints the pid of the running component NAME that this cluster started,
# or fails. The pid counts only while its process still runs the recorded binary with an
# argument inside $CLUSTER_DIR: a recycled pid of an unrelated process never matches.
component_pid() {
  local name="$1" pid argv0 cmdline
  [ -f "$PIDS/$name.pid" ] || return 1
  read -r pid argv0 <"$PIDS/$name.pid" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/cmdline" ] || return 1
  cmdline="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [ "$(head -1 <<<"$cmdline")" = "$argv0" ] || return 1
  grep -qF "$CLUSTER_DIR" <<<"$cmdline" || return 1
  echo "$pid"
}

# process_gone PID: the process has exited (no longer in /proc, or a zombie awaiting its reaper).
process_gone() {
  local state
  state="$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 0
  [ -z "$state" ] || [ "$state" = Z ]
}

# stop_component NAME: SIGTERM, then SIGKILL after 20 s; removes the pid file.
stop_component() {
  local name="$1" pid i
  if pid="$(component_pid "$name")"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
      process_gone "$pid" && break
      sleep 0.1
    done
    if ! process_gone "$pid"; then
      log "$name (pid $pid) ignored SIGTERM for 20s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$PIDS/$name.pid"
}

# with_lock: one cluster-up/cluster-down at a time (fd 9 stays open for the script's life).
with_lock() {
  mkdir -p "$CLUSTER_DIR"
  exec 9>"$CLUSTER_DIR/.lock"
  flock -w 300 9 || die "another cluster-up/cluster-down holds $CLUSTER_DIR/.lock for 5 minutes"
}
