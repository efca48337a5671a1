#!/usr/bin/env bash
# `make demo`: from a fresh clone, builds what is missing, starts the local environment
# (RabbitMQ, PostgreSQL, the Kubernetes control plane with a kwok node), applies crds/, the
# example SwappoMessaging and the notifications-service Deployment the operator scales, then
# runs `swappo-demo` (demo/): the operator, matchmaking and the notifications consumers as
# local processes, a load of trade offers, a live view, a final account.
#
#   make demo                        # until Ctrl-C (stops everything it started)
#   DEMO_DURATION=60 make demo       # unattended: 60 s of load, drain, summary, exit 1 if lost != 0
#
# Environment (all optional): DEMO_DURATION, DEMO_PROFILE (debug|release, default debug),
# DEMO_NAMESPACE (swappo-demo), DEMO_MAX_CONSUMERS (4), DEMO_WORKERS (16), DEMO_PORT_BASE
# (18080), DEMO_DRAIN_SECONDS (90), DEMO_STATE_DIR (logs), DEMO_SKIP_BUILD=1, DEMO_OPERATOR_ARGS
# (extra swappo-operator flags), DEMO_OUTAGE (true: 30 s in, mid-burst, close the services'
# broker connections; they reconnect and the account must still balance; false: no drill), DEMO_KEEP_ENV=1 keeps a broker/database/control plane the
# demo had to start (by default it stops what it started, and only that).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=env.sh
source scripts/env.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SWAPPO_CACHE/cargo-target}"

# Debug by default: `make test` and CI already build these binaries in debug into the shared
# target dir, so a demo after the tests builds almost nothing; a release build of the whole
# dependency tree takes many minutes on 2 cores. The debug services still handle hundreds of
# events per second, more than the demo's load needs.
PROFILE="${DEMO_PROFILE:-debug}"
case "$PROFILE" in
  debug) profile_flag=() ;;
  release) profile_flag=(--release) ;;
  *) die "DEMO_PROFILE must be debug or release, not $PROFILE" ;;
esac
NS="${DEMO_NAMESPACE:-swappo-demo}"
STATE="${DEMO_STATE_DIR:-$SWAPPO_STATE/demo}"
KUBECTL="$SWAPPO_TESTBIN/kubectl"
mkdir -p "$STATE"

# What was already running: the demo stops only what it started itself.
rabbit_up() { curl -fsS -m 3 -o /dev/null "$RABBITMQ_MANAGEMENT_URL/api/overview"; }
postgres_up() { pg_isready -q -h 127.0.0.1 -t 2; }
cluster_up() { [ -x "$KUBECTL" ] && "$KUBECTL" --kubeconfig "$SWAPPO_KUBECONFIG" --request-timeout=5s get --raw /readyz >/dev/null 2>&1; }
deps_were_up=0; cluster_was_up=0
if rabbit_up && postgres_up; then deps_were_up=1; fi
if cluster_up; then cluster_was_up=1; fi

# Safety net: whatever happens (an error, Ctrl-C, swappo-demo killed outright), no process
# the demo started keeps running. swappo-demo stops its children itself and removes their pid
# files; any pid file left names a process group to end here.
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local f pid
  for f in "$STATE"/*.pid; do
    [ -e "$f" ] || continue
    pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
      log "stopping leftover process group $pid ($(basename "$f" .pid))"
      kill -TERM -- "-$pid" 2>/dev/null || true
      for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
  if [ "${DEMO_KEEP_ENV:-0}" != 1 ]; then
    if [ "$cluster_was_up" = 0 ] && cluster_up; then log "stopping the control plane the demo started"; bash scripts/cluster-down.sh || true; fi
    if [ "$deps_were_up" = 0 ] && rabbit_up; then log "stopping RabbitMQ/PostgreSQL the demo started"; bash scripts/testenv-down.sh || true; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "${DEMO_SKIP_BUILD:-0}" = 1 ]; then
  log "DEMO_SKIP_BUILD=1: using the $PROFILE binaries as built"
else
  log "building swappo-operator, swappo-matchmaking, swappo-notifications, swappo-demo ($PROFILE)"
  cargo build "${profile_flag[@]}" -p swappo-operator -p swappo-matchmaking -p swappo-notifications -p swappo-demo --bins
fi
BIN_DIR="$CARGO_TARGET_DIR/$PROFILE"

bash scripts/testenv-deps.sh
bash scripts/testenv-bins.sh
bash scripts/cluster-up.sh
export KUBECONFIG="$SWAPPO_KUBECONFIG"
k() { "$KUBECTL" --request-timeout=20s "$@"; }

log "applying crds/ and waiting for the CRD to be established"
k apply -f crds/ >/dev/null
k wait --for=condition=Established --timeout=60s crd/swappomessagings.swappo.io >/dev/null
k create namespace "$NS" --dry-run=client -o yaml | k apply -f - >/dev/null
# The broker's data claim: the local cluster has no volume provisioner, so a volume is
# pre-bound to it (never mounted: kwok's pods do not run). A volume left Released by an
# earlier, deleted namespace cannot bind again, so it is made anew.
PV="$NS-swappo-rabbitmq-data"
if [ "$(k get pv "$PV" -o jsonpath='{.status.phase}' 2>/dev/null)" = Released ]; then
  k delete pv "$PV" --wait=true >/dev/null
fi
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata:
  name: $PV
  labels: { app.kubernetes.io/part-of: swappo-demo }
spec:
  capacity: { storage: 1Gi }
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  hostPath: { path: /tmp/swappo-demo-pv/$PV }
  claimRef: { namespace: $NS, name: swappo-rabbitmq-data }
EOF
log "applying examples/swappomessaging.yaml in namespace $NS"
k apply -n "$NS" -f examples/swappomessaging.yaml
# Demo tuning, said out loud: a laptop's load keeps the backlog in the tens of messages, so
# the demo asks for one consumer replica per DEMO_MESSAGES_PER_REPLICA (10) waiting messages
# instead of the example's 100, and scales down after DEMO_SCALE_DOWN_DELAY (20) seconds
# instead of 300, so one run shows both directions.
k patch -n "$NS" sm swappo --type=json -p "[
  {\"op\": \"replace\", \"path\": \"/spec/consumers/0/messagesPerReplica\", \"value\": ${DEMO_MESSAGES_PER_REPLICA:-10}},
  {\"op\": \"replace\", \"path\": \"/spec/consumers/0/scaleDownDelaySeconds\", \"value\": ${DEMO_SCALE_DOWN_DELAY:-20}}]"
# The consumer Deployment the operator scales. kwok plays its pods; swappo-demo runs one local
# consumer per replica; every run starts from 1 replica (the scale below: a client-side apply
# would leave the replicas an earlier run's scaling set).
k apply -n "$NS" -f - <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: notifications-service
  labels: { app.kubernetes.io/name: notifications-service, app.kubernetes.io/part-of: swappo }
spec:
  replicas: 1
  selector:
    matchLabels: { app.kubernetes.io/name: notifications-service }
  template:
    metadata:
      labels: { app.kubernetes.io/name: notifications-service, app.kubernetes.io/part-of: swappo }
    spec:
      containers:
        - name: notifications
          image: swappo/notifications:demo
          env:
            - name: RABBITMQ_USER
              valueFrom: { secretKeyRef: { name: swappo-rabbitmq, key: username } }
            - name: RABBITMQ_PASSWORD
              valueFrom: { secretKeyRef: { name: swappo-rabbitmq, key: password } }
EOF
k scale -n "$NS" deployment/notifications-service --replicas=1 >/dev/null

export DEMO_BIN_DIR="$BIN_DIR" DEMO_STATE_DIR="$STATE" DEMO_NAMESPACE="$NS"
log "running swappo-demo (logs in $STATE)"
# Ctrl-C reaches swappo-demo too (same process group): it stops the load, drains, prints the
# account and stops its processes. The shell only waits for that, then exits with its status.
trap ':' INT TERM
rc=0
"$BIN_DIR/swappo-demo" || rc=$?
exit "$rc"
