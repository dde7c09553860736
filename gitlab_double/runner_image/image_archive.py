#!/usr/bin/python3
"""Write a `docker load` archive (the `docker save` layout) of one rootfs tarball, for a given
platform, on stdout: `image_archive.py ROOTFS.tar linux/arm64 REPO:TAG | docker load`.

`docker import --platform` is ignored by Debian 12's dockerd (20.10), which records the host's
architecture; a job image whose code is arm64 must say arm64, or `platform: linux/arm64` refuses
it and the engine tries a registry. The archive format: manifest.json naming the config and the
layers (moby image/tarexport), an image config with architecture, os and the layer's diff_id.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile


def docker_archive(layer: bytes, tag: str, platform: str, image_config: dict[str, object] | None = None) -> bytes:
    """One image of one layer (a rootfs tarball) in the `docker save` layout, which `docker load`
    and containerd's `ctr images import` both read. `image_config`: the config's `config`
    (Cmd, Entrypoint, Env); default a shell."""
    os_name, arch, *variant = platform.split("/")
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config: dict[str, object] = {
        "architecture": arch,
        "os": os_name,
        "config": image_config or {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": f"autogit tests: {tag} as {platform}"}],
    }
    if variant:
        config["variant"] = variant[0]
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": ["layer/layer.tar"]}]).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as out:
        for name, data in ((config_name, config_bytes), ("layer/layer.tar", layer), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def main(rootfs: str, platform: str, tag: str) -> int:
    with open(rootfs, "rb") as fh:
        layer = fh.read()
    sys.stdout.buffer.write(docker_archive(layer, tag, platform))
    return 0

if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: image_archive.py ROOTFS.tar OS/ARCH REPO:TAG")
    sys.exit(main(*sys.argv[1:]))
