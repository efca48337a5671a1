# shellcheck shell=bash
# Starting the real node: sourced by scripts/cluster-up.sh (which defines start, wait_up and the
# PKI's leaf function), never run. Layout and addresses: scripts/node-lib.sh.

# The node's binaries and Debian parts; a missing one names the target that provides it.
require_node_parts() {
  local b
  for b in containerd containerd-shim-runc-v2 ctr crictl kubelet kube-proxy coredns pause; do
    [ -x "$SWAPPO_TESTBIN/$b" ] || die "$SWAPPO_TESTBIN/$b is missing: run 'make testenv-bins' first"
  done
  for b in "$RUNC" "$NFT" "$CNI_BIN_DIR/bridge" "$CNI_BIN_DIR/host-local" "$CNI_BIN_DIR/loopback"; do
    [ -x "$b" ] || die "$b is missing: run 'make testenv-bins' (scripts/node-deps.sh installs it)"
  done
}

# prepare_host: the bridge, forwarding on it alone, the routes and the fence. Idempotent; runs
# before the API server, which listens on the bridge's address.
prepare_host() {
  ip link show "$NODE_BRIDGE" >/dev/null 2>&1 || ip link add "$NODE_BRIDGE" type bridge
  ip addr replace "$NODE_IP/16" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  # Only this interface forwards: the global net.ipv4.ip_forward stays as it is (0 here).
  sysctl -qw "net.ipv4.conf.$NODE_BRIDGE.forwarding=1"
  # Pod -> Service -> pod on the same bridge: the reply crosses the bridge at layer 2, and only
  # br_netfilter lets conntrack undo kube-proxy's DNAT on it.
  sysctl -qw net.bridge.bridge-nf-call-iptables=1
  # The kubelet and containerd each watch many files; the default 128 instances run out.
  [ "$(sysctl -n fs.inotify.max_user_instances)" -ge 512 ] || sysctl -qw fs.inotify.max_user_instances=512
  # The host reaches ClusterIPs on the bridge, never along the default route.
  ip route replace "$SERVICE_CIDR" dev "$NODE_BRIDGE" src "$NODE_IP"
  # kube-proxy DNATs Services backed by kwok's fake pods to 10.244.x.y: nothing may route there.
  ip route replace unreachable "$KWOK_POD_CIDR"
  "$NFT" -f - <<EOF
table inet $FENCE_TABLE
delete table inet $FENCE_TABLE
table inet $FENCE_TABLE {
  comment "swappo local node: nothing is forwarded between the pod bridge and any other interface"
  chain forward {
    type filter hook forward priority filter - 10; policy accept;
    iifname "$NODE_BRIDGE" oifname != "$NODE_BRIDGE" counter drop comment "pod traffic leaving the bridge"
    iifname != "$NODE_BRIDGE" oifname "$NODE_BRIDGE" counter drop comment "outside traffic entering the bridge"
  }
}
EOF
}

# node_pki: the kubelet's client and serving certs, the API server's client cert for the
# kubelet, kube-proxy's client cert (static certs: no bootstrap tokens, no CSR approval).
node_pki() {
  local f missing=0
  for f in kubelet-client kubelet-serving apiserver-kubelet-client kube-proxy; do
    [ -s "$PKI/$f.crt" ] && [ -s "$PKI/$f.key" ] || missing=1
  done
  [ "$missing" = 1 ] || return 0
  local client="basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth"
  leaf kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" "$client"
  leaf kubelet-serving "/CN=$NODE_NAME" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:$NODE_IP,DNS:$NODE_NAME"
  leaf apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
  # system:kube-proxy is bound to system:node-proxier by the API server's bootstrap policy.
  leaf kube-proxy "/CN=system:kube-proxy" "$client"
  chmod 600 "$PKI"/*.key
}

# kubeconfig_for NAME CERT: a kubeconfig at $NODE_DIR/NAME.kubeconfig with the client cert CERT.
kubeconfig_for() {
  cat >"$NODE_DIR/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: swappo-local
  cluster: {server: "$APISERVER_URL", certificate-authority: "$PKI/ca.crt"}
users:
- name: $1
  user: {client-certificate: "$PKI/$2.crt", client-key: "$PKI/$2.key"}
contexts:
- name: swappo-local
  context: {cluster: swappo-local, user: $1}
current-context: swappo-local
EOF
}

write_node_configs() {
  mkdir -p "$NODE_DIR/cni/net.d" "$NODE_DIR/containerd/certs.d/_default" "$VOLUMES_DIR"
  kubeconfig_for kubelet kubelet-client
  kubeconfig_for kube-proxy kube-proxy

  # isGateway false: the bridge plugin would otherwise turn on the global ip_forward. The
  # gateway (the bridge's own address) serves only the Service route; no default route.
  cat >"$NODE_DIR/cni/net.d/10-swappo.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "swappo-pods", "plugins": [
  {"type": "bridge", "bridge": "$NODE_BRIDGE", "isGateway": false, "isDefaultGateway": false,
   "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$NODE_RUN/cni-ipam",
            "ranges": [[{"subnet": "$POD_CIDR", "rangeStart": "10.246.0.10",
                         "rangeEnd": "10.246.255.254", "gateway": "$NODE_IP"}]],
            "routes": [{"dst": "$SERVICE_CIDR", "gw": "$NODE_IP"}]}}]}
EOF

  # Nothing is ever pulled: every registry resolves to a closed loopback port, so a missing
  # image fails at once with "connection refused" instead of a lookup leaving the machine.
  cat >"$NODE_DIR/containerd/certs.d/_default/hosts.toml" <<'EOF'
server = "http://127.0.0.1:9"
[host."http://127.0.0.1:9"]
  capabilities = ["pull", "resolve"]
EOF

  # version 4 is containerd 2.4's own format: the servers' addresses are plugin settings (a
  # version 4 file's [grpc] table is ignored). restrict_oom_score_adj: root here lacks
  # CAP_SYS_RESOURCE, and a sandbox's negative oom_score_adj makes runc fail ("can't get final
  # child's PID from pipe"). Every path is this cluster's own, none shared with another
  # containerd on the machine.
  cat >"$NODE_DIR/containerd/config.toml" <<EOF
version = 4
root = "$NODE_DIR/containerd/root"
state = "$NODE_RUN/containerd"
[plugins.'io.containerd.server.v1.grpc']
  address = "$CONTAINERD_SOCK"
[plugins.'io.containerd.server.v1.ttrpc']
  address = "$CONTAINERD_SOCK.ttrpc"
[plugins.'io.containerd.shim.v1.manager']
  socket_dir = "$NODE_RUN/containerd/s"
[plugins.'io.containerd.internal.v1.opt']
  path = "$NODE_DIR/containerd/opt"
[plugins.'io.containerd.nri.v1.nri']
  disable = true
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  discard_unpacked_layers = false
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE_IMAGE"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "$NODE_DIR/containerd/certs.d"
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  tolerate_missing_hugetlb_controller = true
  disable_hugetlb_controller = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$RUNC"
        Root = "$NODE_RUN/containerd/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$CNI_BIN_DIR"]
    conf_dir = "$NODE_DIR/cni/net.d"
    max_conf_num = 1
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
EOF

  # failCgroupV1 false: this machine has cgroup v1 (hybrid), which 1.35+ refuses by default.
  # Eviction at 1 % free disk and image GC never (100 %): imported images cannot be pulled
  # back. resolvConf "": pods with dnsPolicy Default never get the machine's resolver.
  cat >"$NODE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
failSwapOn: false
resolvConf: ""
protectKernelDefaults: false
evictionHard: {memory.available: 100Mi, nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%", imagefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication: {anonymous: {enabled: false}, webhook: {enabled: true, cacheTTL: 2m}, x509: {clientCAFile: $PKI/ca.crt}}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [$DNS_SERVICE_IP]
podLogsDir: $NODE_DIR/pod-logs
volumePluginDir: $KUBELET_ROOT/volume-plugins
registerWithTaints:
- {key: $NODE_TAINT, value: "true", effect: NoSchedule}
EOF

  # nftables mode (there is no IPVS here). oomScoreAdj 0: the default -999 needs
  # CAP_SYS_RESOURCE. conntrack 0s: write no sysctl. NodePorts on the bridge address only.
  cat >"$NODE_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: $NODE_DIR/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
healthzBindAddress: 127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$KUBE_PROXY_METRICS_PORT
clusterCIDR: $POD_CIDR
detectLocalMode: ClusterCIDR
nodePortAddresses: ["$NODE_IP/32"]
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
nftables: {syncPeriod: 30s, minSyncPeriod: 1s}
oomScoreAdj: 0
EOF
}

# record_sysctls: what the kubelet will rewrite, saved once (before its first start).
record_sysctls() {
  [ -s "$NODE_DIR/sysctls.saved" ] && return 0
  local k
  for k in "${KUBELET_SYSCTLS[@]}"; do
    [ -e "/proc/sys/${k//.//}" ] && echo "$k=$(sysctl -n "$k")"
  done >"$NODE_DIR/sysctls.saved"
}

kubelet_healthy() { curl -fsS --max-time 5 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz" | grep -qx ok; }
kube_proxy_healthy() { curl -fsS --max-time 5 "http://127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT/healthz" >/dev/null; }
real_node_ready() {
  [ "$(kubectl_ get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

# start_containerd: the node's containerd with its configuration, waited for until it answers
# (under umask 022: see start_node).
start_containerd() {
  start containerd --config "$NODE_DIR/containerd/config.toml"
  wait_up containerd 60 containerd_answers
}

# start_node: containerd, the images it needs, the kubelet, kube-proxy, the provisioner.
start_node() {
  local port
  for port in $KUBELET_PORT $KUBELET_HEALTHZ_PORT $KUBE_PROXY_HEALTHZ_PORT $KUBE_PROXY_METRICS_PORT; do
    port_free "$port" || die "port $port is taken by another process: $(ss -Hltnp "sport = :$port" | head -1)"
  done
  # Never two containerds on one socket: a live one here was not recorded by this cluster.
  ! containerd_answers >/dev/null 2>&1 || die "a containerd already answers on $CONTAINERD_SOCK (not ours: stop it)"
  rm -rf "$NODE_RUN" && mkdir -p "$NODE_RUN"
  node_pki
  write_node_configs
  # The daemons make the containers' files: with cluster-up's umask 077 an unpacked layer's root
  # directory would be 0700 and no non-root container user could read its own image.
  local saved_umask
  saved_umask="$(umask)"
  umask 022
  start_containerd
  # The images every node needs (pause, CoreDNS, the test bed's Debian image): built once,
  # cached by stamp, imported when containerd lacks them.
  bash "$root/images/build.sh" --import node
  record_sysctls
  start kubelet --config="$NODE_DIR/kubelet.yaml" --kubeconfig="$NODE_DIR/kubelet.kubeconfig" \
    --root-dir="$KUBELET_ROOT" --cert-dir="$KUBELET_ROOT/pki" --hostname-override="$NODE_NAME" \
    --node-ip="$NODE_IP" --node-labels=swappo.io/node=real --v=1
  wait_up kubelet 60 kubelet_healthy
  start kube-proxy --config="$NODE_DIR/kube-proxy.yaml" --v=1
  wait_up kube-proxy 60 kube_proxy_healthy
  start_with local-path-provisioner /bin/bash "$here/local-path-provisioner.sh" "$CLUSTER_DIR"
  umask "$saved_umask"
}

# restart_containerd: the node's containerd stopped (SIGTERM: containerd leaves the containers
# running in their shims) and started again with the same configuration, as a runtime upgrade
# on a node does; the kubelet reconnects by itself. `cluster-up.sh --restart-containerd`, used by
# tests/tests/broker_on_node.rs.
restart_containerd() {
  component_pid containerd >/dev/null || die "the node's containerd is not running (make cluster-up)"
  stop_component containerd
  local saved_umask
  saved_umask="$(umask)"
  umask 022
  start_containerd
  umask "$saved_umask"
  log "containerd restarted"
}

# verify_node: the node is Ready, CoreDNS and the StorageClass are applied and DNS answers.
verify_node() {
  wait_up kubelet "$READY_TIMEOUT" real_node_ready
  # A running node can have lost its images (the kubelet's eviction at < 1 % free disk deletes
  # unused images, and they cannot be pulled back): import again what containerd lacks (checks
  # digests only when all are there, under a second).
  bash "$root/images/build.sh" --import node
  kubectl_ apply -f "$root/hack/testplane/node/coredns.yaml" >/dev/null
  kubectl_ apply -f "$root/hack/testplane/node/storage.yaml" >/dev/null
  wait_up kubelet "$READY_TIMEOUT" kubectl_ -n kube-system rollout status deployment/coredns --timeout=5s
}
