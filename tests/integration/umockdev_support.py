"""umockdev testbeds with PCI GPUs of each vendor, for the hotplug tests and bench.

Run under `umockdev-wrapper`: its LD_PRELOAD redirects /sys and /dev and fakes the udev
netlink socket, so pyudev enumerates the testbed and receives the uevents it sends. The rules
learnt the hard way (docs: shared research, gpu-hotplug.md §5):
* UMockdev.in_mock_environment() caches its first answer: ask only after Testbed.new().
* add_device() already sends `add`; sending it again makes duplicates.
* send `remove` *before* remove_device(), or the event never leaves.
* a monitor must be started before the first event it should see.
* UMOCKDEV_DIR is set in the C environment only: children need it passed explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from ci_policy import require

__all__ = [
    "add_amd",
    "add_intel",
    "add_nvidia",
    "add_pci",
    "remove_devices",
    "umockdev_testbed",
    "under_umockdev",
]


def under_umockdev() -> bool:
    return "libumockdev-preload" in os.environ.get("LD_PRELOAD", "")


def _unavailable(why: str) -> None:
    require(False, why)


@pytest.fixture
def umockdev_testbed() -> Iterator[Any]:
    """A fresh UMockdev.Testbed; skips outside umockdev-wrapper (fails where CI=true)."""
    if not under_umockdev():
        _unavailable("needs umockdev: run under `umockdev-wrapper python -m pytest …`")
    try:
        import gi

        gi.require_version("UMockdev", "1.0")
        from gi.repository import UMockdev
    except (ImportError, ValueError) as exc:
        _unavailable(f"umockdev's GObject bindings are missing: {exc}")
    testbed = UMockdev.Testbed.new()
    assert UMockdev.in_mock_environment()  # only meaningful after Testbed.new()
    yield testbed
    testbed.clear()


def add_pci(testbed: Any, bus_id: str, vendor: str, device: str, pci_class: str, driver: str | None, **attrs: str) -> str:
    """A PCI device with the uevent properties the kernel sends (PCI_ID, PCI_CLASS, …)."""
    props = ["PCI_ID", f"{vendor[2:].upper()}:{device[2:].upper()}", "PCI_CLASS", pci_class[2:].upper().lstrip("0"),
             "PCI_SLOT_NAME", bus_id]  # fmt: skip
    if driver:
        props += ["DRIVER", driver]
    attributes = ["vendor", vendor, "device", device, "class", pci_class]
    for name, value in attrs.items():
        attributes += [name.replace("__", "/"), value]
    return testbed.add_device("pci", bus_id, None, attributes, props)


def _drm(testbed: Any, parent: str, minor: int) -> tuple[str, str]:
    card = testbed.add_device("drm", f"card{minor}", parent, ["dev", f"226:{minor}"],
                              ["DEVNAME", f"/dev/dri/card{minor}", "DEVTYPE", "drm_minor"])  # fmt: skip
    render = testbed.add_device("drm", f"renderD{128 + minor}", parent, ["dev", f"226:{128 + minor}"],
                                ["DEVNAME", f"/dev/dri/renderD{128 + minor}", "DEVTYPE", "drm_minor"])  # fmt: skip
    return card, render


def add_nvidia(testbed: Any, bus_id: str = "0000:01:00.0") -> str:
    """An H100 (10de:2330, 3D controller) under the proprietary driver: PCI only, no drm."""
    return add_pci(testbed, bus_id, "0x10de", "0x2330", "0x030200", "nvidia")


def add_amd(testbed: Any, bus_id: str = "0000:03:00.0", minor: int = 1, vram_gib: int = 24) -> list[str]:
    """A Radeon RX 7900 XTX (1002:744c) with amdgpu's sysfs files; [pci, card, render]."""
    pci = add_pci(
        testbed, bus_id, "0x1002", "0x744c", "0x030000", "amdgpu",
        mem_info_vram_total=str(vram_gib << 30), mem_info_vram_used=str(256 << 20), gpu_busy_percent="3",
        hwmon__hwmon3__temp1_input="41000", hwmon__hwmon3__power1_average="17000000",
    )  # fmt: skip
    return [pci, *_drm(testbed, pci, minor)]


def add_intel(testbed: Any, bus_id: str = "0000:00:02.0", minor: int = 0) -> list[str]:
    """An integrated Intel GPU (8086:a7a0) under i915; [pci, card, render]."""
    pci = add_pci(testbed, bus_id, "0x8086", "0xa7a0", "0x030000", "i915")
    return [pci, *_drm(testbed, pci, minor)]


def remove_devices(testbed: Any, *sys_paths: str) -> None:
    """Unplug children first, as the kernel does; each `remove` is sent before the removal."""
    for path in reversed(sys_paths):
        testbed.uevent(path, "remove")
        testbed.remove_device(path)
