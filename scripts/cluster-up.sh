#!/usr/bin/env bash
# Starts the local Kubernetes control plane on loopback: etcd, kube-apiserver (Node + RBAC
# authorization, client-cert auth, default admission plugins incl. Pod Security and
# ServiceAccount, service-account token signing), kube-controller-manager, kube-scheduler and kwok
# with one fake Ready node; then the real node (scripts/node-up.sh: containerd, kubelet,
# kube-proxy, CoreDNS, local-path provisioner) unless SWAPPO_NODE=0.
# Binaries come from scripts/testenv-bins.sh; state, pids and logs live in $SWAPPO_STATE/cluster
# (see scripts/cluster-lib.sh). Waits for /readyz, the node's Ready condition and the default
# ServiceAccount. Idempotent: when everything already runs, it only verifies.
# `cluster-up.sh --restart-containerd`: only restarts the node's containerd (its containers run on).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=cluster-lib.sh
source "$here/cluster-lib.sh"
# shellcheck source=node-up.sh
source "$here/node-up.sh"
# shellcheck source=node-down.sh
source "$here/node-down.sh"

# The state holds private keys and an admin kubeconfig: owner-only files.
umask 077

# Generous failure guards for a loaded 2-core machine; a warm start takes far less.
READY_TIMEOUT=120

for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok; do
  [ -x "$SWAPPO_TESTBIN/$b" ] || die "$SWAPPO_TESTBIN/$b is missing: run 'make testenv-bins' first"
done
if node_enabled; then
  [ "$(id -u)" = 0 ] || die "the real node needs root (bridge, mounts, cgroups): run as root or with SWAPPO_NODE=0"
  require_node_parts
fi
# The node's daemons find containerd's shim, runc, mount and nsenter here.
export PATH="$SWAPPO_TESTBIN:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

tls_curl() { curl -fsS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$@"; }
apiserver_ready() { tls_curl "$APISERVER_URL/readyz" | grep -qx ok; }
etcd_healthy() { curl -fsS --max-time 5 "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'; }
# kcm and the scheduler serve /healthz with a self-signed cert; /healthz is always allowed.
component_healthy() { curl -fsSk --max-time 5 "https://127.0.0.1:$1/healthz" | grep -qx ok; }
kwok_healthy() { curl -fsS --max-time 5 "http://127.0.0.1:$KWOK_PORT/healthz" | grep -qx ok; }
node_ready() {
  [ "$(kubectl_ get node "$KWOK_NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
default_sa_exists() { kubectl_ -n default get serviceaccount default; }

port_free() { [ -z "$(ss -Hltn "sport = :$1")" ]; }

# leaf NAME SUBJECT EXTENSIONS: a cert signed by the CA.
leaf() {
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -noenc)
  openssl req -new "${ec[@]}" -keyout "$PKI/$1.key" -subj "$2" 2>/dev/null |
    openssl x509 -req -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 3650 \
      -out "$PKI/$1.crt" -extfile <(printf '%b' "$3") 2>/dev/null
}

# ensure_pki: a private CA, the apiserver's serving cert (127.0.0.1, the node bridge's address,
# the `kubernetes` Service), an admin client cert (group system:masters) and the
# service-account signing key pair. Kept across restarts so kubeconfigs stay valid; regenerated
# only when a file is missing or the serving cert lacks the node address (older layouts).
ensure_pki() {
  local f missing=0
  for f in ca.crt ca.key apiserver.crt apiserver.key admin.crt admin.key sa.key sa.pub; do
    [ -s "$PKI/$f" ] || missing=1
  done
  openssl x509 -in "$PKI/apiserver.crt" -noout -ext subjectAltName 2>/dev/null | grep -qF "IP Address:$NODE_IP" ||
    missing=1
  [ "$missing" = 1 ] || return 0
  log "generating PKI in $PKI"
  rm -rf "$PKI" && mkdir -p "$PKI" && chmod 700 "$PKI"
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -noenc)
  openssl req -x509 "${ec[@]}" -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 3650 \
    -subj "/CN=swappo-local-ca" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  # 10.96.0.1 is the in-cluster `kubernetes` Service IP (first of --service-cluster-ip-range).
  leaf apiserver "/CN=kube-apiserver" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,IP:$NODE_IP,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  leaf admin "/O=system:masters/CN=swappo-admin" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth"
  # RSA: RS256 is the signing algorithm every ServiceAccount token consumer accepts.
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  chmod 600 "$PKI"/*.key
}

write_kubeconfig() {
  local b64='base64 -w0'
  cat >"$KUBECONFIG_PATH.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: swappo-local
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $($b64 <"$PKI/ca.crt")
users:
- name: swappo-admin
  user:
    client-certificate-data: $($b64 <"$PKI/admin.crt")
    client-key-data: $($b64 <"$PKI/admin.key")
contexts:
- name: swappo-local
  context:
    cluster: swappo-local
    user: swappo-admin
current-context: swappo-local
EOF
  mv "$KUBECONFIG_PATH.tmp" "$KUBECONFIG_PATH"
}

write_configs() {
  cat >"$CLUSTER_DIR/scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $KUBECONFIG_PATH
  # Tests create many small objects at once; the default 50 qps would queue them.
  qps: 100
  burst: 200
leaderElection:
  leaderElect: false
EOF
}

# start NAME ARGS...: runs $SWAPPO_TESTBIN/NAME in its own session (a Ctrl-C of the caller does
# not reach it), output appended to logs/NAME.log, "pid argv0" recorded in pids/NAME.pid.
start() { local name="$1"; shift; start_with "$name" "$SWAPPO_TESTBIN/$name" "$@"; }

# start_with NAME BINARY ARGS...: start, for a binary outside $SWAPPO_TESTBIN.
start_with() {
  local name="$1" bin="$2"; shift 2
  printf '\n==== %s start %s\n' "$(date -u +%FT%TZ)" "$name" >>"$LOGS/$name.log"
  # No job control in a script, so setsid is not a group leader here and execs in place:
  # $! is the component's own pid.
  # 9>&-: the component must not inherit (and so hold) the cluster-up lock.
  setsid "$bin" "$@" </dev/null >>"$LOGS/$name.log" 2>&1 9>&- &
  echo "$! $bin" >"$PIDS/$name.pid"
}

# wait_up NAME SECONDS CHECK...: like wait_for, but fails at once (with the log's tail) when the
# component exits.
wait_up() {
  local name="$1" secs="$2" i; shift 2
  for ((i = 0; i < secs * 2; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    # By the recorded pid, not component_pid: right after the fork the process may not have
    # exec'd its binary yet (seen on a loaded machine), and that is not an exit.
    if process_gone "$(cut -d' ' -f1 "$PIDS/$name.pid")"; then
      tail -n 30 "$LOGS/$name.log" >&2
      die "$name exited during startup (log: $LOGS/$name.log)"
    fi
    sleep 0.5
  done
  tail -n 30 "$LOGS/$name.log" >&2
  die "$name not ready within ${secs}s (log: $LOGS/$name.log)"
}

start_cluster() {
  local name port
  if node_enabled; then prepare_host; fi
  for port in $ETCD_PORT $ETCD_PEER_PORT $APISERVER_PORT $KCM_PORT $SCHEDULER_PORT $KWOK_PORT; do
    port_free "$port" || die "port $port is taken by another process: $(ss -Hltnp "sport = :$port" | head -1)"
  done
  mkdir -p "$LOGS" "$PIDS"
  ensure_pki
  write_kubeconfig
  write_configs
  rm -rf "$CLUSTER_DIR/etcd"

  start etcd --name=swappo-local --data-dir="$CLUSTER_DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="swappo-local=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync=true --log-level=warn
  # unsafe-no-fsync: throwaway test data; fsync on a shared CI disk is the slowest part of etcd.
  wait_up etcd 30 etcd_healthy

  # Default admission plugins stay on (NamespaceLifecycle, ServiceAccount, PodSecurity, ...).
  local node_flags=()
  if node_enabled; then
    # Node authorization: the kubelet reads only its own pods' Secrets and ConfigMaps (RBAC's
    # system:node role has no subjects). The API server calls the kubelet (logs, exec) with
    # its own client cert, checks the kubelet's serving cert, and uses the node's InternalIP:
    # resolving its name would ask the machine's resolver. The default "lease" endpoint
    # reconciler publishes the bridge address behind the `kubernetes` Service.
    node_flags=(--authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction
      --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt"
      --kubelet-client-key="$PKI/apiserver-kubelet-client.key"
      --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP)
    node_pki
  else
    # none: the `kubernetes` Endpoints would point at 127.0.0.1, which validation rejects.
    node_flags=(--authorization-mode=RBAC --endpoint-reconciler-type=none)
  fi
  start kube-apiserver --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address="$APISERVER_ADDRESS" --advertise-address="$APISERVER_ADDRESS" --secure-port="$APISERVER_PORT" \
    --cert-dir="$CLUSTER_DIR/apiserver-certs" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" "${node_flags[@]}" \
    --service-account-issuer="$APISERVER_URL" --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --allow-privileged=true --profiling=false
  wait_up kube-apiserver "$READY_TIMEOUT" apiserver_ready

  # --use-service-account-credentials=false: every controller acts with the admin identity.
  # api qps/burst raised from 20/30: parallel tests delete namespaces and collect garbage at once.
  start kube-controller-manager --kubeconfig="$KUBECONFIG_PATH" \
    --authentication-kubeconfig="$KUBECONFIG_PATH" --authorization-kubeconfig="$KUBECONFIG_PATH" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$CLUSTER_DIR/kcm-certs" \
    --leader-elect=false --use-service-account-credentials=false --controllers='*' \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --kube-api-qps=100 --kube-api-burst=200 --profiling=false
  start kube-scheduler --config="$CLUSTER_DIR/scheduler.yaml" \
    --authentication-kubeconfig="$KUBECONFIG_PATH" --authorization-kubeconfig="$KUBECONFIG_PATH" \
    --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" --cert-dir="$CLUSTER_DIR/scheduler-certs" \
    --profiling=false
  # kwok plays the node's kubelet: it manages only nodes annotated kwok.x-k8s.io/node=fake and
  # drives their pods with the stages in hack/testplane/kwok/stages.yaml. The pod IPs it hands
  # out (--cidr) are only status values: nothing is ever sent to them.
  start kwok --kubeconfig="$KUBECONFIG_PATH" --config="$root/hack/testplane/kwok/stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --cidr=10.244.0.0/16 --node-ip=10.244.0.1 --node-lease-duration-seconds=40 \
    --server-address="127.0.0.1:$KWOK_PORT"

  wait_up kube-controller-manager 60 component_healthy "$KCM_PORT"
  wait_up kube-scheduler 60 component_healthy "$SCHEDULER_PORT"
  wait_up kwok 60 kwok_healthy
  if node_enabled; then start_node; fi
}

# ensure_node: creates the fake node, or restores its labels and annotations (a test may have
# changed them). No taint and a generous allocatable (32 cpu, 256 GiB, 110 pods = the kubelet's
# default pod limit), so the scheduler never refuses a test pod for resources.
ensure_node() {
  kubectl_ apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $KWOK_NODE
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: $KWOK_NODE
    kubernetes.io/os: linux
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    type: kwok
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
EOF
}

verify() {
  wait_up kube-apiserver "$READY_TIMEOUT" apiserver_ready
  ensure_node
  wait_up kwok 60 node_ready
  wait_up kube-controller-manager 60 default_sa_exists
  if node_enabled; then verify_node; fi
}

main() {
  with_lock
  if [ "${1:-}" = --restart-containerd ]; then
    node_enabled || die "--restart-containerd: this cluster has no real node (SWAPPO_NODE=0)"
    restart_containerd
    return 0
  fi
  local start_s running=() name
  start_s=$(date +%s)
  for name in "${COMPONENTS[@]}"; do
    if component_pid "$name" >/dev/null; then running+=("$name"); fi
  done
  if [ "${#running[@]}" -eq "${#COMPONENTS[@]}" ]; then
    log "control plane already running: verifying"
  else
    if [ "${#running[@]}" -gt 0 ]; then
      log "partly running (${running[*]}): restarting all"
    fi
    # What a stopped or crashed node left (mounts, shims, cgroups, rules: /run survives a
    # reboot here) goes before a fresh start; a no-op when there is nothing.
    node_down
    for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do stop_component "${COMPONENTS[i]}"; done
    log "starting the control plane ($SWAPPO_K8S_VERSION) in $CLUSTER_DIR"
    start_cluster
  fi
  verify
  local nodes="$KWOK_NODE"
  if node_enabled; then nodes+=" and $NODE_NAME"; fi
  log "cluster ready in $(($(date +%s) - start_s))s: $(kubectl_ version -o json | jq -r .serverVersion.gitVersion), node $nodes Ready"
  echo "export KUBECONFIG=$KUBECONFIG_PATH; $SWAPPO_TESTBIN/kubectl get nodes"
}

main "$@"
