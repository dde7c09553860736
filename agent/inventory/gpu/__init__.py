"""GPU inventory: one small interface, one backend per vendor.

    inventory = GpuInventory()            # keeps NVML initialised between reads
    snapshots = inventory.observe()       # list[GpuSnapshot], ordered NVIDIA, AMD, Intel
    host_gpus = [s.gpu for s in snapshots]

NVIDIA is read through NVML (nvidia.py), AMD and Intel through sysfs (amd.py, intel.py). A
missing driver or library means "no GPUs of that vendor", never an exception; why is kept in
`problems` (and in `NvidiaBackend.absent` for the benign case). `sys_root` is the directory
that holds `sys/` and `dev_root` the one standing for `/dev`, so tests point them at prepared
trees; under umockdev-wrapper the defaults see the testbed.

The daemon reads with `await inventory.read(timeout)`: every backend in a thread of its own,
bounded by a deadline, so a GPU fallen off the bus that hangs NVML cannot freeze the event
loop (reader.py). `observe()` is the plain blocking read for tools and tests.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ...model import Gpu, GpuVendor
from .amd import AmdBackend
from .base import PCI_VENDOR, GpuBackend, GpuSnapshot, HealthBook, normalise_bus_id, read_text
from .intel import IntelBackend
from .nvidia import NvidiaBackend, NvmlHealthThread
from .reader import BoundedReader, HungRead, read_all

__all__ = [
    "ALL_VENDORS",
    "AmdBackend",
    "GpuBackend",
    "GpuInventory",
    "GpuSnapshot",
    "HealthBook",
    "HungRead",
    "IntelBackend",
    "NvidiaBackend",
    "NvmlHealthThread",
    "MigChange",
    "mig_instance_changes",
    "normalise_bus_id",
    "observe_gpus",
]

ALL_VENDORS: frozenset[GpuVendor] = frozenset(GpuVendor)


class GpuInventory:
    """The host's GPUs across vendors, with event-borne health verdicts applied."""

    def __init__(
        self,
        sys_root: Path = Path("/"),
        dev_root: Path = Path("/dev"),
        vendors: Iterable[GpuVendor] = ALL_VENDORS,
        nvml: Any | None = None,
    ) -> None:
        wanted = frozenset(vendors)
        self.sys_root = sys_root
        self.health = HealthBook()
        self.nvidia = NvidiaBackend(nvml) if GpuVendor.NVIDIA in wanted else None
        self.backends: list[GpuBackend] = [b for b in (self.nvidia,) if b is not None]
        if GpuVendor.AMD in wanted:
            self.backends.append(AmdBackend(sys_root, dev_root))
        if GpuVendor.INTEL in wanted:
            self.backends.append(IntelBackend(sys_root, dev_root))
        self._nvidia_on_pci: int | None = None
        self._readers = [BoundedReader(b) for b in self.backends]
        self.hung: list[HungRead] = []  # backends whose last bounded read missed its deadline

    def observe(self) -> list[GpuSnapshot]:
        """One blocking read of every backend, on the caller's thread (tools, tests)."""
        snapshots = [snap for backend in self.backends for snap in backend.observe()]
        return [self.health.apply(snap) for snap in snapshots]

    def observe_within(self, timeout: float) -> list[GpuSnapshot]:
        """One read of every backend, each in its own thread, waiting at most `timeout` seconds.
        A backend that misses the deadline keeps its GPUs as last seen, unknown and unhealthy,
        and is listed in `hung` and `problems` until a read of it finishes again."""
        snapshots, self.hung = read_all(self._readers, timeout)
        return [self.health.apply(snap) for snap in snapshots]

    async def read(self, timeout: float) -> list[GpuSnapshot]:
        """`observe_within` off the event loop: the loop waits for nothing longer than `timeout`."""
        return await asyncio.to_thread(self.observe_within, timeout)

    @property
    def problems(self) -> dict[str, str]:
        """Vendor → why its GPUs could not be read although the host seems to have some."""
        found = {b.vendor.value: b.problem for b in self.backends if b.problem}
        now = time.monotonic()
        for hung in self.hung:
            found[hung.vendor] = hung.describe(now)
        if self.nvidia is not None and self.nvidia.absent and "nvidia" not in found:
            if self._nvidia_on_pci is None:  # counted once per rescan: it walks the PCI bus
                self._nvidia_on_pci = count_pci_gpus(self.sys_root / "sys", GpuVendor.NVIDIA)
            if self._nvidia_on_pci:
                found["nvidia"] = f"{self._nvidia_on_pci} NVIDIA GPU(s) on the PCI bus but NVML is unavailable: {self.nvidia.absent}"
        return found

    def rescan_nvidia(self) -> None:
        self._nvidia_on_pci = None
        if self.nvidia is not None:
            self.nvidia.rescan()

    def close(self) -> None:
        if self.nvidia is not None:
            self.nvidia.close()


def count_pci_gpus(sysfs: Path, vendor: GpuVendor) -> int:
    """PCI display controllers (class 0x03xxxx) of this vendor, driver bound or not."""
    devices = sysfs / "bus" / "pci" / "devices"
    try:
        names = os.listdir(devices)
    except OSError:
        return 0
    return sum(
        1
        for name in names
        if read_text(devices / name / "vendor") == PCI_VENDOR[vendor]
        and (read_text(devices / name / "class") or "").startswith("0x03")
    )


MigChange = tuple[str, str, dict[str, Any]]  # (event type, message, event data)


def mig_instance_changes(before: Sequence[Gpu], after: Sequence[Gpu]) -> list[MigChange]:
    """MIG instances that appeared or vanished between two reads, as hotplug events.

    Creating or destroying a MIG instance changes no PCI device, so udev never reports it; the
    agent sees it only by comparing reads (every gpu.readings_interval). Whole GPUs are left
    out: their coming and going already arrives as udev events.
    """
    old = {g.id: g for g in before if g.mig_parent is not None}
    new = {g.id: g for g in after if g.mig_parent is not None}
    changes: list[MigChange] = []
    for kind, verb, ids, source in (("gpu.added", "appeared", new.keys() - old.keys(), new), ("gpu.removed", "vanished", old.keys() - new.keys(), old)):
        for gpu_id in sorted(ids):
            gpu = source[gpu_id]
            profile = gpu.mig_profile or "unknown profile"
            data = {"gpu": gpu_id, "mig_parent": gpu.mig_parent, "mig_profile": gpu.mig_profile, "vendor": gpu.vendor.value}
            changes.append((kind, f"MIG instance {gpu_id} ({profile}) of GPU {gpu.mig_parent} {verb}", data))
    return changes


_SHARED: dict[tuple[Path, Path, frozenset[GpuVendor], Any], GpuInventory] = {}


def observe_gpus(
    sys_root: Path = Path("/"),
    dev_root: Path = Path("/dev"),
    vendors: Iterable[GpuVendor] = ALL_VENDORS,
    nvml: Any | None = None,
) -> list[GpuSnapshot]:
    """One read of the host's GPUs. Repeated calls with the same arguments share one
    GpuInventory, so NVML stays initialised and handles are not fetched again."""
    key = (sys_root, dev_root, frozenset(vendors), nvml)
    inventory = _SHARED.get(key)
    if inventory is None:
        inventory = _SHARED[key] = GpuInventory(sys_root, dev_root, vendors, nvml)
    return inventory.observe()
