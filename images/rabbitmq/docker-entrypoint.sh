#!/bin/bash
# The entrypoint of swappo.local/rabbitmq (images/build.sh), with the environment contract of the
# official `rabbitmq` image's docker-entrypoint.sh (3.9+):
#   - started as root with a rabbitmq* command: the data directory is given to the rabbitmq user
#     (999) and the command re-executed as that user;
#   - the RABBITMQ_* variables that 3.9 removed (TLS and memory settings, now in rabbitmq.conf)
#     are refused with a clear message;
#   - a fully qualified hostname turns on RABBITMQ_USE_LONGNAME;
# everything else (RABBITMQ_ERLANG_COOKIE, RABBITMQ_DEFAULT_USER/PASS, RABBITMQ_NODENAME, ...) is
# read by RabbitMQ itself. Logs go to stdout (conf.d/10-defaults.conf: log.console = true).
set -euo pipefail

if [[ "${1:-}" == rabbitmq* ]] && [ "$(id -u)" = 0 ]; then
  if [ "$1" = rabbitmq-server ]; then
    find /var/lib/rabbitmq \! -user rabbitmq -exec chown rabbitmq '{}' +
  fi
  exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "${BASH_SOURCE[0]}" "$@"
fi

deprecated=()
for var in RABBITMQ_DEFAULT_PASS_FILE RABBITMQ_DEFAULT_USER_FILE RABBITMQ_MANAGEMENT_SSL_CACERTFILE \
  RABBITMQ_MANAGEMENT_SSL_CERTFILE RABBITMQ_MANAGEMENT_SSL_DEPTH RABBITMQ_MANAGEMENT_SSL_FAIL_IF_NO_PEER_CERT \
  RABBITMQ_MANAGEMENT_SSL_KEYFILE RABBITMQ_MANAGEMENT_SSL_VERIFY RABBITMQ_SSL_CACERTFILE \
  RABBITMQ_SSL_CERTFILE RABBITMQ_SSL_DEPTH RABBITMQ_SSL_FAIL_IF_NO_PEER_CERT RABBITMQ_SSL_KEYFILE \
  RABBITMQ_SSL_VERIFY RABBITMQ_VM_MEMORY_HIGH_WATERMARK; do
  if [ -n "${!var:-}" ]; then deprecated+=("$var"); fi
done
if [ "${#deprecated[@]}" -gt 0 ]; then
  echo "error: ${deprecated[*]} set but deprecated (RabbitMQ 3.9 removed them):" \
    "put the settings in /etc/rabbitmq/conf.d/*.conf instead" >&2
  exit 1
fi

if [ "$(hostname)" != "$(hostname -s)" ]; then
  export RABBITMQ_USE_LONGNAME=true
fi

exec "$@"
