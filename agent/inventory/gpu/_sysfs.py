"""sysfs walking shared by the AMD and Intel backends.

A GPU that the kernel drives has a drm minor: `/sys/class/drm/cardN` (and `renderDN`), whose
`device` link is its PCI device. We enumerate from the drm class rather than from the PCI bus
so that a card without a bound driver (nothing a container could use) is never listed.
umockdev testbeds have no `device` link on drm children, so the PCI device is also found by
walking up the real path to the first ancestor whose `subsystem` is `pci`; both shapes are
what the tests exercise.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .base import link_name, read_int, read_text, uevent_properties

__all__ = ["DrmCard", "HwmonReading", "drm_cards", "hwmon_reading", "module_version"]

_CARD = re.compile(r"card\d+")
_RENDER = re.compile(r"renderD\d+")


@dataclass(frozen=True, slots=True)
class DrmCard:
    card: str  # 'card1'
    card_dir: Path  # resolved drm minor directory (i915 puts lmem_* here)
    pci_dir: Path  # resolved PCI device directory
    pci_bus_id: str  # '0000:03:00.0'
    device_id: str  # '0x744c'
    driver: str | None  # 'amdgpu', 'i915', 'xe'
    render: str | None  # 'renderD128'


def _pci_parent(entry: Path, sysfs: Path) -> Path | None:
    link = entry / "device"
    if (link / "vendor").is_file():
        return Path(os.path.realpath(link))
    real = Path(os.path.realpath(entry))
    for parent in real.parents:
        if parent == sysfs or parent == parent.parent:
            break
        if link_name(parent / "subsystem") == "pci":
            return parent
    return None


def drm_cards(sysfs: Path, vendor: str) -> list[DrmCard]:
    """The drm cards whose PCI device has this vendor id ('0x1002'), by PCI bus id."""
    drm = sysfs / "class" / "drm"
    try:
        names = os.listdir(drm)
    except OSError:  # no drm at all (headless box, container without /sys/class/drm)
        return []
    cards: dict[Path, str] = {}
    renders: dict[Path, str] = {}
    for name in names:
        kind = cards if _CARD.fullmatch(name) else renders if _RENDER.fullmatch(name) else None
        if kind is None:  # connectors such as card1-DP-1
            continue
        pci = _pci_parent(drm / name, sysfs)
        if pci is not None and read_text(pci / "vendor") == vendor:
            # One card per PCI device; the lowest minor if a driver ever made two.
            if pci not in kind or _minor(name) < _minor(kind[pci]):
                kind[pci] = name
    found = []
    for pci, card in cards.items():
        props = uevent_properties(pci / "uevent")
        found.append(
            DrmCard(
                card=card,
                card_dir=Path(os.path.realpath(drm / card)),
                pci_dir=pci,
                pci_bus_id=props.get("PCI_SLOT_NAME", pci.name).lower(),
                device_id=(read_text(pci / "device") or "unknown").lower(),
                driver=link_name(pci / "driver") or props.get("DRIVER"),
                render=renders.get(pci),
            )
        )
    return sorted(found, key=lambda c: c.pci_bus_id)


def _minor(name: str) -> int:
    return int(re.sub(r"\D", "", name) or 0)


@dataclass(frozen=True, slots=True)
class HwmonReading:
    temperature_c: float | None = None
    power_w: float | None = None


def hwmon_reading(pci_dir: Path) -> HwmonReading:
    """temp1_input (millidegrees C) and power1_average or power1_input (microwatts).

    amdgpu documents power1_average as the SoC's average power (on APUs the CPU's too);
    newer kernels have power1_input instead, so take whichever exists.
    """
    try:
        hwmons = sorted((pci_dir / "hwmon").iterdir())
    except OSError:
        return HwmonReading()
    for hwmon in hwmons:
        milli_c = read_int(hwmon / "temp1_input")
        micro_w = read_int(hwmon / "power1_average")
        if micro_w is None:
            micro_w = read_int(hwmon / "power1_input")
        if milli_c is not None or micro_w is not None:
            return HwmonReading(
                temperature_c=None if milli_c is None else milli_c / 1000,
                power_w=None if micro_w is None else micro_w / 1_000_000,
            )
    return HwmonReading()


def module_version(sysfs: Path, module: str) -> str | None:
    """/sys/module/<m>/version: only out-of-tree (DKMS) builds have it; in-tree drivers don't."""
    return read_text(sysfs / "module" / module / "version") or None
