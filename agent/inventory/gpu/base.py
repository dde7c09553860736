"""What every GPU backend returns, and the pieces the backends share.

A backend turns one vendor's interface (NVML, or sysfs for AMD and Intel) into `GpuSnapshot`s:
the planner's `Gpu`, the live `GpuReading`, and the facts a runtime needs to hand the GPU to a
container (UUID, PCI bus id, render node, /dev/kfd). Readings that a backend cannot get are
None, never 0: "unknown" is not "idle".
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import Field

from ...model import Frozen, Gpu, GpuVendor
from ...state import GpuReading

__all__ = [
    "GpuBackend",
    "GpuSnapshot",
    "HealthBook",
    "PCI_VENDOR",
    "link_name",
    "normalise_bus_id",
    "read_int",
    "read_text",
    "uevent_properties",
]

# PCI vendor ids as sysfs writes them (`vendor` file, lower-case hex with 0x).
PCI_VENDOR: dict[GpuVendor, str] = {
    GpuVendor.NVIDIA: "0x10de",
    GpuVendor.AMD: "0x1002",
    GpuVendor.INTEL: "0x8086",
}


class GpuSnapshot(Frozen):
    """One GPU at one moment: the planner's view plus what the runtime and the API show."""

    gpu: Gpu
    reading: GpuReading = Field(default_factory=GpuReading)
    uuid: str | None = Field(None, description="NVIDIA UUID ('GPU-…'); None for AMD and Intel.")
    pci_bus_id: str | None = Field(None, description="sysfs form, e.g. '0000:01:00.0'.")
    mig_mode: bool | None = Field(None, description="NVIDIA MIG enabled; None: not supported or unknown.")
    driver: str | None = Field(None, description="Kernel driver: nvidia, amdgpu, i915, xe.")
    driver_version: str | None = None
    cuda_version: str | None = Field(None, description="Highest CUDA the driver supports, e.g. '13.0'.")
    render_node: str | None = Field(None, description="e.g. '/dev/dri/renderD128'.")
    kfd: bool | None = Field(None, description="AMD: /dev/kfd exists (ROCm compute); None elsewhere.")
    health_reason: str | None = Field(None, description="Why the GPU is unhealthy; None when healthy.")


class GpuBackend(Protocol):
    """One vendor's inventory. `observe` never raises for missing hardware or drivers."""

    vendor: GpuVendor

    def observe(self) -> list[GpuSnapshot]: ...

    @property
    def problem(self) -> str | None:
        """Why the backend could not look (driver broken, library mismatch); None if it could."""
        ...


@dataclass(frozen=True, slots=True)
class _Sick:
    reason: str
    pci_bus_id: str | None


class HealthBook:
    """GPUs found unhealthy by events (NVML Xid, drm WEDGED), shared across threads.

    Events are one-off but a GPU that reported a critical Xid stays suspect until it is
    removed and comes back (a reset re-adds the PCI device), so the verdict is kept here and
    applied to every later read. Keyed by GPU id; the PCI bus id lets a udev `add` clear it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sick: dict[str, _Sick] = {}

    def mark(self, gpu_id: str, reason: str, pci_bus_id: str | None = None) -> bool:
        """Record a verdict; True if the GPU was healthy before (a transition worth an event)."""
        with self._lock:
            fresh = gpu_id not in self._sick
            if fresh:
                self._sick[gpu_id] = _Sick(reason, pci_bus_id)
            return fresh

    def reason(self, gpu_id: str, pci_bus_id: str | None = None) -> str | None:
        """The verdict on this GPU, found by id or (udev knows no NVIDIA UUID) by PCI address."""
        with self._lock:
            sick = self._sick.get(gpu_id)
            if sick is None and pci_bus_id is not None:
                sick = next((s for s in self._sick.values() if s.pci_bus_id == pci_bus_id), None)
            return sick.reason if sick else None

    def clear_bus(self, pci_bus_id: str) -> list[str]:
        """Forget verdicts on the GPU at this PCI address (it was removed or re-added)."""
        with self._lock:
            gone = [gid for gid, s in self._sick.items() if gid == pci_bus_id or s.pci_bus_id == pci_bus_id]
            for gid in gone:
                del self._sick[gid]
            return gone

    def apply(self, snapshot: GpuSnapshot) -> GpuSnapshot:
        if not snapshot.gpu.healthy or (reason := self.reason(snapshot.gpu.id, snapshot.pci_bus_id)) is None:
            return snapshot
        gpu = snapshot.gpu.model_copy(update={"healthy": False})
        return snapshot.model_copy(update={"gpu": gpu, "health_reason": reason})


def normalise_bus_id(bus_id: str) -> str:
    """'00000000:01:00.0' (NVML: 8-digit upper-case domain) → '0000:01:00.0' (sysfs)."""
    bus_id = bus_id.strip().lower()
    domain, sep, rest = bus_id.partition(":")
    if not sep or ":" not in rest:  # no domain given: sysfs always has one
        return f"0000:{bus_id}"
    return f"{int(domain, 16):04x}:{rest}"


def read_text(path: Path) -> str | None:
    """A sysfs attribute, stripped; None when absent or unreadable (device going away)."""
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def read_int(path: Path, base: int = 10) -> int | None:
    text = read_text(path)
    if text is None:
        return None
    try:
        return int(text, base)
    except ValueError:
        return None


def uevent_properties(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a sysfs `uevent` file (DRIVER, PCI_SLOT_NAME, …)."""
    text = read_text(path) or ""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def link_name(path: Path) -> str | None:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None
