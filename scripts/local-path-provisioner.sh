#!/usr/bin/env bash
# A local-path volume provisioner for the real node, started by scripts/cluster-up.sh as
# `bash local-path-provisioner.sh CLUSTER_DIR` (the argument marks the process as this cluster's).
#
# For the StorageClass swappo-local-path (hack/testplane/node/storage.yaml, WaitForFirstConsumer):
# every second it
#   - gives each Pending claim that the scheduler assigned to the real node (annotation
#     volume.kubernetes.io/selected-node) a `local` PersistentVolume on a fresh directory under
#     $CLUSTER_DIR/node/volumes, bound to that claim (claimRef) with node affinity to the node;
#     the kubelet applies the pod's fsGroup to a `local` volume, so uid 999 can write it;
#   - deletes each Released volume it made (reclaim policy Delete) and its directory.
# A claim assigned to another node (kwok's fake one) is left alone.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=cluster-lib.sh
source "$here/cluster-lib.sh"

PROVISIONER=swappo.local/local-path
POLL_SECONDS=1

# claims_to_provision: "namespace name uid size" of the Pending claims of our class placed on
# this node.
claims_to_provision() {
  kubectl_ get pvc -A -o json | jq -r --arg sc "$STORAGE_CLASS" --arg node "$NODE_NAME" '
    .items[] | select(.spec.storageClassName == $sc and .status.phase == "Pending"
      and (.spec.volumeName // "") == ""
      and .metadata.annotations["volume.kubernetes.io/selected-node"] == $node)
    | [.metadata.namespace, .metadata.name, .metadata.uid, .spec.resources.requests.storage] | @tsv'
}

provision() {
  local ns="$1" claim="$2" uid="$3" size="$4" pv="pvc-$3" dir="$VOLUMES_DIR/pvc-$3"
  mkdir -p "$dir"
  # Writable by any uid until the kubelet applies the pod's fsGroup (group-owned, setgid).
  chmod 0777 "$dir"
  kubectl_ apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata:
  name: $pv
  labels: {swappo.io/local-path: "true"}
  annotations: {pv.kubernetes.io/provisioned-by: $PROVISIONER}
spec:
  capacity: {storage: $size}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Delete
  storageClassName: $STORAGE_CLASS
  volumeMode: Filesystem
  claimRef: {namespace: $ns, name: $claim, uid: $uid}
  local: {path: $dir}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [$NODE_NAME]}
EOF
  log "provisioned $pv for $ns/$claim at $dir"
}

# released: names of our volumes whose claim is gone.
released() {
  kubectl_ get pv -l swappo.io/local-path=true -o json |
    jq -r '.items[] | select(.status.phase == "Released" or .status.phase == "Failed") | .metadata.name'
}

reclaim() {
  local pv="$1"
  kubectl_ delete pv "$pv" --wait=false >/dev/null 2>&1 || return 0
  # Only directories this provisioner made: the name is pvc-<claim uid>.
  [[ "$pv" =~ ^pvc-[0-9a-f-]+$ ]] && rm -rf "${VOLUMES_DIR:?}/$pv"
  log "deleted $pv and its directory"
}

main() {
  [ "${1:-}" = "$CLUSTER_DIR" ] || die "usage: $0 $CLUSTER_DIR"
  mkdir -p "$VOLUMES_DIR"
  log "local-path provisioner for StorageClass $STORAGE_CLASS on $NODE_NAME, volumes in $VOLUMES_DIR"
  while true; do
    # A failed list (the API server restarting) is retried on the next round.
    while IFS=$'\t' read -r ns claim uid size; do
      [ -z "$uid" ] || provision "$ns" "$claim" "$uid" "$size" || log "provisioning $ns/$claim failed: retrying"
    done < <(claims_to_provision 2>/dev/null || true)
    while read -r pv; do
      [ -z "$pv" ] || reclaim "$pv" || log "deleting $pv failed: retrying"
    done < <(released 2>/dev/null || true)
    sleep "$POLL_SECONDS"
  done
}

main "$@"
