"""Hotplug end to end through real udev netlink (umockdev): testbed uevent → pyudev monitor on
the asyncio loop → HotplugWatcher → EventBus and a wake-up → the next inventory read.

Run: umockdev-wrapper .venv/bin/python -m pytest tests/integration/test_hotplug_umockdev.py
Only NVML is a double (NvmlDouble, at the pynvml boundary); sysfs, udev and the code are real.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from umockdev_support import add_amd, add_intel, add_nvidia, add_pci, remove_devices

from doubles.nvml_double import NvmlDouble, h100  # noqa: E402

from autogit.agent.events import Event, EventBus  # noqa: E402
from autogit.agent.inventory.gpu import GpuInventory, GpuSnapshot  # noqa: E402
from autogit.agent.inventory.hotplug import HotplugWatcher  # noqa: E402
from autogit.agent.model import GpuVendor  # noqa: E402

pytestmark = pytest.mark.umockdev

TIMEOUT = 5.0
H100_UUID = h100().uuid


class Harness:
    """The watcher wired as the reconciler wires it, with the events it published."""

    def __init__(self, inventory: GpuInventory) -> None:
        self.inventory = inventory
        self.bus = EventBus()
        self.wake = asyncio.Event()
        self.events: list[Event] = []
        self._arrived = asyncio.Event()
        self.bus.add_listener(self._record)
        self.watcher = HotplugWatcher(self.bus, self.wake.set, asyncio.get_running_loop(), inventory, nvml_wait_ms=50)

    def _record(self, event: Event) -> None:
        self.events.append(event)
        self._arrived.set()

    async def until(self, match: Callable[[Event], bool]) -> Event:
        """The first event (old or new) that matches, waiting up to TIMEOUT for it."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                if found := next((e for e in self.events if match(e)), None):
                    return found
                self._arrived.clear()
                await self._arrived.wait()

    async def read_until(self, match: Callable[[list[GpuSnapshot]], bool]) -> list[GpuSnapshot]:
        async with asyncio.timeout(TIMEOUT):
            while not match(snaps := self.inventory.observe()):
                await asyncio.sleep(0.02)
            return snaps


def by_id(snaps: list[GpuSnapshot]) -> dict[str, GpuSnapshot]:
    return {s.gpu.id: s for s in snaps}


@pytest.fixture
async def host(umockdev_testbed, tmp_path: Path):
    """An H100 (PCI only, NVML double), an RX 7900 XTX and an Intel iGPU; the watcher started."""
    tb = umockdev_testbed
    nvidia_pci = add_nvidia(tb)
    amd = add_amd(tb, "0000:03:00.0", minor=1)
    add_intel(tb, "0000:00:02.0", minor=0)
    nvml = NvmlDouble([h100()])
    harness = Harness(GpuInventory(Path("/"), tmp_path / "dev", nvml=nvml))
    assert harness.watcher.start()
    yield SimpleNamespace(tb=tb, harness=harness, nvml=nvml, nvidia_pci=nvidia_pci, amd=amd)
    harness.watcher.stop()
    harness.inventory.close()


async def test_initial_inventory_sees_every_vendor(host) -> None:
    harness = host.harness
    snaps = harness.inventory.observe()
    assert [(s.gpu.vendor, s.gpu.id) for s in snaps] == [
        (GpuVendor.NVIDIA, H100_UUID),
        (GpuVendor.AMD, "0000:03:00.0"),
        (GpuVendor.INTEL, "0000:00:02.0"),
    ]
    amd = by_id(snaps)["0000:03:00.0"]
    assert amd.gpu.memory_mb == 24 * 1024 and amd.reading.temperature_c == 41.0 and amd.reading.power_w == 17.0
    assert Path(amd.render_node or "").name == "renderD129"
    assert by_id(snaps)["0000:00:02.0"].gpu.integrated


async def test_hot_added_and_removed_amd_gpu(host) -> None:
    tb, harness = host.tb, host.harness
    add_pci(tb, "0000:00:1f.0", "0x8086", "0x7a06", "0x060100", None)  # an ISA bridge: not a GPU
    new = add_amd(tb, "0000:83:00.0", minor=2, vram_gib=16)

    added = await harness.until(lambda e: e.type == "gpu.added" and e.data["pci_bus_id"] == "0000:83:00.0")
    assert added.data == {
        "action": "add", "subsystem": "pci", "device": "0000:83:00.0", "pci_bus_id": "0000:83:00.0",
        "vendor": "amd", "driver": "amdgpu", "gpu": "0000:83:00.0",
    }  # fmt: skip
    await harness.until(lambda e: e.type == "gpu.changed" and e.data["device"] == "renderD130")
    assert harness.wake.is_set()
    assert not any(e.data.get("pci_bus_id") == "0000:00:1f.0" for e in harness.events)
    snap = by_id(harness.inventory.observe())["0000:83:00.0"]
    assert snap.gpu.memory_mb == 16 * 1024 and Path(snap.render_node or "").name == "renderD130"

    harness.wake.clear()
    remove_devices(tb, *new)
    removed = await harness.until(lambda e: e.type == "gpu.removed" and e.data["pci_bus_id"] == "0000:83:00.0")
    assert removed.data["vendor"] == "amd"  # from the uevent: sysfs is already gone
    assert harness.wake.is_set()
    assert "0000:83:00.0" not in by_id(harness.inventory.observe())


async def test_nvidia_unbind_and_bind_re_enumerate_nvml(host) -> None:
    tb, harness, nvml, nvidia_pci = host.tb, host.harness, host.nvml, host.nvidia_pci
    assert H100_UUID in by_id(harness.inventory.observe())
    h100_double = nvml.gpus.pop()  # the driver lets go of the GPU …
    tb.uevent(nvidia_pci, "unbind")  # … and the kernel says so
    changed = await harness.until(lambda e: e.type == "gpu.changed" and e.data["action"] == "unbind")
    assert changed.data["vendor"] == "nvidia" and changed.data["pci_bus_id"] == "0000:01:00.0"
    await harness.read_until(lambda snaps: H100_UUID not in by_id(snaps))

    nvml.gpus.append(h100_double)
    tb.uevent(nvidia_pci, "bind")
    await harness.until(lambda e: e.type == "gpu.changed" and e.data["action"] == "bind")
    snaps = await harness.read_until(lambda snaps: H100_UUID in by_id(snaps))
    assert by_id(snaps)[H100_UUID].gpu.healthy


async def test_critical_xid_makes_the_gpu_unhealthy(host) -> None:
    harness, nvml = host.harness, host.nvml
    assert nvml.wait_registered(H100_UUID)
    nvml.inject_xid(H100_UUID, 31)  # MMU fault from a user's kernel: ignored
    nvml.inject_xid(H100_UUID, 79)  # fallen off the bus
    event = await harness.until(lambda e: e.type == "gpu.unhealthy")
    assert event.data["gpu"] == H100_UUID and event.data["reason"] == "critical Xid 79"
    assert harness.wake.is_set()
    snap = by_id(harness.inventory.observe())[H100_UUID]
    assert not snap.gpu.healthy and snap.health_reason == "critical Xid 79"


async def test_wedged_drm_device_is_unhealthy_until_re_added(host) -> None:
    tb, harness = host.tb, host.harness
    pci, card, _render = host.amd
    tb.set_property(card, "WEDGED", "rebind,bus-reset")
    tb.uevent(card, "change")
    event = await harness.until(lambda e: e.type == "gpu.unhealthy")
    assert event.data["gpu"] == "0000:03:00.0" and "rebind,bus-reset" in event.data["reason"]
    assert not by_id(harness.inventory.observe())["0000:03:00.0"].gpu.healthy

    # The recovery the kernel asked for (bus reset) removes and re-adds the device.
    remove_devices(tb, *host.amd)
    await harness.until(lambda e: e.type == "gpu.removed" and e.data["pci_bus_id"] == "0000:03:00.0")
    harness.events.clear()
    add_amd(tb, "0000:03:00.0", minor=1)
    await harness.until(lambda e: e.type == "gpu.changed" and e.data["device"] == "renderD129")
    assert by_id(harness.inventory.observe())["0000:03:00.0"].gpu.healthy
