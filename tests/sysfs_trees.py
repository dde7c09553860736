"""Prepared sysfs trees of PCI GPUs (AMD, Intel, NVIDIA), laid out as the kernel does: a PCI
device with vendor/device/class attributes, a uevent and a `driver` link; drm/cardN and
drm/renderDN under it, each with a `device` link back. Used by the GPU inventory tests and the
GPU runner-loop test; the inventory reads them through its real sysfs code."""

from __future__ import annotations

import os
from pathlib import Path

GIB = 1 << 30


def link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))


def write_attrs(base: Path, attrs: dict[str, str]) -> None:
    for name, value in attrs.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text(value + "\n")


def add_gpu(
    root: Path,
    bus_id: str,
    vendor: str,
    device: str,
    driver: str,
    minor: int,
    attrs: dict[str, str] | None = None,
    card_attrs: dict[str, str] | None = None,
    render: bool = True,
    display_class: str = "0x030000",
) -> Path:
    sys = root / "sys"
    port = "0000:00:02.0" if bus_id.endswith("00:02.0") else "0000:00:01.0"
    pci = sys / "devices/pci0000:00" / (bus_id if bus_id == port else f"{port}/{bus_id}")
    pci.mkdir(parents=True)
    write_attrs(pci, {"vendor": vendor, "device": device, "class": display_class, **(attrs or {})})
    (pci / "uevent").write_text(f"DRIVER={driver}\nPCI_CLASS={display_class[2:].upper()}\nPCI_SLOT_NAME={bus_id}\n")
    (sys / "bus/pci/drivers" / driver).mkdir(parents=True, exist_ok=True)
    link(pci / "driver", sys / "bus/pci/drivers" / driver)
    link(pci / "subsystem", sys / "bus/pci")
    link(sys / "bus/pci/devices" / bus_id, pci)
    names = [f"card{minor}"] + ([f"renderD{128 + minor}"] if render else [])
    for name in names:
        node = pci / "drm" / name
        node.mkdir(parents=True)
        (node / "dev").write_text(f"226:{128 + minor if name.startswith('render') else minor}\n")
        link(node / "device", pci)
        link(sys / "class/drm" / name, node)
    write_attrs(pci / "drm" / f"card{minor}", card_attrs or {})
    # A display connector: must not be taken for a card.
    (pci / "drm" / f"card{minor}" / f"card{minor}-DP-1").mkdir()
    link(sys / "class/drm" / f"card{minor}-DP-1", pci / "drm" / f"card{minor}" / f"card{minor}-DP-1")
    return pci


def amd_7900xtx(root: Path, bus_id: str = "0000:03:00.0", minor: int = 1, **extra: str) -> Path:
    return add_gpu(
        root, bus_id, "0x1002", "0x744c", "amdgpu", minor,
        {
            "mem_info_vram_total": str(24 * GIB),
            "mem_info_vram_used": str(512 << 20),
            "gpu_busy_percent": "7",
            "hwmon/hwmon3/name": "amdgpu",
            "hwmon/hwmon3/temp1_input": "45000",
            "hwmon/hwmon3/power1_average": "31000000",
            **extra,
        },
    )  # fmt: skip




def kfd_node(root: Path, node: int, gfx_target_version: int, render_minor: int = 0, gpu_id: int = 0) -> Path:
    """One amdkfd topology node as the kernel lays it out (kfd_topology.c): a `properties` file
    of "name value" lines under /sys/devices/virtual/kfd/kfd/topology/nodes/N, reached through
    the /sys/class/kfd/kfd link. A CPU node has gfx_target_version 0 and gpu_id 0."""
    sys = root / "sys"
    base = sys / "devices/virtual/kfd/kfd"
    if not (sys / "class/kfd/kfd").exists():
        base.mkdir(parents=True, exist_ok=True)
        link(sys / "class/kfd/kfd", base)
    directory = base / "topology/nodes" / str(node)
    directory.mkdir(parents=True)
    (directory / "gpu_id").write_text(f"{gpu_id}\n")
    (directory / "properties").write_text(
        f"cpu_cores_count {0 if gpu_id else 16}\nsimd_count {0 if not gpu_id else 192}\n"
        f"gfx_target_version {gfx_target_version}\ndrm_render_minor {render_minor if gpu_id else 0}\n"
        f"vendor_id {4098 if gpu_id else 0}\n"
    )
    return directory
