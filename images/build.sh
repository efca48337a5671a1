#!/usr/bin/env bash
# Builds the local node's OCI images without a Docker engine or a registry, from Debian's
# packages (mmdebstrap) and binaries this repo builds, and imports them into the node's
# containerd. Each image is an OCI layout tar in $SWAPPO_CACHE/images, rebuilt only when what it
# is made of changed (a stamp per image).
#
# Usage: images/build.sh [--import] [SET|IMAGE...]
#   sets:   node  pause, coredns, debian (what cluster-up needs)       [default: all]
#           app   the operator and both services (release binaries; `make test` builds
#                 them unless SWAPPO_APP_IMAGES=0)
#           all   node + rabbitmq + app
#   --import  also import into the running node's containerd whatever it lacks or holds stale
#   --import-if-up  the same when the node's containerd runs, else only build
#
# Images (names: swappo.local/...; CRI would rewrite a short name to docker.io/library/...):
#   registry.k8s.io/pause:3.10.2            Kubernetes' pause.c, static (containerd's pinned sandbox)
#   swappo.local/coredns:v1.15.0            the trimmed CoreDNS of hack/testplane/coredns
#   swappo.local/debian:bookworm            Debian minbase + busybox: the test bed's pods
#   swappo.local/rabbitmq:3.10.8-management Debian's rabbitmq-server, laid out like the official
#                                           `rabbitmq` image (images/rabbitmq/)
#   swappo.local/swappo-operator:dev, swappo.local/swappo-matchmaking:dev,
#   swappo.local/swappo-notifications:dev   release binaries on a distroless-like Debian base,
#                                           entrypoint/user/ports as in their Dockerfiles
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=../scripts/cluster-lib.sh
source "$root/scripts/cluster-lib.sh"
# Files inside the layers are world-readable unless a package says otherwise (cluster-up runs
# with umask 077).
umask 022

OUT="$SWAPPO_CACHE/images"
# The release binaries of the app images: the Makefile's target dir (outside the repo).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SWAPPO_CACHE/cargo-target}"
# Which build of the workspace the app images hold: release (default: what a user runs and the
# Dockerfiles build) or debug (`make test`: the binaries its `cargo test --workspace` compiles
# anyway, with their debug info stripped, so CI compiles the workspace once, not twice).
APP_PROFILE="${SWAPPO_APP_PROFILE:-release}"
case "$APP_PROFILE" in
  release) APP_BIN_DIR="$CARGO_TARGET_DIR/release" ;;
  debug) APP_BIN_DIR="$CARGO_TARGET_DIR/debug" ;;
  *) die "SWAPPO_APP_PROFILE must be release or debug, not '$APP_PROFILE'" ;;
esac
SUITE=bookworm
# Debian's mirrors exactly as this machine's apt uses them.
APT_SOURCES="${SWAPPO_APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}"
# Documentation, manuals and translations are never read in a container.
DPKG_EXCLUDES=(--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/info/*')

declare -A IMAGE_REF=(
  [pause]="$PAUSE_IMAGE"
  [coredns]=swappo.local/coredns:v1.15.0
  [debian]=swappo.local/debian:bookworm
  [rabbitmq]=swappo.local/rabbitmq:3.10.8-management
  [operator]=swappo.local/swappo-operator:dev
  [matchmaking]=swappo.local/swappo-matchmaking:dev
  [notifications]=swappo.local/swappo-notifications:dev
)
NODE_SET=(pause coredns debian)
APP_SET=(operator matchmaking notifications)
ALL_SET=(pause coredns debian rabbitmq operator matchmaking notifications)

key_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# fresh IMAGE KEY: the image's tar exists and was built from KEY.
fresh() { [ -s "$OUT/$1.tar" ] && [ "$(cat "$OUT/$1.key" 2>/dev/null)" = "$2" ]; }

# finish IMAGE KEY CONFIG LAYER...: wraps the layers as the image's OCI tar, records KEY.
finish() {
  local img="$1" key="$2" cfg="$3"
  shift 3
  bash "$here/mk-oci.sh" "${IMAGE_REF[$img]}" "$cfg" "$@" >"$OUT/$img.tar.tmp"
  mv "$OUT/$img.tar.tmp" "$OUT/$img.tar"
  echo "$key" >"$OUT/$img.key"
}

# binary_layer OUT.tar PATH-IN-IMAGE FILE [PATH-IN-IMAGE FILE]...: root-owned executables.
binary_layer() {
  local stage out="$1"
  stage="$(mktemp -d)"
  shift
  while [ "$#" -ge 2 ]; do
    install -D -m 0755 "$2" "$stage$1"
    shift 2
  done
  tar -C "$stage" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$out" .
  rm -rf "$stage"
}

# debian_layer OUT.tar MMDEBSTRAP-ARGS...: a Debian root filesystem as one layer. Numeric owners
# are kept (uid 999's files stay uid 999's); /dev is the runtime's to fill.
debian_layer() {
  local out="$1"
  shift
  SOURCE_DATE_EPOCH=0 mmdebstrap --quiet --mode=root --format=tar "${DPKG_EXCLUDES[@]}" "$@" \
    "$SUITE" - "$APT_SOURCES" </dev/null | mmtarfilter --path-exclude='/dev/*' >"$out"
}

build_pause() {
  local key
  key="$(key_of "$SWAPPO_TESTBIN/pause")"
  fresh pause "$key" && return 0
  binary_layer "$W/pause-layer.tar" /pause "$SWAPPO_TESTBIN/pause"
  echo '{"User": "65535:65535", "Entrypoint": ["/pause"]}' >"$W/pause.json"
  finish pause "$key" "$W/pause.json" "$W/pause-layer.tar"
}

build_coredns() {
  local key
  key="$(key_of "$SWAPPO_TESTBIN/coredns")"
  fresh coredns "$key" && return 0
  binary_layer "$W/coredns-layer.tar" /coredns "$SWAPPO_TESTBIN/coredns"
  echo '{"User": "65532:65532", "Entrypoint": ["/coredns"], "ExposedPorts": {"1053/udp": {}, "1053/tcp": {}}}' >"$W/coredns.json"
  finish coredns "$key" "$W/coredns.json" "$W/coredns-layer.tar"
}

build_debian() {
  local key
  key="$(printf '%s\n' "$SUITE" busybox "${DPKG_EXCLUDES[*]}" | key_of - "$APT_SOURCES")"
  fresh debian "$key" && return 0
  debian_layer "$W/debian-layer.tar" --variant=minbase --include=busybox
  jq -n '{Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], Cmd: ["bash"]}' >"$W/debian.json"
  finish debian "$key" "$W/debian.json" "$W/debian-layer.tar"
}

build_rabbitmq() {
  local key d="$here/rabbitmq"
  key="$(printf '%s\n' "$SUITE" rabbitmq-server "${DPKG_EXCLUDES[*]}" | key_of - "$APT_SOURCES" "$d"/*)"
  fresh rabbitmq "$key" && return 0
  # The rabbitmq user and group are 999 like the official image's; they exist before the
  # package installs (its postinst creates them only when missing). The postinst's generated
  # Erlang cookie goes: the official image bakes none (RabbitMQ makes one at first start, the
  # operator mounts its own).
  debian_layer "$W/rabbitmq-layer.tar" --variant=minbase --include=rabbitmq-server \
    --essential-hook='echo "rabbitmq:x:999:" >>"$1/etc/group"; echo "rabbitmq:!:19000::::::" >>"$1/etc/shadow"; echo "rabbitmq:x:999:999::/var/lib/rabbitmq:/usr/sbin/nologin" >>"$1/etc/passwd"' \
    --customize-hook="bash '$d/customize.sh' \"\$1\" '$d'"
  jq -n --slurpfile c "$d/config.json" '$c[0]' >"$W/rabbitmq.json"
  finish rabbitmq "$key" "$W/rabbitmq.json" "$W/rabbitmq-layer.tar"
}

# The services' run base: what distroless/cc-debian12 holds (glibc, libgcc, CA certificates,
# tzdata, netbase) and its nonroot user 65532, no shell run by anything.
build_app_base() {
  local key
  key="$(printf '%s\n' "$SUITE" app-base "${DPKG_EXCLUDES[*]}" | key_of - "$APT_SOURCES" "$here/app-base.sh")"
  if [ -s "$OUT/app-base-layer.tar" ] && [ "$(cat "$OUT/app-base-layer.key" 2>/dev/null)" = "$key" ]; then return 0; fi
  debian_layer "$OUT/app-base-layer.tar.tmp" --variant=extract \
    --include=base-files,libc6,libgcc-s1,ca-certificates,tzdata,netbase \
    --extract-hook="bash '$here/app-base.sh' \"\$1\""
  mv "$OUT/app-base-layer.tar.tmp" "$OUT/app-base-layer.tar"
  echo "$key" >"$OUT/app-base-layer.key"
}

# build_app IMAGE BIN...: the image's binaries (its main binary and the extra ones its
# Dockerfile ships, e.g. the one-off import), built beforehand by build_app_binaries, on the app
# base; config from its Dockerfile's run stage (images/<image>.json, compared with the Dockerfile
# by tests/tests/node_images.rs). Release binaries are stripped like the Dockerfiles' builds
# (CARGO_PROFILE_RELEASE_STRIP=symbols); debug ones lose their debug info here (a copy: the
# target dir keeps its own). The image is re-made only when a binary's content changed.
build_app() {
  local img="$1" bins=("$2" "${@:3}") key b src files=()
  build_app_base
  key="$(key_of "${bins[@]/#/$APP_BIN_DIR/}" "$here/$img.json" "$OUT/app-base-layer.key" <(echo "$APP_PROFILE"))"
  fresh "$img" "$key" && return 0
  for b in "${bins[@]}"; do
    src="$APP_BIN_DIR/$b"
    if [ "$APP_PROFILE" = debug ]; then
      mkdir -p "$W/bin-$img"
      objcopy --strip-debug "$src" "$W/bin-$img/$b" || die "objcopy --strip-debug $src failed"
      src="$W/bin-$img/$b"
    fi
    files+=("/usr/local/bin/$b" "$src")
  done
  binary_layer "$W/$img-layer.tar" "${files[@]}"
  finish "$img" "$key" "$here/$img.json" "$OUT/app-base-layer.tar" "$W/$img-layer.tar"
}

# APP_BINARIES[IMAGE]: "PACKAGE BIN..." of each app image (the package's main binary first).
declare -A APP_BINARIES=(
  [operator]="swappo-operator swappo-operator"
  [matchmaking]="swappo-matchmaking swappo-matchmaking swappo-matchmaking-import"
  [notifications]="swappo-notifications swappo-notifications swappo-notifications-import"
)

# build_app_binaries IMAGE...: the binaries of the given app images (APP_PROFILE) in ONE cargo
# call, so the dependencies they share are compiled once with one unified feature set (one call
# per package would resolve features per package and compile the shared crates up to three times).
build_app_binaries() {
  local img args=() words
  for img in "$@"; do
    [ -n "${APP_BINARIES[$img]:-}" ] || continue
    read -ra words <<<"${APP_BINARIES[$img]}"
    args+=(-p "${words[0]}")
    for b in "${words[@]:1}"; do args+=(--bin "$b"); done
  done
  [ "${#args[@]}" -gt 0 ] || return 0
  if [ "$APP_PROFILE" = release ]; then
    (cd "$root" && CARGO_PROFILE_RELEASE_STRIP=symbols cargo build -q --release --locked "${args[@]}") ||
      die "cargo build --release ${args[*]} failed"
  else
    (cd "$root" && cargo build -q --locked "${args[@]}") || die "cargo build ${args[*]} failed"
  fi
}

build() {
  case "$1" in
    pause | coredns | debian | rabbitmq) "build_$1" ;;
    operator | matchmaking | notifications)
      local words
      read -ra words <<<"${APP_BINARIES[$1]}"
      build_app "$1" "${words[@]:1}"
      ;;
    *) die "unknown image $1 (images: ${ALL_SET[*]})" ;;
  esac
}

# import IMAGE: into the node's containerd, unless it already holds this exact manifest.
import() {
  local ref="${IMAGE_REF[$1]}" want have
  want="$(tar -xOf "$OUT/$1.tar" index.json | jq -r '.manifests[0].digest')"
  have="$(ctr_ images ls "name==$ref" 2>/dev/null | awk 'NR == 2 { print $3 }')"
  [ "$want" = "$have" ] && return 0
  # ctr's stderr carries containerd's cgroup v1 deprecation notice: shown only on failure.
  local err
  err="$(ctr_ images import "$OUT/$1.tar" 2>&1 >/dev/null)" || die "importing $ref failed: $err"
  log "imported $ref ($want)"
}

main() {
  local do_import=0 images=() a
  for a in "$@"; do
    case "$a" in
      --import) do_import=1 ;;
      --import-if-up) if containerd_answers >/dev/null 2>&1; then do_import=1; fi ;;
      node) images+=("${NODE_SET[@]}") ;;
      app) images+=("${APP_SET[@]}") ;;
      all) images+=("${ALL_SET[@]}") ;;
      *) images+=("$a") ;;
    esac
  done
  [ "${#images[@]}" -gt 0 ] || images=("${ALL_SET[@]}")
  mkdir -p "$OUT"
  W="$(mktemp -d)"
  trap 'rm -rf "$W"' EXIT
  local img start
  build_app_binaries "${images[@]}"
  for img in "${images[@]}"; do
    start=$(date +%s)
    if ! build "$img"; then die "building image $img failed"; fi
    [ "$(($(date +%s) - start))" -lt 1 ] || log "image $img: ${IMAGE_REF[$img]} ready in $(($(date +%s) - start))s"
  done
  if [ "$do_import" = 1 ]; then
    containerd_answers >/dev/null 2>&1 || die "the node's containerd does not answer on $CONTAINERD_SOCK: run 'make cluster-up'"
    for img in "${images[@]}"; do import "$img"; done
  fi
}

main "$@"
