"""Container images for the test cluster, made without any registry (see
docs/installation/kubernetes.md): a rootfs tarball becomes a `docker save` archive, which the
cluster's containerd imports with `ctr -n k8s.io images import`. Pods then use
`imagePullPolicy: Never`.

- the pause image: the sandbox's only program, `pause` from scripts/k8s-build;
- a busybox image: the host's static busybox (Debian's busybox-static) and its applets, enough
  for a real workload pod (sh, sleep, echo, cat, wget).
"""

from __future__ import annotations

import importlib.util
import sys
import io
import tarfile
from pathlib import Path

# The gitlab-runner double's image tooling ships as package data, not a module: load it by path.
_spec = importlib.util.spec_from_file_location("image_archive", Path(__file__).resolve().parents[2] / "gitlab_double/runner_image/image_archive.py")
assert _spec and _spec.loader
_image_archive = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_image_archive)
docker_archive = _image_archive.docker_archive
_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PAUSE_IMAGE = "autogit.local/pause:1"
BUSYBOX_IMAGE = "autogit.local/busybox:1"
BUSYBOX_APPLETS = ("sh", "sleep", "echo", "cat", "ls", "env", "id", "true", "false", "wget", "nc", "printf", "uname", "grep", "test", "date")


def _layer(files: dict[str, tuple[bytes, int]], links: dict[str, str], dirs: tuple[str, ...]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as layer:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            layer.addfile(info)
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            layer.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            layer.addfile(info)
    return out.getvalue()


def pause_archive(pause_binary: Path) -> bytes:
    layer = _layer({"pause": (pause_binary.read_bytes(), 0o755)}, {}, ())
    return bytes(docker_archive(layer, PAUSE_IMAGE, "linux/amd64", {"Entrypoint": ["/pause"], "Env": [_PATH]}))


def busybox_archive(busybox: Path = Path("/bin/busybox")) -> bytes:
    files = {
        "bin/busybox": (busybox.read_bytes(), 0o755),
        "etc/passwd": (b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n", 0o644),
        "etc/group": (b"root:x:0:\nnogroup:x:65534:\n", 0o644),
    }
    links = {f"bin/{applet}": "busybox" for applet in BUSYBOX_APPLETS}
    layer = _layer(files, links, ("bin", "etc", "tmp", "root"))
    return bytes(docker_archive(layer, BUSYBOX_IMAGE, "linux/amd64", {"Cmd": ["/bin/sh"], "Env": [_PATH]}))


def oci_archive(name: str, images: list[tuple[str, list[bytes], dict[str, object]]]) -> bytes:
    """A multi-platform image as an OCI image-layout tar (what `ctr images import --all-platforms`
    reads): one manifest per (platform, layers, image config), under one index named `name`."""
    import hashlib
    import json

    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    manifests = []
    for platform, layers, image_config in images:
        os_name, arch, *variant = platform.split("/")
        config: dict[str, object] = {"architecture": arch, "os": os_name, "config": image_config,
                                     "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]}}  # fmt: skip
        if variant:
            config["variant"] = variant[0]
        manifest = {
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(json.dumps(config, sort_keys=True).encode())},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **blob(layer)} for layer in layers],
        }  # fmt: skip
        plat = {"architecture": arch, "os": os_name} | ({"variant": variant[0]} if variant else {})
        manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", **blob(json.dumps(manifest).encode()), "platform": plat})
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}
    top = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
           "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", **blob(json.dumps(index).encode()),
                          "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}}]}  # fmt: skip
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": json.dumps(top).encode()}
        files |= {f"blobs/sha256/{digest.split(':', 1)[1]}": data for digest, data in blobs.items()}
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _main(argv: list[str]) -> int:
    """`images.py oci NAME OUT.tar PLATFORM=ROOTFS.tar+APP.tar ...`: the agent image (scripts/k8s-agent-image)."""
    if len(argv) < 5 or argv[1] != "oci":
        print("usage: images.py oci NAME OUT.tar linux/ARCH=LAYER.tar[+LAYER.tar...] ...", file=sys.stderr)
        return 2
    config: dict[str, object] = {"Env": [_PATH, "PYTHONPATH=/opt/autogit/site", "PYTHONDONTWRITEBYTECODE=1"],
                                 "Entrypoint": ["autogit-agent"], "Cmd": ["run"], "User": "10001:10001", "WorkingDir": "/var/lib/autogit"}  # fmt: skip
    images = []
    for spec in argv[4:]:
        platform, _, paths = spec.partition("=")
        images.append((platform, [Path(p).read_bytes() for p in paths.split("+")], config))
    Path(argv[3]).write_bytes(oci_archive(argv[2], images))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))


RUNNER_STAND_IN_IMAGE = "autogit.local/runner-stand-in:1"
# A stand-in for gitlab-runner's manager process, for the runtime's lifecycle tests only (the
# gitlab-runner double's image is too heavy to import here): it says how it was started, then
# waits for a signal and says which one came, exiting as gitlab-runner does: 0 after the graceful
# stop (SIGQUIT), 1 after the forceful one (SIGTERM). It runs no job.
_STAND_IN = b"""#!/bin/sh
echo "stand-in: started: $*"
test -s "$3" && echo "stand-in: config present"
trap 'echo "stand-in: SIGQUIT: graceful stop"; exit 0' QUIT
trap 'echo "stand-in: SIGTERM: forceful stop"; exit 1' TERM
while true; do sleep 1 & wait $!; done
"""


def runner_stand_in_archive(busybox: Path = Path("/bin/busybox")) -> bytes:
    applets = (*BUSYBOX_APPLETS, "cp", "kill")
    files = {"bin/busybox": (busybox.read_bytes(), 0o755), "usr/bin/stand-in": (_STAND_IN, 0o755)}
    links = {f"bin/{applet}": "busybox" for applet in applets}
    layer = _layer(files, links, ("bin", "usr", "usr/bin", "tmp", "etc"))
    return bytes(docker_archive(layer, RUNNER_STAND_IN_IMAGE, "linux/amd64", {"Entrypoint": ["/usr/bin/stand-in"], "Env": [_PATH]}))


# --- the gitlab-runner double as a manager pod's image (test only) -----------------------------------

RUNNER_DOUBLE_REPO = "autogit.local/runner-double"
AGENT_TEST_REPO = "autogit.local/agent"
_SITE = "/opt/autogit/site"
# What gitlab-runner's image gives a manager pod (k8s_runtime manager_pod): `gitlab-runner` as the
# entry point (`run --config … --working-directory …`) and `kill`, which the agent's stops run
# through pods/exec (`kill -QUIT 1`, `kill -TERM 1`). The double itself is in the agent image's
# autogit package (package data); this layer only names it. The product image gets neither.
_GITLAB_RUNNER = f"""#!/usr/bin/python3
# AutoGit's gitlab-runner DOUBLE (test image only; not GitLab Runner)
import runpy, sys
sys.argv[0] = "gitlab-runner"
runpy.run_path("{_SITE}/autogit/gitlab_double/runner_image/entrypoint.py", run_name="__main__")
""".encode()
_KILL = b"""#!/usr/bin/python3
# kill [-SIGNAL] PID...: procps is not in the agent's minbase rootfs
import os, signal, sys
args = sys.argv[1:]
sig = signal.SIGTERM
if args and args[0].startswith("-"):
    name = args.pop(0)[1:]
    sig = int(name) if name.isdigit() else signal.Signals["SIG" + name.upper().removeprefix("SIG")]
for pid in args:
    os.kill(int(pid), sig)
"""


def _amd64_image(agent_oci: Path) -> tuple[list[bytes], dict[str, object]]:
    """The layers and image config of the agent image's linux/amd64 manifest."""
    import json

    with tarfile.open(agent_oci) as archive:
        def blob(digest: str) -> bytes:
            member = archive.extractfile(f"blobs/sha256/{digest.split(':', 1)[1]}")
            assert member is not None
            return member.read()

        top = json.loads(archive.extractfile("index.json").read())  # type: ignore[union-attr]
        index = json.loads(blob(top["manifests"][0]["digest"]))
        entry = next(m for m in index["manifests"] if m["platform"]["architecture"] == "amd64")
        manifest = json.loads(blob(entry["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))["config"]
        return [blob(layer["digest"]) for layer in manifest["layers"]], config


def _tag(*layers: bytes) -> str:
    import hashlib

    return hashlib.sha256(b"".join(hashlib.sha256(layer).digest() for layer in layers)).hexdigest()[:16]


def agent_test_archive(agent_oci: Path) -> tuple[str, bytes]:
    """(name, OCI archive): the agent image's amd64 layers under a name of their content, so that
    tests on the shared cluster never run another checkout's agent image of the same version."""
    layers, config = _amd64_image(agent_oci)
    name = f"{AGENT_TEST_REPO}:{_tag(*layers)}"
    return name, oci_archive(name, [("linux/amd64", layers, config)])


def runner_double_archive(agent_oci: Path) -> tuple[str, bytes]:
    """(name, OCI archive): the agent image's amd64 layers plus one test-only layer making the
    gitlab-runner double (with its Kubernetes executor) the entry point, as gitlab-runner's image
    has it."""
    layers, config = _amd64_image(agent_oci)
    extra = _layer({"usr/bin/gitlab-runner": (_GITLAB_RUNNER, 0o755), "usr/bin/kill": (_KILL, 0o755)}, {}, ("usr", "usr/bin"))
    # root, as gitlab-runner's own image runs: the manager pod's Secret volume is 0400 root's (manager_pod)
    image_config = dict(config) | {"Entrypoint": ["/usr/bin/gitlab-runner"], "Cmd": ["run"], "WorkingDir": "/tmp", "User": "0:0"}
    name = f"{RUNNER_DOUBLE_REPO}:{_tag(*layers, extra)}"
    return name, oci_archive(name, [("linux/amd64", [*layers, extra], image_config)])
