"""AMD GPUs from sysfs (amdgpu): what rocm-smi reads, without needing ROCm on the host.

Files (kernel Documentation/gpu/amdgpu, amdgpu_pm.c), under /sys/class/drm/cardN/device/:
mem_info_vram_total and mem_info_vram_used (bytes), gpu_busy_percent, product_name (from the
board's FRU; empty or absent on most consumer cards), hwmon/hwmon*/temp1_input and power1_*.
ROCm compute needs /dev/kfd besides the card's render node; its absence is reported, not hidden.

The ISA target (gfx90a, gfx942, gfx1100: what a ROCm build targets) is not under the card: it
is `gfx_target_version` in the amdkfd topology, /sys/class/kfd/kfd/topology/nodes/N/properties
("name value" lines), whose `drm_render_minor` ties the node to the card's renderD<minor>
(rocm_smi_lib reads the same pair). The version packs major*10000 + minor*100 + stepping and
is printed as gfx<major><minor><stepping in hex>: 90010 → gfx90a (ROCm rocprofiler-sdk,
source/lib/rocprofiler-sdk/agent.cpp). CPU nodes have version 0 and are skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...model import Gpu, GpuVendor
from ...state import GpuReading
from ._sysfs import DrmCard, drm_cards, hwmon_reading, module_version
from .base import PCI_VENDOR, GpuSnapshot, read_int, read_text

__all__ = ["AmdBackend", "KNOWN_MODELS", "gfx_target_name", "kfd_gfx_targets"]

_MIB = 1 << 20

# Marketing names for device ids sysfs cannot name (product_name comes from the board's FRU
# EEPROM and is empty on most cards), after pci.ids. Only the compute parts CI asks for; any
# other id shows as 'AMD GPU 0x….', whose family tag is the device id itself.
KNOWN_MODELS = {
    "0x738c": "AMD Instinct MI100",
    "0x740c": "AMD Instinct MI250X/MI250",
    "0x740f": "AMD Instinct MI210",
    "0x74a1": "AMD Instinct MI300X",
    "0x744c": "AMD Radeon RX 7900 XT/XTX",
}


def gfx_target_name(gfx_target_version: int) -> str | None:
    """KFD's packed version → the target's name: 90010 → 'gfx90a', 110000 → 'gfx1100'."""
    if gfx_target_version <= 0:
        return None
    major, minor, stepping = gfx_target_version // 10000, (gfx_target_version // 100) % 100, gfx_target_version % 100
    return f"gfx{major}{minor}{stepping:x}"


def kfd_gfx_targets(sysfs: Path) -> dict[int, str]:
    """DRM render minor → gfx target, for each GPU node of the KFD topology (empty without KFD)."""
    nodes = sysfs / "class" / "kfd" / "kfd" / "topology" / "nodes"
    try:
        names = sorted(os.listdir(nodes))
    except OSError:  # no amdkfd (no ROCm-capable GPU, or the driver built without it)
        return {}
    targets: dict[int, str] = {}
    for name in names:
        properties: dict[str, str] = {}
        for line in (read_text(nodes / name / "properties") or "").splitlines():
            key, _, value = line.partition(" ")
            properties[key] = value.strip()
        try:
            minor, version = int(properties["drm_render_minor"]), int(properties["gfx_target_version"])
        except (KeyError, ValueError):
            continue
        if (target := gfx_target_name(version)) is not None:
            targets[minor] = target
    return targets


class AmdBackend:
    vendor = GpuVendor.AMD
    problem: str | None = None  # sysfs needs no library: nothing can be broken but the GPU

    def __init__(self, sys_root: Path = Path("/"), dev_root: Path = Path("/dev")) -> None:
        self._sysfs = sys_root / "sys"
        self._dev = dev_root

    def observe(self) -> list[GpuSnapshot]:
        cards = drm_cards(self._sysfs, PCI_VENDOR[GpuVendor.AMD])
        if not cards:
            return []
        kfd = (self._dev / "kfd").exists()
        version = module_version(self._sysfs, "amdgpu")
        targets = kfd_gfx_targets(self._sysfs)
        return [self._snapshot(card, kfd, version, targets) for card in cards]

    def _snapshot(self, card: DrmCard, kfd: bool, version: str | None, targets: dict[int, str]) -> GpuSnapshot:
        dev = card.pci_dir
        total = read_int(dev / "mem_info_vram_total")
        used = read_int(dev / "mem_info_vram_used")
        busy = read_int(dev / "gpu_busy_percent")
        hwmon = hwmon_reading(dev)
        render = str(self._dev / "dri" / card.render) if card.render else None
        model = read_text(dev / "product_name") or KNOWN_MODELS.get(card.device_id, f"AMD GPU {card.device_id}")
        gpu = Gpu(
            id=card.pci_bus_id,
            vendor=GpuVendor.AMD,
            model=model,
            memory_mb=(total or 0) // _MIB,
            pci_bus_id=card.pci_bus_id,
            render_node=render,
            driver_version=version,
            gfx_target=targets.get(int(card.render.removeprefix("renderD"))) if card.render else None,
        )
        reading = GpuReading(
            utilization_pct=None if busy is None else float(busy),
            memory_used_mb=None if used is None else used // _MIB,
            temperature_c=hwmon.temperature_c,
            power_w=hwmon.power_w,
        )
        return GpuSnapshot(
            gpu=gpu,
            reading=reading,
            pci_bus_id=card.pci_bus_id,
            driver=card.driver,
            driver_version=version,
            render_node=render,
            kfd=kfd,
        )
