"""Intel GPUs from sysfs (i915 or xe).

Integrated or discrete, in this order (the first that answers wins):
1. xe: `device/tile*/physical_vram_size_bytes` exists only on parts with VRAM (igt reads it
   only when xe_has_vram), so present → discrete, with that much memory.
2. i915: `cardN/lmem_total_bytes` (Intel's out-of-tree backport; not in mainline) → discrete.
3. Otherwise the PCI address decides: Intel's integrated GPU is always device 02.0 on the root
   bus (0000:00:02.0); a discrete card sits behind a PCIe port on another bus. Such a discrete
   card's memory size is then unknown (0), so it yields no vram-* tag rather than a wrong one.
Integrated GPUs share host memory: memory_mb is 0 and no vram tag is derived.

Utilisation needs the i915/xe PMU or DRM fdinfo and is not read here (None, not 0).
"""

from __future__ import annotations

from pathlib import Path

from ...model import Gpu, GpuVendor
from ...state import GpuReading
from ._sysfs import DrmCard, drm_cards, hwmon_reading, module_version
from .base import PCI_VENDOR, GpuSnapshot, read_int

__all__ = ["IntelBackend", "KNOWN_MODELS", "is_integrated"]

_MIB = 1 << 20

# Marketing names for discrete device ids (sysfs has none), after pci.ids; any other id shows
# as 'Intel GPU 0x….', whose family tag is the device id itself.
KNOWN_MODELS = {
    "0x56a0": "Intel Arc A770",
    "0x56a1": "Intel Arc A750",
    "0xe20b": "Intel Arc B580",
    "0xe20c": "Intel Arc B570",
}
_IGPU_SLOT = "00:02.0"


def _vram(card: DrmCard) -> tuple[int | None, int | None]:
    """(total, used) VRAM bytes where the driver tells; (None, None) when it does not."""
    tiles = sorted(card.pci_dir.glob("tile*/physical_vram_size_bytes"))
    sizes = [s for s in (read_int(t) for t in tiles) if s is not None]
    if sizes:
        return sum(sizes), None
    total = read_int(card.card_dir / "lmem_total_bytes")
    if total is not None:
        avail = read_int(card.card_dir / "lmem_avail_bytes")
        return total, None if avail is None else max(0, total - avail)
    return None, None


def is_integrated(pci_bus_id: str, vram_bytes: int | None) -> bool:
    if vram_bytes:
        return False
    # 'dddd:bb:ss.f': bus 00, slot 02, function 0 is where every Intel iGPU lives.
    return pci_bus_id.split(":", 1)[-1] == _IGPU_SLOT


class IntelBackend:
    vendor = GpuVendor.INTEL
    problem: str | None = None

    def __init__(self, sys_root: Path = Path("/"), dev_root: Path = Path("/dev")) -> None:
        self._sysfs = sys_root / "sys"
        self._dev = dev_root

    def observe(self) -> list[GpuSnapshot]:
        return [self._snapshot(card) for card in drm_cards(self._sysfs, PCI_VENDOR[GpuVendor.INTEL])]

    def _snapshot(self, card: DrmCard) -> GpuSnapshot:
        total, used = _vram(card)
        integrated = is_integrated(card.pci_bus_id, total)
        version = module_version(self._sysfs, card.driver) if card.driver else None
        hwmon = hwmon_reading(card.pci_dir)
        render = str(self._dev / "dri" / card.render) if card.render else None
        gpu = Gpu(
            id=card.pci_bus_id,
            vendor=GpuVendor.INTEL,
            model=KNOWN_MODELS.get(card.device_id, f"Intel GPU {card.device_id}"),
            memory_mb=0 if integrated else (total or 0) // _MIB,
            pci_bus_id=card.pci_bus_id,
            render_node=render,
            driver_version=version,
            integrated=integrated,
        )
        reading = GpuReading(
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
        )
