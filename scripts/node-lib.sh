# shellcheck shell=bash disable=SC2034  # sourced: the variables are used by the scripts that source it
# The real node of the local cluster (scripts/cluster-up.sh starts it, cluster-down.sh removes
# it): containerd + Debian's runc, a CNI bridge with no route out of the machine, a kubelet,
# kube-proxy (nftables), CoreDNS and a local-path volume provisioner. Sourced after
# cluster-lib.sh, never run.
#
# Addresses (chosen away from the machine's own 10.255.0.0/16 and 192.0.2.0/24, and from kwok's
# fake pod range 10.244.0.0/16):
#   bridge swappo0 = 10.246.0.1/16: the node IP, the pods' gateway for Services only, and the
#                    API server's address (pods reach it through the `kubernetes` Service)
#   pods           10.246.0.10 .. 10.246.255.254 (host-local IPAM), routes: the bridge subnet
#                  on-link and the Service range via 10.246.0.1; no default route
#   Services       10.96.0.0/16 (kube-dns = 10.96.0.10)
# The fence: only the bridge forwards (net.ipv4.ip_forward stays 0), no masquerade, and the nft
# table inet swappo_fence drops whatever would be forwarded between the bridge and any other
# interface.

NODE_NAME=swappo-node-0
NODE_BRIDGE=swappo0
NODE_IP=10.246.0.1
POD_CIDR=10.246.0.0/16
SERVICE_CIDR=10.96.0.0/16
DNS_SERVICE_IP=10.96.0.10
KWOK_POD_CIDR=10.244.0.0/16
FENCE_TABLE=swappo_fence
# The taint keeps every pod that does not tolerate it on kwok's fake node: the operator's tests
# create pods from images that cannot be pulled here. Pods meant for the real node tolerate it.
NODE_TAINT=swappo.io/real-node

KUBELET_PORT=16250
KUBELET_HEALTHZ_PORT=16248
KUBE_PROXY_HEALTHZ_PORT=16256
KUBE_PROXY_METRICS_PORT=16249

NODE_DIR="$CLUSTER_DIR/node"
# Runtime state of containerd, its shims and runc. Short on purpose: unix socket paths are
# limited to 108 bytes. Wiped at each fresh start.
NODE_RUN=/run/swappo
CONTAINERD_SOCK="$NODE_RUN/containerd/containerd.sock"
KUBELET_ROOT="$NODE_DIR/kubelet"
# Where the local-path provisioner makes one directory per claim.
VOLUMES_DIR="$NODE_DIR/volumes"
STORAGE_CLASS=swappo-local-path

# The sandbox image containerd runs for every pod, pinned (never garbage-collected). Built from
# Kubernetes' pause.c by scripts/testenv-bins.sh and imported by images/build.sh.
PAUSE_IMAGE=registry.k8s.io/pause:3.10.2

NODE_COMPONENTS=(containerd kubelet kube-proxy local-path-provisioner)

# Sysctls the kubelet rewrites (it sets them for its own OOM/panic policy); cluster-down puts
# back what cluster-up recorded before the kubelet first ran.
KUBELET_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

# Debian's binaries the node uses, installed by scripts/node-deps.sh.
RUNC=/usr/sbin/runc
CNI_BIN_DIR=/usr/lib/cni
NFT=/usr/sbin/nft

# The node is on unless SWAPPO_NODE=0 (a machine where it cannot run: no root, no cgroups).
node_enabled() { [ "${SWAPPO_NODE:-1}" != 0 ]; }

crictl_() { "$SWAPPO_TESTBIN/crictl" --runtime-endpoint "unix://$CONTAINERD_SOCK" --timeout 10s "$@"; }
ctr_() { "$SWAPPO_TESTBIN/ctr" -a "$CONTAINERD_SOCK" -n k8s.io "$@"; }
containerd_answers() { [ -S "$CONTAINERD_SOCK" ] && ctr_ version; }

# shim_pids: containerd shims serving this node's containerd socket (they outlive containerd).
shim_pids() {
  local p
  for p in /proc/[0-9]*; do
    { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -q -- "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" &&
      echo "${p#/proc/}"
  done
  return 0
}

# node_mounts: this node's mount points, deepest first.
node_mounts() {
  awk -v a="$KUBELET_ROOT" -v b="$NODE_RUN/" -v c="$CLUSTER_DIR/node/containerd/" \
    'index($5, a) == 1 || index($5, b) == 1 || index($5, c) == 1 { print $5 }' /proc/self/mountinfo |
    sort -r
}

# node_cgroups: the cgroups the kubelet (kubepods) made, in every v1 hierarchy, deepest first.
node_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [ -d "$d" ] && find "$d" -depth -type d
  done
  return 0
}

# fence_up: the bridge exists with the node IP and forwards, and the fence table is in place.
fence_up() {
  ip -br addr show dev "$NODE_BRIDGE" 2>/dev/null | grep -qF "$NODE_IP/16" &&
    "$NFT" list table inet "$FENCE_TABLE" >/dev/null 2>&1
}
