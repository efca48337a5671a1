#!/usr/bin/env bash
# Builds the local Kubernetes control plane's binaries from the Go module proxy, at pinned
# versions, into a cache outside the repo ($SWAPPO_TESTBIN = $SWAPPO_CACHE/testbin/<k8s version>):
#   etcd                                        hack/testplane/etcd (wrapper module, go.sum pinned)
#   kube-apiserver, kube-controller-manager,
#   kube-scheduler, kubectl, kubelet,
#   kube-proxy                                  hack/testplane/k8s  (wrapper module, go.sum pinned)
#   kwok, helm, crictl                          `go install module@version`
#   containerd, containerd-shim-runc-v2, ctr    `go install module@version` (the real node's runtime)
#   coredns                                     hack/testplane/coredns (trimmed main, go.sum pinned)
#   pause                                       Kubernetes' own build/pause/linux/pause.c, static (gcc)
# The real node's Debian parts (runc, CNI plugins, nftables, mmdebstrap) are installed by
# scripts/node-deps.sh, not built.
# Each component has a stamp file recording what it was built from (versions, wrapper go.mod and
# go.sum, Go version, flags); a component whose stamp matches is not rebuilt, so a second run
# only checks. Prints every binary's version at the end.
#
# Usage: testenv-bins.sh [COMPONENT...]   (default: all; components: etcd kwok helm k8s
#        containerd crictl coredns pause)
# Options: --check-staging  only compare the k8s wrapper's replace list with the staging modules
#                           of the real k8s.io/kubernetes go.mod, then exit.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"

KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
# containerd 2.x: Kubernetes 1.36+ needs it (Debian bookworm ships 1.6). 2.4.2 is the newest on
# the Go module proxy and the version the node was verified with (../shared notes, real-node).
CONTAINERD_VERSION=v2.4.2
CRICTL_VERSION=v1.37.0
# The pause binary's version string (pause -v); the image name is pinned in scripts/node-lib.sh.
PAUSE_VERSION=v3.10.2-swappo
K8S_MOD="$root/hack/testplane/k8s"
ETCD_MOD="$root/hack/testplane/etcd"
COREDNS_MOD="$root/hack/testplane/coredns"

# Never download a toolchain, build static binaries, and build only from the committed go.sum.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false"
# Two cores: at most two packages compile at once. Linking kube-apiserver peaks around 2-3 GiB,
# so two parallel jobs stay far below the machine's 24 GiB even next to cargo.
GO_PARALLEL="${SWAPPO_GO_PARALLEL:-2}"

command -v go >/dev/null 2>&1 || die "go is not installed (Go >= 1.26 is needed: the modules declare go 1.26.0)"
go_version="$(go env GOVERSION)"
case "$go_version" in
  go1.2[6-9]* | go1.[3-9][0-9]*) ;;
  *) die "Go >= 1.26 is needed (the Kubernetes v1.37 modules declare go 1.26.0); found $go_version" ;;
esac

# Version stamp for the Kubernetes binaries: without it `--version` says v0.0.0-master and
# the apiserver's /version has empty major/minor (hack/lib/version.sh sets the same variables).
k8s_ldflags() {
  local v="$SWAPPO_K8S_VERSION" minor p flags="-s -w"
  minor="$(echo "$v" | cut -d. -f2)"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  echo "$flags"
}

# The staging modules of the real k8s.io/kubernetes go.mod must all be replaced in the wrapper.
check_staging() {
  local mod want have missing
  mod="$(cd "$K8S_MOD" && go mod download -json "k8s.io/kubernetes@$SWAPPO_K8S_VERSION" | jq -r .GoMod)"
  want="$(sed -n 's|^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*|\1|p' "$mod" | sort)"
  have="$(cd "$K8S_MOD" && go mod edit -json | jq -r '.Replace[].Old.Path' | sort)"
  missing="$(comm -23 <(echo "$want") <(echo "$have"))"
  [ -z "$missing" ] || die "hack/testplane/k8s/go.mod lacks replaces for: ${missing//$'\n'/ }"
  grep -q "k8s.io/kubernetes $SWAPPO_K8S_VERSION" "$K8S_MOD/go.mod" ||
    die "hack/testplane/k8s/go.mod does not require k8s.io/kubernetes $SWAPPO_K8S_VERSION"
  log "k8s wrapper replaces all $(echo "$want" | wc -l) staging modules of k8s.io/kubernetes $SWAPPO_K8S_VERSION"
}

# stamp_key COMPONENT PARTS...: what a component was built from, one line.
stamp_key() { printf '%s\n' "$@" "$go_version" "GOFLAGS=$GOFLAGS CGO_ENABLED=$CGO_ENABLED" | sha256sum | cut -d' ' -f1; }

# up_to_date COMPONENT KEY BINARIES...: the stamp matches and every binary is there.
up_to_date() {
  local comp="$1" key="$2" b; shift 2
  [ "$(cat "$SWAPPO_TESTBIN/.stamp-$comp" 2>/dev/null)" = "$key" ] || return 1
  for b in "$@"; do [ -x "$SWAPPO_TESTBIN/$b" ] || return 1; done
}

built=()
timed_build() {
  local comp="$1" key="$2" start; shift 2
  start=$(date +%s)
  log "building $comp (this is slow the first time)"
  rm -f "$SWAPPO_TESTBIN/.stamp-$comp"
  "$@"
  echo "$key" >"$SWAPPO_TESTBIN/.stamp-$comp"
  built+=("$comp in $(($(date +%s) - start))s")
}

build_k8s() {
  check_staging
  # No build tags (upstream's selinux,notest,...): the same flags for all six keep one package
  # cache, so adding a binary here relinks the others instead of recompiling them.
  (cd "$K8S_MOD" && go build -p "$GO_PARALLEL" -trimpath -ldflags "$(k8s_ldflags)" -o "$SWAPPO_TESTBIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
}

build_containerd() {
  local m=github.com/containerd/containerd/v2
  GOBIN="$SWAPPO_TESTBIN" GOFLAGS=-buildvcs=false go install -p "$GO_PARALLEL" -trimpath \
    -ldflags "-s -w -X $m/version.Version=$CONTAINERD_VERSION" \
    "$m/cmd/containerd@$CONTAINERD_VERSION" "$m/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
    "$m/cmd/ctr@$CONTAINERD_VERSION"
}

build_crictl() {
  GOBIN="$SWAPPO_TESTBIN" GOFLAGS=-buildvcs=false go install -p "$GO_PARALLEL" -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
    "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
}

build_coredns() {
  (cd "$COREDNS_MOD" && go build -p "$GO_PARALLEL" -trimpath -ldflags "-s -w" -o "$SWAPPO_TESTBIN/coredns" .)
}

# pause.c from the k8s.io/kubernetes module the wrapper pins (only its source is downloaded).
pause_source() {
  local dir
  dir="$(cd "$K8S_MOD" && go mod download -json "k8s.io/kubernetes@$SWAPPO_K8S_VERSION" | jq -r .Dir)"
  echo "$dir/build/pause/linux/pause.c"
}

build_pause() {
  command -v gcc >/dev/null 2>&1 || die "gcc is needed for the pause binary (Debian: gcc, libc6-dev)"
  gcc -Os -Wall -Werror -static -DVERSION="$PAUSE_VERSION" -o "$SWAPPO_TESTBIN/pause" "$(pause_source)"
  strip "$SWAPPO_TESTBIN/pause"
}

build_etcd() {
  (cd "$ETCD_MOD" && go build -p "$GO_PARALLEL" -trimpath -ldflags "-s -w" -o "$SWAPPO_TESTBIN/etcd" go.etcd.io/etcd/server/v3)
}

build_kwok() {
  GOBIN="$SWAPPO_TESTBIN" GOFLAGS=-buildvcs=false go install -p "$GO_PARALLEL" -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
}

build_helm() {
  GOBIN="$SWAPPO_TESTBIN" GOFLAGS=-buildvcs=false go install -p "$GO_PARALLEL" -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

print_versions() {
  local b="$SWAPPO_TESTBIN"
  log "binaries in $b:"
  printf '  %-24s %s\n' \
    etcd "$("$b/etcd" --version | head -1)" \
    kube-apiserver "$("$b/kube-apiserver" --version)" \
    kube-controller-manager "$("$b/kube-controller-manager" --version)" \
    kube-scheduler "$("$b/kube-scheduler" --version)" \
    kubectl "$("$b/kubectl" version --client 2>/dev/null | head -1)" \
    kwok "$("$b/kwok" --version 2>&1 | head -1)" \
    helm "$("$b/helm" version --short)" >&2
  # The node's binaries, where built (a partial run may have built only some).
  local n
  for n in kubelet kube-proxy containerd crictl coredns pause; do
    [ -x "$b/$n" ] || continue
    case "$n" in
      containerd) printf '  %-24s %s\n' "$n" "$("$b/$n" --version)" ;;
      coredns) printf '  %-24s %s\n' "$n" "$("$b/$n" -version | head -1)" ;;
      pause) printf '  %-24s %s\n' "$n" "$("$b/$n" -v 2>&1)" ;;
      *) printf '  %-24s %s\n' "$n" "$("$b/$n" --version 2>&1 | head -1)" ;;
    esac
  done >&2
}

# wanted COMPONENT: no component was named on the command line, or this one was.
wanted() { [ "${#only[@]}" -eq 0 ] || [[ " ${only[*]} " == *" $1 "* ]]; }

main() {
  if [ "${1:-}" = --check-staging ]; then check_staging; return; fi
  only=("$@")
  mkdir -p "$SWAPPO_TESTBIN"
  local k8s_key etcd_key kwok_key helm_key containerd_key crictl_key coredns_key pause_key
  k8s_key="$(stamp_key k8s "$SWAPPO_K8S_VERSION" "$(k8s_ldflags)" "$(cat "$K8S_MOD/go.mod" "$K8S_MOD/go.sum")")"
  etcd_key="$(stamp_key etcd "$(cat "$ETCD_MOD/go.mod" "$ETCD_MOD/go.sum")")"
  kwok_key="$(stamp_key kwok "$KWOK_VERSION")"
  helm_key="$(stamp_key helm "$HELM_VERSION")"
  containerd_key="$(stamp_key containerd "$CONTAINERD_VERSION")"
  crictl_key="$(stamp_key crictl "$CRICTL_VERSION")"
  coredns_key="$(stamp_key coredns "$(cat "$COREDNS_MOD/go.mod" "$COREDNS_MOD/go.sum" "$COREDNS_MOD/main.go")")"
  pause_key="$(stamp_key pause "$SWAPPO_K8S_VERSION" "$PAUSE_VERSION" "$(gcc --version 2>/dev/null | head -1)")"

  if wanted etcd; then up_to_date etcd "$etcd_key" etcd || timed_build etcd "$etcd_key" build_etcd; fi
  if wanted kwok; then up_to_date kwok "$kwok_key" kwok || timed_build kwok "$kwok_key" build_kwok; fi
  if wanted helm; then up_to_date helm "$helm_key" helm || timed_build helm "$helm_key" build_helm; fi
  if wanted k8s; then
    up_to_date k8s "$k8s_key" kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy ||
      timed_build k8s "$k8s_key" build_k8s
  fi
  if wanted containerd; then
    up_to_date containerd "$containerd_key" containerd containerd-shim-runc-v2 ctr ||
      timed_build containerd "$containerd_key" build_containerd
  fi
  if wanted crictl; then up_to_date crictl "$crictl_key" crictl || timed_build crictl "$crictl_key" build_crictl; fi
  if wanted coredns; then up_to_date coredns "$coredns_key" coredns || timed_build coredns "$coredns_key" build_coredns; fi
  if wanted pause; then up_to_date pause "$pause_key" pause || timed_build pause "$pause_key" build_pause; fi

  if [ "${#built[@]}" -eq 0 ]; then
    log "all binaries up to date (nothing rebuilt)"
  else
    log "built: ${built[*]}"
  fi
  if [ "${#only[@]}" -eq 0 ]; then print_versions; fi
}

main "$@"
