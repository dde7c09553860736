#!/bin/sh
# Stand-in for the redis image's docker-entrypoint.sh (the compose file calls it by that name):
# started as root for redis-server, it owns /data and drops to the redis user; anything else runs
# as given.
set -eu
if [ "${1:-}" = redis-server ] && [ "$(id -u)" = 0 ]; then
    mkdir -p /data && chown -R redis:redis /data && cd /data
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
fi
exec "$@"
