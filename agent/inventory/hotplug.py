"""GPU hotplug and health: udev uevents and NVML events → the event bus and a wake-up.

Events only wake the reconciler (level-triggered: it reads the whole inventory again); the
payload is for people (logs, the socket's event stream, the TUI). What is watched:

* udev, `pci` and `drm` subsystems (filters run in the kernel). A PCI display controller
  (class 0x03xxxx) of NVIDIA, AMD or Intel: add → `gpu.added`, remove → `gpu.removed`,
  bind/unbind → `gpu.changed`. NVIDIA's driver may have no drm device at all, so for vendor
  0x10de the PCI events are what tell NVML to enumerate again. drm `cardN`/`renderDN`
  add/remove → `gpu.changed` (the driver came or went; render nodes moved). A drm `change`
  with `WEDGED=` (kernel ≥ 6.14: the device is dead until recovered) → `gpu.unhealthy`;
  other drm changes (display connector HOTPLUG=1) are ignored.
* NVML event sets, in one thread (NvmlHealthThread): critical Xids and uncorrectable ECC
  errors → `gpu.unhealthy`.

The udev monitor's socket is driven by the asyncio loop (`loop.add_reader`): no thread, no
polling. It reads the `udev` source, i.e. events after udev's rules ran (device nodes exist
with their permissions), so it needs udevd, as on any systemd host.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

import pyudev

from ..events import EventBus
from ..model import GpuVendor
from .gpu import GpuInventory, NvmlHealthThread
from .gpu.base import PCI_VENDOR

__all__ = ["HotplugWatcher"]

log = logging.getLogger(__name__)

_VENDOR_OF_ID = {pci_id[2:]: vendor for vendor, pci_id in PCI_VENDOR.items()}  # '10de' → NVIDIA
_DRM_NODE = re.compile(r"(card|renderD)\d+")
_PCI_ACTIONS = {"add": ("gpu.added", "added"), "remove": ("gpu.removed", "removed")}


def _pci_identity(device: pyudev.Device) -> tuple[GpuVendor | None, bool]:
    """(vendor, is a display controller) from the uevent, else from sysfs attributes.

    On remove the sysfs directory is gone, but the kernel's PCI uevent always carries
    PCI_ID=VVVV:DDDD and PCI_CLASS (hex, no 0x), so properties come first.
    """
    props = device.properties
    vendor_id = (props.get("PCI_ID") or "").split(":")[0].lower()
    pci_class = (props.get("PCI_CLASS") or "").lower()
    if not vendor_id or not pci_class:
        attrs = device.attributes
        try:
            vendor_id = vendor_id or attrs.asstring("vendor").lower().removeprefix("0x")
            pci_class = pci_class or attrs.asstring("class").lower().removeprefix("0x")
        except (KeyError, UnicodeDecodeError):
            return None, False
    try:
        display = len(pci_class) in (5, 6) and int(pci_class, 16) >> 16 == 0x03
    except ValueError:
        display = False
    return _VENDOR_OF_ID.get(vendor_id), display


class HotplugWatcher:
    """Watches udev (on the asyncio loop) and NVML health (one thread); see the module doc.

    `on_change` is called on the loop after each batch of relevant events; the reconciler
    passes `state.wake.set`. With an `inventory`, NVIDIA PCI events make it re-enumerate NVML
    and health verdicts are kept in `inventory.health`, so the next read shows them.
    """

    def __init__(
        self,
        bus: EventBus,
        on_change: Callable[[], None],
        loop: asyncio.AbstractEventLoop | None = None,
        inventory: GpuInventory | None = None,
        *,
        nvml_wait_ms: int = 5000,
        context: pyudev.Context | None = None,
    ) -> None:
        self._bus = bus
        self._on_change = on_change
        self._loop = loop
        self._inventory = inventory
        self._nvml_wait_ms = nvml_wait_ms
        self._context = context
        self._monitor: pyudev.Monitor | None = None
        self._health: NvmlHealthThread | None = None

    def start(self) -> bool:
        """Start watching; False (and an `inventory.hotplug-unavailable` event) if udev can't be
        watched, in which case the reconciler's periodic pass still notices changes, later."""
        loop = self._loop = self._loop or asyncio.get_running_loop()
        try:
            monitor = pyudev.Monitor.from_netlink(self._context or pyudev.Context())
            monitor.filter_by("drm")
            monitor.filter_by("pci")
            monitor.start()  # bind the socket first: events sent before this are lost
        except (OSError, pyudev.DeviceNotFoundError) as exc:
            self._bus.publish("inventory.hotplug-unavailable", f"GPU hotplug not watched: {exc}", error=str(exc))
            return False
        self._monitor = monitor
        loop.add_reader(monitor.fileno(), self._on_readable)
        if self._inventory is not None and self._inventory.nvidia is not None:
            self._health = NvmlHealthThread(self._inventory.nvidia, self._report_from_thread, self._nvml_wait_ms)
            self._health.start()
        return True

    def stop(self) -> None:
        if self._monitor is not None and self._loop is not None:
            self._loop.remove_reader(self._monitor.fileno())
            self._monitor = None
        if self._health is not None:
            self._health.stop()
            self._health = None

    # --- udev ----------------------------------------------------------------------------------
    def _on_readable(self) -> None:
        relevant = False
        monitor = self._monitor
        while monitor is not None and (device := monitor.poll(timeout=0)) is not None:
            try:
                relevant |= self._handle(device)
            except Exception:  # one odd uevent must not stop the watch
                log.exception("could not handle uevent %s %s", device.action, device.sys_path)
        if relevant:
            self._on_change()

    def _handle(self, device: pyudev.Device) -> bool:
        if device.subsystem == "pci":
            return self._handle_pci(device)
        if device.subsystem == "drm" and _DRM_NODE.fullmatch(device.sys_name or ""):
            return self._handle_drm(device)
        return False

    def _handle_pci(self, device: pyudev.Device) -> bool:
        vendor, display = _pci_identity(device)
        if vendor is None or not display:
            return False
        action, bus_id = device.action or "change", device.sys_name
        inventory = self._inventory
        if inventory is not None:
            if vendor is GpuVendor.NVIDIA:
                inventory.rescan_nvidia()  # NVML only learns of GPUs when it enumerates
            if action in ("add", "remove"):
                inventory.health.clear_bus(bus_id)  # a re-added (reset) GPU starts healthy
        kind, verb = _PCI_ACTIONS.get(action, ("gpu.changed", action))
        driver = device.properties.get("DRIVER") or device.driver
        self._bus.publish(
            kind,
            f"{vendor.value} GPU at {bus_id} {verb}" + (f" (driver {driver})" if driver else ""),
            **self._data(device, vendor, bus_id, driver),
        )
        return True

    def _handle_drm(self, device: pyudev.Device) -> bool:
        parent = device.find_parent("pci")
        vendor, bus_id = None, None
        if parent is not None:
            vendor, _ = _pci_identity(parent)
            bus_id = parent.sys_name
        action, name = device.action or "change", device.sys_name
        wedged = device.properties.get("WEDGED")
        if action == "change":
            if not wedged:
                return False  # connector hotplug and the like: not the inventory's business
            reason = f"drm device wedged (recovery: {wedged})"
            self._unhealthy(bus_id or name, bus_id, reason, vendor)
            return False  # _unhealthy already woke the loop when it was news
        vendor_name = vendor.value if vendor else "unknown-vendor"
        self._bus.publish(
            "gpu.changed",
            f"{vendor_name} GPU at {bus_id or '?'}: {name} {action}",
            **self._data(device, vendor, bus_id, None),
        )
        return True

    @staticmethod
    def _data(device: pyudev.Device, vendor: GpuVendor | None, bus_id: str | None, driver: str | None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "action": device.action,
            "subsystem": device.subsystem,
            "device": device.sys_name,
            "pci_bus_id": bus_id,
            "vendor": vendor.value if vendor else None,
            "driver": driver,
        }
        if bus_id and vendor in (GpuVendor.AMD, GpuVendor.INTEL):
            data["gpu"] = bus_id  # their GPU id is the PCI address; NVIDIA's is the UUID
        if device.subsystem == "drm" and device.device_node:
            data["node"] = device.device_node
        return data

    # --- health ---------------------------------------------------------------------------------
    def _report_from_thread(self, gpu_id: str, bus_id: str | None, reason: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._unhealthy, gpu_id, bus_id, reason, GpuVendor.NVIDIA)
        except RuntimeError:  # the loop closed between the check and the call
            pass

    def _unhealthy(self, gpu_id: str, bus_id: str | None, reason: str, vendor: GpuVendor | None) -> None:
        fresh = self._inventory.health.mark(gpu_id, reason, bus_id) if self._inventory is not None else True
        if not fresh:
            return  # already known: one event per transition, not per Xid
        self._bus.publish(
            "gpu.unhealthy",
            f"GPU {gpu_id} unhealthy: {reason}",
            gpu=gpu_id,
            pci_bus_id=bus_id,
            vendor=vendor.value if vendor else None,
            reason=reason,
        )
        self._on_change()
