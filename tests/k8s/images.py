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
BUSYBOX_APPLETS = ("sh", "sleep", "echo", "cat", "ls", "env", "id", "true", "false", "wget", "uname", "grep", "test", "date")


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
