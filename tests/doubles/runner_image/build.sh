#!/bin/sh
# Build the runner DOUBLE image `autogit-test/runner:<hash>` without any image registry.
#
# The image is a test double of a GitLab runner container: a Debian minbase rootfs with
# python3, PyPI's gitlab-python-runner (MIT; its protocol client talks to GitLab) and a small
# wrapper (entrypoint.py, beside this script) that reads /etc/gitlab-runner/config.toml, polls
# for jobs and runs them with /bin/sh, or with a static foreign busybox (arm64, riscv64) that the
# host's binfmt_misc (F flag) runs through QEMU when the job's image asks for that platform.
#
# Caching: the image tag is a hash of this script and the wrapper; if the image exists nothing is
# done. The rootfs tarball (debootstrap + foreign busybox + wheels) is cached under
# $AUTOGIT_TEST_CACHE (default /var/cache/autogit-test), keyed by this script's hash, and imported
# once as autogit-test/runner-rootfs:<that hash>; the wrapper is added by a local `docker build`.
#
# Needs: root, docker, debootstrap, dpkg-deb, apt-get, flock, a pip, and Debian's mirror and PyPI.
# Prints progress on stderr and the image tag as the last line on stdout.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${AUTOGIT_TEST_CACHE:-/var/cache/autogit-test}
MIRROR=${AUTOGIT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# riscv64 is an official Debian architecture from trixie on; take both foreign busyboxes there.
FOREIGN_SUITE=trixie
FOREIGN_ARCHES="arm64 riscv64"
RUNNER_WHEEL="gitlab-python-runner==14.3.20"
# gitlab-python-runner imports two helper modules (gitlabemu.helpers, gitlabemu.ansi) from
# gitlab-emulator; only those are used, so it is installed without its dependencies.
EMULATOR_WHEEL="gitlab-emulator==16.3.4"
PACKAGES="python3,python3-requests,python3-yaml,python3-requests-toolbelt"

log() { echo "build.sh: $*" >&2; }

if [ -n "${PIP:-}" ]; then :
elif [ -x "$HERE/../../../.venv/bin/pip" ]; then PIP="$HERE/../../../.venv/bin/pip"
else PIP="python3 -m pip"; fi

script_hash=$(sha256sum "$HERE/build.sh" | cut -c1-16)
image_hash=$(cat "$HERE/build.sh" "$HERE/entrypoint.py" | sha256sum | cut -c1-16)
TAG="autogit-test/runner:$image_hash"

if docker image inspect "$TAG" >/dev/null 2>&1; then
    log "cached image $TAG"
    echo "$TAG"
    exit 0
fi

mkdir -p "$CACHE"
# test sessions may build at once: one builds, the others wait and then find the image
exec 9>"$CACHE/runner-build.lock"
flock 9
if docker image inspect "$TAG" >/dev/null 2>&1; then
    log "image $TAG built meanwhile"
    echo "$TAG"
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
        install -D -m 0755 "$bin" "$ROOT/opt/foreign/$arch/busybox"
    done

    log "installing $RUNNER_WHEEL and $EMULATOR_WHEEL (no deps) into the rootfs"
    $PIP download -q --no-deps -d "$WORK/wheels" "$RUNNER_WHEEL" "$EMULATOR_WHEEL" >&2
    $PIP install -q --no-deps --no-compile --target "$ROOT/opt/autogit-double/site" "$WORK"/wheels/*.whl >&2
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

# `docker import --change` cannot set STOPSIGNAL: add the wrapper and the config with a local
# build FROM the imported rootfs (the classic builder: nothing is pulled).
mkdir -p "$WORK/ctx"
cp "$HERE/entrypoint.py" "$WORK/ctx/entrypoint.py"
cat >"$WORK/ctx/Dockerfile" <<EOF
FROM $BASE
ENV PYTHONPATH=/opt/autogit-double/site PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY entrypoint.py /opt/autogit-double/entrypoint.py
WORKDIR /builds
LABEL org.opencontainers.image.title="autogit-test-runner-double" autogit.test.double="runner"
STOPSIGNAL SIGQUIT
ENTRYPOINT ["/usr/bin/python3", "-u", "/opt/autogit-double/entrypoint.py"]
EOF
log "building $TAG"
DOCKER_BUILDKIT=0 docker build -q -t "$TAG" "$WORK/ctx" >/dev/null 2>"$WORK/build.log" \
    || { cat "$WORK/build.log" >&2; exit 1; }
log "built $TAG"
echo "$TAG"
