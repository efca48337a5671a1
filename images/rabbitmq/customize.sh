#!/usr/bin/env bash
# customize.sh ROOTFS FILES-DIR: mmdebstrap's customize hook for swappo.local/rabbitmq (run on
# the host by images/build.sh; every path is under ROOTFS). Lays the root filesystem out like the
# official `rabbitmq` image.
set -euo pipefail
r="$1" d="$2"
# No baked cookie: RabbitMQ makes one at first start, the operator mounts its own.
rm -f "$r/var/lib/rabbitmq/.erlang.cookie"
mkdir -p "$r/var/lib/rabbitmq" "$r/etc/rabbitmq/conf.d" "$r/var/log/rabbitmq"
# root's cookie is the rabbitmq user's, so CLI tools run as root in the container see it.
ln -sf /var/lib/rabbitmq/.erlang.cookie "$r/root/.erlang.cookie"
echo '[rabbitmq_management,rabbitmq_prometheus].' >"$r/etc/rabbitmq/enabled_plugins"
install -m 0644 "$d/10-defaults.conf" "$r/etc/rabbitmq/conf.d/10-defaults.conf"
install -m 0755 "$d/docker-entrypoint.sh" "$r/usr/local/bin/docker-entrypoint.sh"
# Debian's env file points RabbitMQ at /etc/rabbitmq/rabbitmq-env.conf settings the official
# image does not have; the official layout reads only rabbitmq.conf and conf.d.
rm -f "$r/etc/rabbitmq/rabbitmq-env.conf"
chown -R 999:999 "$r/var/lib/rabbitmq" "$r/etc/rabbitmq" "$r/var/log/rabbitmq"
chmod 1777 "$r/var/lib/rabbitmq" "$r/etc/rabbitmq" "$r/etc/rabbitmq/conf.d" "$r/var/log/rabbitmq"
# apt's lists and caches are not needed at run time.
rm -rf "$r/var/lib/apt/lists/"* "$r/var/cache/apt/"*.bin
