# shellcheck shell=bash
# Removing the real node: sourced by scripts/cluster-down.sh, never run. Stops the node's daemons
# by recorded pid, then removes what a node leaves behind: pod sandboxes (CNI DEL frees their
# addresses and veths), containerd shims serving this node's socket, mounts under the kubelet's
# root and the runtime state, the kubepods cgroups, kube-proxy's and the fence's nft tables,
# the routes and the bridge; and puts back the sysctls the kubelet rewrote. Idempotent: every
# step looks for its leftovers first.

node_down() {
  mkdir -p "$LOGS"
  stop_component local-path-provisioner
  stop_component kube-proxy
  # kube-proxy --cleanup removes its nft tables (kube-proxy ip/ip6); it touches nothing else.
  if [ -x "$SWAPPO_TESTBIN/kube-proxy" ] && [ -x "$NFT" ] &&
    "$NFT" list tables 2>/dev/null | grep -q 'kube-proxy'; then
    "$SWAPPO_TESTBIN/kube-proxy" --cleanup --v=0 >>"$LOGS/kube-proxy.log" 2>&1 || true
  fi
  stop_component kubelet
  # Pods go while containerd still runs: CNI DEL for each sandbox.
  if component_pid containerd >/dev/null && containerd_answers >/dev/null 2>&1; then
    crictl_ rmp -f -a >/dev/null 2>&1 || log "crictl rmp left pods behind (continuing)"
  fi
  stop_component containerd
  # Shims outlive containerd; only those serving this node's socket.
  local pid left i
  for pid in $(shim_pids); do kill -TERM "$pid" 2>/dev/null || true; done
  for ((i = 0; i < 50; i++)); do
    left="$(shim_pids)"
    [ -z "$left" ] && break
    sleep 0.1
  done
  for pid in $(shim_pids); do kill -KILL "$pid" 2>/dev/null || true; done
  # Container processes whose shim was killed are reparented and die with their pid namespace;
  # mounts go deepest first.
  local m
  while read -r m; do
    [ -n "$m" ] && { umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "cannot unmount $m"; }
  done < <(node_mounts)
  # Containers whose pod could not be removed: their processes are in the kubepods cgroups.
  local cg p
  while read -r cg; do
    [ -n "$cg" ] || continue
    while read -r p; do
      [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true
    done <"$cg/cgroup.procs"
  done < <(node_cgroups | grep '^/sys/fs/cgroup/pids/' || true)
  while read -r cg; do
    [ -n "$cg" ] || continue
    # A killed process leaves its cgroup a moment later.
    for ((i = 0; i < 50; i++)); do rmdir "$cg" 2>/dev/null && break; sleep 0.1; done
    [ ! -d "$cg" ] || log "cannot remove cgroup $cg (processes left?)"
  done < <(node_cgroups)
  rm -rf "$NODE_RUN" /var/lib/kubelet/device-plugins/kubelet.sock
  # What the kubelet makes there whatever its root-dir says; removed only when empty.
  rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet 2>/dev/null || true
  # The kubelet links each container's log into /var/log/containers whatever podLogsDir says:
  # only the links into this node's logs go.
  if [ -d /var/log/containers ]; then
    find /var/log/containers -maxdepth 1 -type l -lname "$NODE_DIR/pod-logs/*" -delete 2>/dev/null || true
  fi
  # Network: the fence, the routes, the bridge (veths went with their sandboxes).
  if [ -x "$NFT" ]; then "$NFT" delete table inet "$FENCE_TABLE" 2>/dev/null || true; fi
  ip route del "$SERVICE_CIDR" dev "$NODE_BRIDGE" 2>/dev/null || true
  ip route del unreachable "$KWOK_POD_CIDR" 2>/dev/null || true
  ip link del "$NODE_BRIDGE" 2>/dev/null || true
  restore_sysctls
}

restore_sysctls() {
  [ -s "$NODE_DIR/sysctls.saved" ] || return 0
  local line
  while read -r line; do
    [ -n "$line" ] && sysctl -qw "$line" 2>/dev/null || true
  done <"$NODE_DIR/sysctls.saved"
  rm -f "$NODE_DIR/sysctls.saved"
}
