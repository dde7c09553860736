"""AMD GPUs from sysfs (amdgpu): what rocm-smi reads, without needing ROCm on the host.

Files (kernel Documentation/gpu/amdgpu, amdgpu_pm.c), under /sys/class/drm/cardN/device/:
mem_info_vram_total and mem_info_vram_used (bytes), gpu_busy_percent, product_name (from the
board's FRU; empty or absent on most consumer cards), hwmon/hwmon*/temp1_input and power1_*.
ROCm compute needs /dev/kfd besides the card's render node; its absence is reported, not hidden.
"""

from __future__ import annotations

from pathlib import Path

from ...model import Gpu, GpuVendor
from ...state import GpuReading
from ._sysfs import DrmCard, drm_cards, hwmon_reading, module_version
from .base import PCI_VENDOR, GpuSnapshot, read_int, read_text

__all__ = ["AmdBackend", "KNOWN_MODELS"]

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
        return [self._snapshot(card, kfd, version) for card in cards]

    def _snapshot(self, card: DrmCard, kfd: bool, version: str | None) -> GpuSnapshot:
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
