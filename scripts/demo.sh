#!/usr/bin/env bash
# `make demo`: the user story on the local cluster's real node, from a fresh clone, no Docker.
# Builds what is missing (swappo-demo, the rabbitmq and app images, the cluster with its node),
# then, as a user would: `kubectl apply -f crds/`, `helm install` the operator chart (the
# operator as a pod with its own ServiceAccount, RBAC and leader election), the sample
# SwappoMessaging (the operator runs its broker as a pod on the node), `helm install` the
# services chart (matchmaking and notifications-service as pods reading the operator's
# Secret). PostgreSQL is a server of the demo's own on this host (see "Why PostgreSQL on the
# host" below). Then `swappo-demo` (demo/) drives a load of trade offers, shows the live view
# with the pods, runs the outage drill (broker pod killed, a consumer pod killed mid-batch,
# the database restarted) and prints the account.
#
#   make demo                        # until Ctrl-C (then removes everything it installed)
#   DEMO_DURATION=60 make demo       # unattended: 60 s of load (at least the drill), exit 1 on loss
#
# Environment (all optional): DEMO_DURATION, DEMO_NAMESPACE (swappo-demo), DEMO_OUTAGE (true),
# DEMO_WORKERS (16), DEMO_DRAIN_SECONDS (90), DEMO_PG_PORT (15440), DEMO_STATE_DIR,
# DEMO_PROFILE (debug|release: swappo-demo itself), DEMO_SKIP_BUILD=1 (binary and images as
# built), DEMO_KEEP_ENV=1 (keep a broker/database/cluster the demo had to start).
#
# Why PostgreSQL on the host: where a user has it. A production database is rarely a pod next
# to the services; it is a managed or dedicated server the cluster reaches over the network.
# Here that network is the node's bridge: pods reach the host at 10.246.0.1 (the only host
# address they reach; nothing leaves the machine). The server is the demo's own (Debian's
# PostgreSQL binaries from `make testenv-deps`, its data under the state dir), not the shared
# test server: the drill restarts it, which must not break anybody's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=env.sh
source scripts/env.sh
# The node's names and addresses (NODE_NAME, NODE_IP, NODE_TAINT, POD_CIDR, CONTAINERD_SOCK).
# shellcheck source=cluster-lib.sh
source scripts/cluster-lib.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SWAPPO_CACHE/cargo-target}"

# Debug by default: `make test` already builds the workspace in debug; the images hold
# release builds of the operator and services (images/build.sh).
PROFILE="${DEMO_PROFILE:-debug}"
case "$PROFILE" in
  debug) profile_flag=() ;;
  release) profile_flag=(--release) ;;
  *) die "DEMO_PROFILE must be debug or release, not $PROFILE" ;;
esac
NS="${DEMO_NAMESPACE:-swappo-demo}"
STATE="${DEMO_STATE_DIR:-$SWAPPO_STATE/$NS}"
PG_PORT="${DEMO_PG_PORT:-15440}"
PG_BIN="${PG_BIN_DIR:-/usr/lib/postgresql/15/bin}"
# The server's directory must be reachable by the user it runs as: as root that is
# `postgres`, which cannot enter /root, so it lives under /var/tmp then.
if [ "$(id -u)" = 0 ]; then PG_DIR="/var/tmp/swappo-$NS/postgres"; else PG_DIR="$STATE/postgres"; fi
SM=swappo
OPERATOR_RELEASE=swappo-operator
SERVICES_RELEASE=swappo-services
# Cluster-scoped objects carry the namespace in their name, so two demos (make demo and
# make demo-check) never share one.
PLACEMENT="$NS-real-node-placement"
KUBECTL="$SWAPPO_TESTBIN/kubectl"
HELM="$SWAPPO_TESTBIN/helm"
mkdir -p "$STATE"
started_at=$(date +%s)

# What was already running: the demo stops only what it started itself.
postgres_up() { pg_isready -q -h 127.0.0.1 -t 2; }
cluster_up() { [ -x "$KUBECTL" ] && "$KUBECTL" --kubeconfig "$SWAPPO_KUBECONFIG" --request-timeout=5s get --raw /readyz >/dev/null 2>&1; }
deps_were_up=0; cluster_was_up=0
if postgres_up; then deps_were_up=1; fi
if cluster_up; then cluster_was_up=1; fi

k() { "$KUBECTL" --kubeconfig "$SWAPPO_KUBECONFIG" --request-timeout=30s "$@"; }
h() { "$HELM" --kubeconfig "$SWAPPO_KUBECONFIG" "$@"; }
# Debian's PostgreSQL refuses to run as root: as root, its binaries run as `postgres`.
pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$PG_BIN/$1" "${@:2}"; else "$PG_BIN/$1" "${@:2}"; fi
}
pg_ctl_demo() { pg pg_ctl -D "$PG_DIR/data" "$@"; }

installed=0
# diagnose: what a failed run leaves to read before its namespace goes: the resource's
# conditions, every pod not Ready with its events, and the logs of its containers (init
# containers included, the previous instance of one that restarted). Secrets are not printed.
diagnose() {
  log "the demo failed: the state of namespace $NS before it is removed"
  k get sm,pods,pvc -n "$NS" -o wide >&2 2>&1 || true
  k get sm "$SM" -n "$NS" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' >&2 2>&1 || true
  local pod c
  for pod in $(k get pods -n "$NS" -o jsonpath='{range .items[*]}{.metadata.name}{" "}{range .status.conditions[?(@.type=="Ready")]}{.status}{end}{"\n"}{end}' 2>/dev/null | awk '$2 != "True" { print $1 }'); do
    log "pod $pod is not Ready: kubectl describe pod and its containers' logs"
    k describe pod "$pod" -n "$NS" >"$STATE/describe.txt" 2>&1 || true
    # Containers (states, last states, restarts) and the events; not the volumes and tolerations.
    { sed -n '/^Init Containers:/,/^Conditions:/p' "$STATE/describe.txt" | grep -v '^Conditions:' | head -n 80
      sed -n '/^Events:/,$p' "$STATE/describe.txt" | tail -n 20; } >&2
    for c in $(k get pod "$pod" -n "$NS" -o jsonpath='{.spec.initContainers[*].name} {.spec.containers[*].name}' 2>/dev/null); do
      echo "---- $pod/$c (current, then previous)" >&2
      k logs "$pod" -n "$NS" -c "$c" --tail=40 >&2 2>&1 || true
      k logs "$pod" -n "$NS" -c "$c" --previous --tail=40 >&2 2>&1 || true
    done
  done
  log "the operator's log (last 40 lines)"
  k logs -n "$NS" "deploy/$OPERATOR_RELEASE" --tail=40 >&2 2>&1 || true
}
# Removes everything the demo installed, in the order a user would: the resource first (its
# broker and Secret go with the namespace), the services, the operator, the namespace, the
# admission policy, the demo's database server; then what it had to start.
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$installed" = 1 ] && [ "$rc" != 0 ] && [ "$rc" != 130 ]; then diagnose; fi
  if [ "$installed" = 1 ]; then
    log "removing the demo: SwappoMessaging, helm releases, namespace $NS, placement policy"
    # Nothing is waited for but the namespace: its deletion waits for every pod in it, so one
    # wait covers all. The pods get 5 s of grace instead of their own (the broker's is 120 s,
    # and a RabbitMQ still booting ignores SIGTERM): the queue was drained, the data is dropped.
    k delete sm "$SM" -n "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    h uninstall "$SERVICES_RELEASE" -n "$NS" >/dev/null 2>&1 || true
    h uninstall "$OPERATOR_RELEASE" -n "$NS" >/dev/null 2>&1 || true
    k delete pods --all -n "$NS" --grace-period=5 --wait=false >/dev/null 2>&1 || true
    k delete namespace "$NS" --ignore-not-found --wait=true --timeout=240s >/dev/null 2>&1 ||
      log "namespace $NS is still terminating (kubectl get ns $NS)"
    k delete mutatingadmissionpolicybinding,mutatingadmissionpolicy "$PLACEMENT" --ignore-not-found >/dev/null 2>&1 || true
  fi
  if [ -f "$PG_DIR/data/postmaster.pid" ]; then
    log "stopping the demo's PostgreSQL"
    pg_ctl_demo -m fast -w -t 60 stop >/dev/null 2>&1 || true
  fi
  if [ "${DEMO_KEEP_ENV:-0}" != 1 ]; then
    if [ "$cluster_was_up" = 0 ] && cluster_up; then log "stopping the cluster the demo started"; bash scripts/cluster-down.sh || true; fi
    if [ "$deps_were_up" = 0 ] && postgres_up; then log "stopping RabbitMQ/PostgreSQL the demo started"; bash scripts/testenv-down.sh || true; fi
  fi
  log "demo finished after $(($(date +%s) - started_at))s (exit $rc)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. What is missing: the driver, the environment, the cluster with its node, the images.
if [ "${DEMO_SKIP_BUILD:-0}" = 1 ]; then
  log "DEMO_SKIP_BUILD=1: swappo-demo ($PROFILE) and the images as built"
else
  log "building swappo-demo ($PROFILE)"
  cargo build -q "${profile_flag[@]}" -p swappo-demo --bin swappo-demo
fi
bash scripts/testenv-deps.sh
bash scripts/node-deps.sh
bash scripts/testenv-bins.sh
bash scripts/cluster-up.sh
if [ "${DEMO_SKIP_BUILD:-0}" != 1 ]; then
  log "images: the broker's and the app images (built once, cached by content; imported when the node lacks them)"
  bash images/build.sh --import rabbitmq app
fi
BIN="$CARGO_TARGET_DIR/$PROFILE/swappo-demo"
[ -x "$BIN" ] || die "$BIN is missing (cargo build -p swappo-demo)"
log "environment ready after $(($(date +%s) - started_at))s"

# A namespace of an earlier run that was killed outright: removed first.
if k get namespace "$NS" >/dev/null 2>&1; then
  log "removing namespace $NS left by an earlier run"
  h uninstall "$SERVICES_RELEASE" -n "$NS" >/dev/null 2>&1 || true
  k delete sm --all -n "$NS" --wait=true --timeout=60s >/dev/null 2>&1 || true
  h uninstall "$OPERATOR_RELEASE" -n "$NS" >/dev/null 2>&1 || true
  k delete namespace "$NS" --wait=true --timeout=120s >/dev/null
fi
installed=1

# 2. The demo's PostgreSQL: on loopback (the driver) and the bridge address (the pods).
if [ ! -s "$PG_DIR/data/PG_VERSION" ]; then
  log "initialising the demo's PostgreSQL in $PG_DIR"
  rm -rf "$PG_DIR"
  mkdir -p "$PG_DIR"
  chmod 755 "$(dirname "$PG_DIR")"
  # A password of its own, generated once, readable only by the owner.
  (umask 077; head -c 18 /dev/urandom | base64 | tr '+/' '-_' >"$PG_DIR/password")
  [ "$(id -u)" = 0 ] && chown -R postgres: "$PG_DIR"
  pg initdb -D "$PG_DIR/data" -U swappo_demo --pwfile="$PG_DIR/password" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >"$STATE/initdb.log"
fi
PG_PASSWORD="$(cat "$PG_DIR/password")"
if ! pg_isready -q -h 127.0.0.1 -p "$PG_PORT" -t 1; then
  log "starting the demo's PostgreSQL on 127.0.0.1:$PG_PORT and $NODE_IP:$PG_PORT"
  # pg_hba: scram for loopback and the pod bridge only (initdb's host lines cover loopback).
  grep -q "$POD_CIDR" "$PG_DIR/data/pg_hba.conf" ||
    echo "host all all $POD_CIDR scram-sha-256" >>"$PG_DIR/data/pg_hba.conf"
  pg_ctl_demo -w -t 60 -l "$PG_DIR/server.log" \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1,$NODE_IP -k $PG_DIR -c max_connections=200" start >/dev/null
fi
ADMIN_URL="postgres://swappo_demo:$PG_PASSWORD@127.0.0.1:$PG_PORT/postgres"
POD_DB_URL="postgres://swappo_demo:$PG_PASSWORD@$NODE_IP:$PG_PORT"

# 3. The user story: CRDs, namespace, the operator chart, the resource, the services chart.
export KUBECONFIG="$SWAPPO_KUBECONFIG"
log "kubectl apply -f crds/"
k apply -f crds/ >/dev/null
k wait --for=condition=Established --timeout=60s crd/swappomessagings.swappo.io >/dev/null
k create namespace "$NS" >/dev/null
k label namespace "$NS" pod-security.kubernetes.io/enforce=restricted app.kubernetes.io/part-of=swappo-demo >/dev/null
# The real node is tainted so that other tests' pods stay on kwok's node. A cluster admin
# places a namespace's pods with an admission policy, not in each workload: every pod created
# in the demo's namespace (the operator, the broker, the services) gets the node's selector and
# toleration, whatever kind of workload made it.
k apply -f - >/dev/null <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingAdmissionPolicy
metadata:
  name: $PLACEMENT
  labels: { app.kubernetes.io/part-of: swappo-demo }
spec:
  failurePolicy: Fail
  reinvocationPolicy: Never
  matchConstraints:
    resourceRules:
      - { apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods] }
  mutations:
    - patchType: JSONPatch
      jsonPatch:
        expression: >
          [
            has(object.spec.nodeSelector) ?
              JSONPatch{op: "add", path: "/spec/nodeSelector/kubernetes.io~1hostname", value: "$NODE_NAME"} :
              JSONPatch{op: "add", path: "/spec/nodeSelector", value: {"kubernetes.io/hostname": "$NODE_NAME"}},
            has(object.spec.tolerations) ?
              JSONPatch{op: "add", path: "/spec/tolerations/-",
                value: Object.spec.tolerations{key: "$NODE_TAINT", operator: "Exists", effect: "NoSchedule"}} :
              JSONPatch{op: "add", path: "/spec/tolerations",
                value: [Object.spec.tolerations{key: "$NODE_TAINT", operator: "Exists", effect: "NoSchedule"}]}
          ]
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingAdmissionPolicyBinding
metadata:
  name: $PLACEMENT
  labels: { app.kubernetes.io/part-of: swappo-demo }
spec:
  policyName: $PLACEMENT
  matchResources:
    namespaceSelector:
      matchLabels: { kubernetes.io/metadata.name: $NS }
EOF
# The policy takes effect once the API server has loaded it (a second or so): a pod created
# before would stay Pending (no node it tolerates). Probe with a server-side dry run of a pod
# the namespace's restricted profile admits.
probe='{"apiVersion":"v1","kind":"Pod","metadata":{"name":"placement-probe"},"spec":{
  "securityContext":{"runAsNonRoot":true,"runAsUser":65532,"seccompProfile":{"type":"RuntimeDefault"}},
  "containers":[{"name":"p","image":"swappo.local/debian:bookworm","securityContext":{
    "allowPrivilegeEscalation":false,"capabilities":{"drop":["ALL"]}}}]}}'
placed=0
for _ in $(seq 1 30); do
  if echo "$probe" | k create -n "$NS" --dry-run=server -o jsonpath='{.spec.nodeSelector}' -f - 2>/dev/null | grep -q "$NODE_NAME"; then placed=1; break; fi
  sleep 1
done
[ "$placed" = 1 ] || die "the placement policy $PLACEMENT did not take effect within 30 s (kubectl get mutatingadmissionpolicy)"

# The services' database Secrets, as a user creates them (chart values database.secretName).
DB_BASE="${NS//-/_}"
k create secret generic matchmaking-database -n "$NS" --from-literal=url="$POD_DB_URL/${DB_BASE}_matchmaking" >/dev/null
k create secret generic notifications-database -n "$NS" --from-literal=url="$POD_DB_URL/${DB_BASE}_notifications" >/dev/null
# Fresh databases on every run: the account starts at zero.
for db in "${DB_BASE}_matchmaking" "${DB_BASE}_notifications"; do
  PGOPTIONS='-c client_min_messages=warning' psql -q -v ON_ERROR_STOP=1 "$ADMIN_URL" \
    -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
done

log "helm install $OPERATOR_RELEASE charts/swappo-operator (namespace scope, leader election on)"
# Small requests: the node has 2 cores shared by everything on it. The broker is re-checked
# every 3 s while not ready (default 10 s) so the demo starts sooner. No --wait: the resource
# can be applied while the operator's pod starts; the wait for its Secret below covers both.
h upgrade --install "$OPERATOR_RELEASE" charts/swappo-operator -n "$NS" \
  --set image.repository=swappo.local/swappo-operator --set image.tag=dev --set image.pullPolicy=Never \
  --set watch.scope=namespace --set leaderElection.enabled=true --set log.format=text \
  --set broker.retrySeconds=3 --set resources.requests.cpu=20m >/dev/null

log "kubectl apply -n $NS -f examples/swappomessaging.yaml (with the demo's settings)"
# Demo settings, said out loud, patched into the example before it is applied (the operator
# creates the broker's claim once, from the first spec it sees): the node's own RabbitMQ image
# (images are never pulled), its local-path StorageClass, small requests for a 2-core node;
# one consumer per DEMO_MESSAGES_PER_REPLICA (10) waiting messages instead of 100 and
# scale-down after DEMO_SCALE_DOWN_DELAY (20) s instead of 300, so one run shows both
# directions; at most DEMO_MAX_CONSUMERS (4) consumer pods on two cores.
k patch --local -f examples/swappomessaging.yaml --type=json -o yaml -p "[
  {\"op\": \"replace\", \"path\": \"/spec/broker/image\", \"value\": \"swappo.local/rabbitmq:3.10.8-management\"},
  {\"op\": \"add\", \"path\": \"/spec/broker/storage/storageClassName\", \"value\": \"$STORAGE_CLASS\"},
  {\"op\": \"replace\", \"path\": \"/spec/broker/resources/requests/cpu\", \"value\": \"50m\"},
  {\"op\": \"replace\", \"path\": \"/spec/consumers/0/maxReplicas\", \"value\": ${DEMO_MAX_CONSUMERS:-4}},
  {\"op\": \"replace\", \"path\": \"/spec/consumers/0/messagesPerReplica\", \"value\": ${DEMO_MESSAGES_PER_REPLICA:-10}},
  {\"op\": \"replace\", \"path\": \"/spec/consumers/0/scaleDownDelaySeconds\", \"value\": ${DEMO_SCALE_DOWN_DELAY:-20}}]" |
  k apply -n "$NS" -f - >/dev/null

log "waiting for the operator's broker and its Secret (status.broker.secretName)"
secret=""
for _ in $(seq 1 180); do
  secret="$(k get sm "$SM" -n "$NS" -o jsonpath='{.status.broker.secretName}' 2>/dev/null || true)"
  if [ -n "$secret" ] && k get secret "$secret" -n "$NS" >/dev/null 2>&1; then break; fi
  secret=""
  sleep 1
done
[ -n "$secret" ] || die "the operator wrote no broker Secret within 180 s: kubectl logs -n $NS deploy/$OPERATOR_RELEASE"

log "helm install $SERVICES_RELEASE charts/swappo-services (matchmaking, notifications-service)"
h upgrade --install "$SERVICES_RELEASE" charts/swappo-services -n "$NS" \
  --set messaging.name="$SM" --set messaging.secretName="$secret" \
  --set matchmaking.image.repository=swappo.local/swappo-matchmaking --set matchmaking.image.tag=dev \
  --set matchmaking.image.pullPolicy=Never --set matchmaking.logFormat=text \
  --set matchmaking.resources.requests.cpu=20m \
  --set notifications.image.repository=swappo.local/swappo-notifications --set notifications.image.tag=dev \
  --set notifications.image.pullPolicy=Never --set notifications.logFormat=text \
  --set notifications.resources.requests.cpu=20m >/dev/null
log "installed after $(($(date +%s) - started_at))s"

cat >&2 <<EOF
[demo] look around while it runs (another terminal):
  export KUBECONFIG=$SWAPPO_KUBECONFIG
  $KUBECTL get pods -n $NS -o wide
  $KUBECTL get sm -n $NS
  $KUBECTL describe sm $SM -n $NS
  $KUBECTL logs -n $NS deploy/$OPERATOR_RELEASE -f
  $HELM list -n $NS
EOF

export DEMO_STATE_DIR="$STATE" DEMO_NAMESPACE="$NS" DEMO_NAME="$SM" DEMO_SECRET="$secret"
export DEMO_DATABASE_URL="$ADMIN_URL" DEMO_PG_DATA="$PG_DIR/data" DEMO_PG_BIN_DIR="$PG_BIN" DEMO_STARTED_AT="$started_at"
export DEMO_CRICTL="$SWAPPO_TESTBIN/crictl" DEMO_CONTAINERD_SOCK="$CONTAINERD_SOCK"
log "running swappo-demo (state in $STATE)"
# Ctrl-C reaches swappo-demo too (same process group): it stops the load, drains, prints the
# account. The shell only waits for that, then removes what it installed.
trap ':' INT TERM
rc=0
"$BIN" || rc=$?
exit "$rc"
