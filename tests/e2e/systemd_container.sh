#!/usr/bin/env bash
# A Debian 12 container that boots a real systemd as PID 1, for testing the .deb end to end.
#
#   systemd_container.sh image          build (or reuse) the image; prints its tag
#   systemd_container.sh start [DIR]    boot a container (DIR mounted read-only at /debs); prints its id
#   systemd_container.sh stop ID        remove it
#
# The rootfs is a debootstrap --variant=minbase of bookworm with $INCLUDE pre-installed, so that
# `apt install ./autogit-agent_*.deb` needs no network (python3 is in the list). It is cached as
# $CACHE_DIR/bookworm-systemd-<key>.tar and imported as autogit-test/bookworm-systemd:<key>;
# <key> hashes everything the rootfs depends on, so changing the list makes a new one.
#
# Why these `docker run` flags (docs/shared research, addendum "systemd as PID 1"): --privileged
# fails on hosts whose own bounding set lacks capabilities; systemd needs SYS_ADMIN (mounts),
# a writable cgroup tree, tmpfs /run, and container=docker so it skips what a container can't do.
set -euo pipefail

SUITE=bookworm
MIRROR=${AUTOGIT_TEST_MIRROR:-http://deb.debian.org/debian}
INCLUDE=systemd-sysv,dbus,procps,ca-certificates,curl,python3,util-linux
CACHE_DIR=${AUTOGIT_TEST_CACHE:-/var/cache/autogit-test}
KEY=$(printf '%s\n' "$SUITE" "$MIRROR" "$INCLUDE" "v1" | sha256sum | cut -c1-12)
IMAGE=autogit-test/bookworm-systemd:$KEY
TARBALL=$CACHE_DIR/bookworm-systemd-$KEY.tar

log() { echo "systemd_container: $*" >&2; }

ensure_image() {
  if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE"; return
  fi
  if [ ! -s "$TARBALL" ]; then
    command -v debootstrap >/dev/null || { log "debootstrap is not installed (scripts/dev-setup)"; exit 1; }
    mkdir -p "$CACHE_DIR"
    local root; root=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$root'" EXIT
    log "debootstrap $SUITE ($INCLUDE) into $root"
    debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1 \
      || { tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
    rm -f "$root.log"
    # Same sources as a normal install, so `apt-get install` of anything extra works inside.
    printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$root/etc/apt/sources.list"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*_Packages
    # No getty on a console nobody reads; quieter and faster boots.
    ln -sf /dev/null "$root/etc/systemd/system/console-getty.service"
    ln -sf /dev/null "$root/etc/systemd/system/getty@tty1.service"
    tar -C "$root" -cf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL"
    rm -rf "$root"; trap - EXIT
  fi
  log "docker import $TARBALL as $IMAGE"
  docker import -c 'CMD ["/sbin/init"]' -c 'ENV container=docker' \
    "$TARBALL" "$IMAGE" >/dev/null
  echo "$IMAGE"
}

start() {
  local debs=${1:-} image; image=$(ensure_image)
  local mounts=()
  [ -n "$debs" ] && mounts=(-v "$(realpath "$debs"):/debs:ro")
  local cid
  cid=$(docker run -d --label autogit-test=systemd --stop-signal SIGRTMIN+3 \
    --cap-add SYS_ADMIN --cap-add NET_ADMIN --cap-add SYS_PTRACE \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --tmpfs /run --tmpfs /run/lock --tmpfs /tmp \
    -v /sys/fs/cgroup:/sys/fs/cgroup:rw -e container=docker \
    "${mounts[@]}" "$image" /sbin/init)
  # is-system-running answers "starting" while booting, then "running" (or "degraded").
  local state=""
  for _ in $(seq 1 120); do
    state=$(docker exec "$cid" systemctl is-system-running 2>/dev/null || true)
    case "$state" in running|degraded) break ;; esac
    sleep 0.5
  done
  case "$state" in
    running|degraded) echo "$cid" ;;
    *) log "systemd did not come up (state: ${state:-none})"; docker logs "$cid" 2>&1 | tail -20 >&2
       docker rm -f "$cid" >/dev/null; exit 1 ;;
  esac
}

case "${1:-}" in
  image) ensure_image ;;
  start) start "${2:-}" ;;
  stop) docker rm -f "${2:?container id}" >/dev/null ;;
  key) echo "$KEY" ;;
  *) echo "usage: $0 image|start [DEB_DIR]|stop ID|key" >&2; exit 64 ;;
esac
