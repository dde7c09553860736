#!/bin/sh
# Build the images of the gitlab-runner DOUBLE without any image registry:
#   RUNNER_IMAGE       autogit-test/runner:<hash>         the double (entrypoint.py), like
#                      gitlab/gitlab-runner: entrypoint `gitlab-runner` (on PATH), STOPSIGNAL
#                      SIGQUIT; it claims gitlab-runner 17.11.3
#   RUNNER_IMAGE_V19   autogit-test/runner:<hash>-v19.3.0 the same double claiming 19.3.0 (the
#                      short token and image platform rules of that version)
#   HELPER_IMAGE       autogit-test/runner-helper:<hash>  what the docker executor's helper
#                      (predefined) container runs: Debian minbase with git and ca-certificates
#   JOB_IMAGE          autogit-test/job:<hash>            a Debian minbase job image (amd64)
#   JOB_IMAGE_ARM64    autogit-test/job:<hash>-arm64      single-platform job images whose code
#   JOB_IMAGE_RISCV64  autogit-test/job:<hash>-riscv64    is foreign (a static busybox as /bin),
#                      run by the host's binfmt_misc (F flag) through QEMU
#
# The real gitlab-runner cannot be built here (the Go module proxy refuses it and its gitlab.com
# dependencies: docs/runners/real-runner.md); the double reproduces its behaviour (entrypoint.py).
#
# Caching: tags are hashes of this script (and of the wrapper for the runner image); if the
# images exist nothing is done. Rootfs tarballs are cached under $AUTOGIT_TEST_CACHE (default
# /var/cache/autogit-test) keyed by this script's hash. Two sessions may run it at once: flock.
#
# Needs: root, docker, debootstrap, dpkg-deb, apt-get, flock, and Debian's mirror.
# Prints progress on stderr; on stdout one KEY=image line per image, then the runner image alone.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${AUTOGIT_TEST_CACHE:-/var/cache/autogit-test}
MIRROR=${AUTOGIT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# riscv64 is an official Debian architecture from trixie on; take both foreign busyboxes there.
FOREIGN_SUITE=trixie
FOREIGN_ARCHES="arm64 riscv64"
PACKAGES="python3,python3-requests,git,ca-certificates"
# The Docker SDK the double drives the engine with (Apache-2.0); Debian 12's python3-docker (5.0)
# cannot create a container for another platform.
DOCKER_SDK_WHEEL="docker==7.1.0"

log() { echo "build.sh: $*" >&2; }

if [ -n "${PIP:-}" ]; then :
elif [ -x "$HERE/../../.venv/bin/pip" ]; then PIP="$HERE/../../.venv/bin/pip"
else PIP="python3 -m pip"; fi

script_hash=$(cat "$HERE/build.sh" "$HERE/image_archive.py" | sha256sum | cut -c1-16)
image_hash=$(cat "$HERE/build.sh" "$HERE/entrypoint.py" "$HERE/config_types.tsv" | sha256sum | cut -c1-16)
TAG="autogit-test/runner:$image_hash"
TAG_V19="$TAG-v19.3.0"
HELPER="autogit-test/runner-helper:$script_hash"
JOB="autogit-test/job:$script_hash"

all_present() {
    for image in "$TAG" "$TAG_V19" "$HELPER" "$JOB" $(for a in $FOREIGN_ARCHES; do echo "$JOB-$a"; done); do
        docker image inspect "$image" >/dev/null 2>&1 || return 1
    done
}
report() {
    echo "RUNNER_IMAGE=$TAG"
    echo "RUNNER_IMAGE_V19=$TAG_V19"
    echo "HELPER_IMAGE=$HELPER"
    echo "JOB_IMAGE=$JOB"
    for a in $FOREIGN_ARCHES; do echo "JOB_IMAGE_$(echo "$a" | tr a-z A-Z)=$JOB-$a"; done
    echo "$TAG"
}

if all_present; then
    log "cached images ($TAG)"
    report
    exit 0
fi

mkdir -p "$CACHE"
# test sessions may build at once: one builds, the others wait and then find the image
exec 9>"$CACHE/runner-build.lock"
flock 9
if all_present; then
    log "images built meanwhile ($TAG)"
    report
    exit 0
fi
ROOTFS_TAR="$CACHE/runner-rootfs-$script_hash.tar"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/autogit-runner-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

if [ ! -s "$ROOTFS_TAR" ]; then
    start=$(date +%s)
    ROOT="$WORK/rootfs"
    log "debootstrap $SUITE ($PACKAGES) into $ROOT"
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -n 30 "$WORK/debootstrap.log" >&2; exit 1; }
    rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* "$ROOT"/usr/share/doc/* \
        "$ROOT"/usr/share/man/* "$ROOT"/usr/share/locale/*

    log "fetching static busybox for: $FOREIGN_ARCHES ($FOREIGN_SUITE)"
    APT="$WORK/apt"
    mkdir -p "$APT/lists/partial" "$APT/archives/partial" "$APT/debs"
    arches=$(echo "$FOREIGN_ARCHES" | tr ' ' ',')
    echo "deb [arch=$arches signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $FOREIGN_SUITE main" >"$APT/sources.list"
    set -- -o Dir::Etc::SourceList="$APT/sources.list" -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::State::Lists="$APT/lists" -o Dir::Cache::Archives="$APT/archives" \
        -o Dir::State::Status=/dev/null -o APT::Architectures="$arches" \
        -o APT::Architecture=arm64 -o Acquire::Languages=none -o Debug::NoLocking=1 -o APT::Sandbox::User=root
    apt-get "$@" -qq update >&2
    for arch in $FOREIGN_ARCHES; do
        (cd "$APT/debs" && apt-get "$@" -qq download "busybox-static:$arch" >&2)
        deb=$(ls "$APT"/debs/busybox-static_*_"$arch".deb)
        dpkg-deb -x "$deb" "$WORK/bb-$arch"
        bin="$WORK/bb-$arch/usr/bin/busybox"  # /bin/busybox before usrmerge
        [ -f "$bin" ] || bin="$WORK/bb-$arch/bin/busybox"
        # a job image of that architecture: busybox as /bin/busybox and its applets
        FROOT="$WORK/job-$arch"
        install -D -m 0755 "$bin" "$FROOT/bin/busybox"
        for applet in sh ash uname echo cat ls mkdir rm cp mv test [ true false sleep env id pwd printf grep sed head tail wc date; do
            ln -s busybox "$FROOT/bin/$applet"
        done
        mkdir -p "$FROOT/tmp" "$FROOT/builds" "$FROOT/root" "$FROOT/etc"
        echo "root:x:0:0:root:/root:/bin/sh" >"$FROOT/etc/passwd"
        echo "root:x:0:" >"$FROOT/etc/group"
        tar --numeric-owner -C "$FROOT" -cf "$CACHE/job-$arch-$script_hash.tar" .
    done

    log "installing $DOCKER_SDK_WHEEL (no deps) into the rootfs"
    $PIP download -q --no-deps -d "$WORK/wheels" "$DOCKER_SDK_WHEEL" >&2
    $PIP install -q --no-deps --no-compile --target "$ROOT/opt/gitlab-runner-double/site" "$WORK"/wheels/*.whl >&2
    mkdir -p "$ROOT/etc/gitlab-runner" "$ROOT/builds"

    tar --numeric-owner -C "$ROOT" -cf "$ROOTFS_TAR.tmp" .
    mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
    rm -rf "$ROOT"
    log "rootfs cached at $ROOTFS_TAR in $(( $(date +%s) - start )) s"
fi

BASE="autogit-test/runner-rootfs:$script_hash"
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    log "importing $ROOTFS_TAR as $BASE"
    docker import "$ROOTFS_TAR" "$BASE" >/dev/null
fi
# Debian minbase with git: the helper and the native job image are this rootfs too.
docker tag "$BASE" "$HELPER"
docker tag "$BASE" "$JOB"
for arch in $FOREIGN_ARCHES; do
    if ! docker image inspect "$JOB-$arch" >/dev/null 2>&1; then
        tar="$CACHE/job-$arch-$script_hash.tar"
        [ -s "$tar" ] || { log "missing $tar: remove $ROOTFS_TAR and run again"; exit 1; }
        log "importing $tar as $JOB-$arch (linux/$arch)"
        python3 "$HERE/image_archive.py" "$tar" "linux/$arch" "$JOB-$arch" | docker load >/dev/null
    fi
done

# `docker import --change` cannot set STOPSIGNAL: add the wrapper with a local build FROM the
# imported rootfs (the classic builder: nothing is pulled).
mkdir -p "$WORK/ctx"
cp "$HERE/entrypoint.py" "$WORK/ctx/gitlab-runner"
chmod 0755 "$WORK/ctx/gitlab-runner"  # COPY keeps the mode: `gitlab-runner` runs from PATH
cp "$HERE/config_types.tsv" "$WORK/ctx/config_types.tsv"
cat >"$WORK/ctx/Dockerfile" <<EOF
FROM $BASE
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PYTHONPATH=/opt/gitlab-runner-double/site PYTHONUNBUFFERED=1
COPY gitlab-runner /usr/bin/gitlab-runner
COPY config_types.tsv /usr/share/gitlab-runner-double/config_types.tsv
WORKDIR /builds
LABEL org.opencontainers.image.title="autogit-test-gitlab-runner-double" autogit.test.double="gitlab-runner"
STOPSIGNAL SIGQUIT
ENTRYPOINT ["gitlab-runner"]
CMD ["run"]
EOF
log "building $TAG"
DOCKER_BUILDKIT=0 docker build -q -t "$TAG" "$WORK/ctx" >/dev/null 2>"$WORK/build.log" \
    || { cat "$WORK/build.log" >&2; exit 1; }
printf 'FROM %s\nENV GITLAB_RUNNER_DOUBLE_VERSION=19.3.0\n' "$TAG" >"$WORK/ctx/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$TAG_V19" "$WORK/ctx" >/dev/null 2>"$WORK/build.log" \
    || { cat "$WORK/build.log" >&2; exit 1; }
log "built $TAG and $TAG_V19"
report
