#!/usr/bin/env bash
# mk-oci.sh NAME CONFIG.json LAYER.tar... > image.tar
# Writes an OCI image layout as a tar on stdout: one uncompressed layer per LAYER.tar, the image
# config's "config" object from CONFIG.json (Entrypoint, Cmd, User, Env, ExposedPorts, ...), and
# the name NAME in the index annotations `io.containerd.image.name` (kept verbatim by
# `ctr images import`) and `org.opencontainers.image.ref.name`. No timestamps: the same inputs
# give the same digests.
set -euo pipefail
name="$1" cfg="$2"
shift 2
w="$(mktemp -d)"
trap 'rm -rf "$w"' EXIT
mkdir -p "$w/blobs/sha256"
# blob FILE MEDIATYPE: stores FILE under its digest, prints its descriptor.
blob() {
  local d
  d="$(sha256sum "$1" | cut -d' ' -f1)"
  cp "$1" "$w/blobs/sha256/$d"
  jq -nc --arg m "$2" --arg d "sha256:$d" --argjson s "$(stat -c %s "$1")" '{mediaType: $m, digest: $d, size: $s}'
}
layers="$(for l in "$@"; do blob "$l" application/vnd.oci.image.layer.v1.tar; done | jq -sc .)"
jq -c --argjson l "$layers" '{created: "1970-01-01T00:00:00Z", architecture: "amd64", os: "linux",
  config: ., rootfs: {type: "layers", diff_ids: [$l[].digest]}}' "$cfg" >"$w/c"
jq -nc --argjson c "$(blob "$w/c" application/vnd.oci.image.config.v1+json)" --argjson l "$layers" \
  '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: $c, layers: $l}' >"$w/m"
jq -nc --argjson m "$(blob "$w/m" application/vnd.oci.image.manifest.v1+json)" --arg n "$name" \
  '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: [$m + {platform:
  {architecture: "amd64", os: "linux"}, annotations: {"io.containerd.image.name": $n,
  "org.opencontainers.image.ref.name": $n}}]}' >"$w/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$w/oci-layout"
rm "$w/c" "$w/m"
# Only this outer tar may flatten owners; the layers inside keep their numeric owners.
tar -C "$w" --owner=0 --group=0 --numeric-owner --sort=name --mtime=@0 -cf - oci-layout index.json blobs
