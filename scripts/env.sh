# Shared settings for the repo's scripts: sourced, never run.
# Every value can be overridden from the environment.

# Where slow-to-build things live, outside the repo, keyed by version below.
export SWAPPO_CACHE="${SWAPPO_CACHE:-$HOME/.cache/swappo}"
# Runtime state of the local environment (pids, logs, kubeconfig).
export SWAPPO_STATE="${SWAPPO_STATE:-$SWAPPO_CACHE/state}"

# Local Kubernetes control plane (scripts/testenv-bins.sh, cluster-up.sh, cluster-down.sh).
# The version is pinned by hack/testplane/k8s/go.mod and k8s-openapi's v1_37 feature: not overridable.
export SWAPPO_K8S_VERSION=v1.37.2
export SWAPPO_TESTBIN="${SWAPPO_TESTBIN:-$SWAPPO_CACHE/testbin/$SWAPPO_K8S_VERSION}"
# Admin kubeconfig of the local control plane. `make test` points KUBECONFIG here explicitly,
# so a developer's own KUBECONFIG (a real cluster) is never used by the tests.
export SWAPPO_KUBECONFIG="${SWAPPO_KUBECONFIG:-$SWAPPO_STATE/cluster/kubeconfig}"

# Test credentials for the local broker and database. They exist only on loopback
# on a developer machine or CI; production credentials come from the operator's Secret.
export SWAPPO_TEST_USER="${SWAPPO_TEST_USER:-swappo}"
export SWAPPO_TEST_PASSWORD="${SWAPPO_TEST_PASSWORD:-swappo-local-test}"

export RABBITMQ_URL="${RABBITMQ_URL:-amqp://${SWAPPO_TEST_USER}:${SWAPPO_TEST_PASSWORD}@127.0.0.1:5672/%2f}"
export RABBITMQ_MANAGEMENT_URL="${RABBITMQ_MANAGEMENT_URL:-http://${SWAPPO_TEST_USER}:${SWAPPO_TEST_PASSWORD}@127.0.0.1:15672}"
export DATABASE_URL="${DATABASE_URL:-postgres://${SWAPPO_TEST_USER}:${SWAPPO_TEST_PASSWORD}@127.0.0.1:5432/swappo_test}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# wait_for DESCRIPTION SECONDS COMMAND...: retry COMMAND once a second until it succeeds.
wait_for() {
  local what="$1" secs="$2"; shift 2
  local i
  for ((i = 0; i < secs; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  die "$what did not answer within ${secs}s"
}
