#!/usr/bin/env bash
# app-base.sh ROOTFS: mmdebstrap's extract hook for the services' run base (images/build.sh; the
# extract variant runs no customize or essential hook): the users and files
# distroless/cc-debian12 has, so the binaries run as its `nonroot` (65532).
set -euo pipefail
r="$1"
mkdir -p "$r/etc" "$r/tmp" "$r/home/nonroot"
chmod 1777 "$r/tmp"
cat >"$r/etc/passwd" <<'P'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
P
cat >"$r/etc/group" <<'G'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
G
chown 65532:65532 "$r/home/nonroot"
echo 'hosts: files dns' >"$r/etc/nsswitch.conf"
# The extract variant runs no maintainer script: the CA bundle is made here.
if [ -d "$r/usr/share/ca-certificates" ]; then
  mkdir -p "$r/etc/ssl/certs"
  find "$r/usr/share/ca-certificates" -name '*.crt' -print0 | sort -z | xargs -0 cat >"$r/etc/ssl/certs/ca-certificates.crt"
fi
# No package manager state in the image.
rm -rf "$r/var/lib/dpkg" "$r/var/lib/apt" "$r/var/cache/apt" "$r/usr/share/doc"
