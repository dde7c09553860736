"""GPU reads with a deadline (agent/inventory/gpu/reader.py): a GPU whose NVML calls never
return (fallen off the bus) makes its readings unknown, never blocks the caller past the
deadline, and never piles up threads. The NVML double's `hung` GPU blocks every call on it
until the test releases it, so a read that returns at all proves the bound."""

from __future__ import annotations

import asyncio
import threading

from doubles.nvml_double import NvmlDouble, h100, rtx4090  # noqa: E402

from autogit.agent.inventory.gpu import GpuInventory  # noqa: E402
from autogit.agent.model import GpuVendor  # noqa: E402

NVIDIA_ONLY = {GpuVendor.NVIDIA}


def _reader_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "gpu-read-nvidia" and t.is_alive())


def test_a_hung_read_makes_the_gpus_unknown_and_unhealthy_and_is_reported() -> None:
    nvml = NvmlDouble([h100(), rtx4090(bus_id="00000000:02:00.0", uuid="GPU-0000-4090")])
    inventory = GpuInventory(vendors=NVIDIA_ONLY, nvml=nvml)
    try:
        first = inventory.observe_within(5.0)
        assert [s.gpu.healthy for s in first] == [True, True]
        assert first[0].reading.temperature_c == 31.0 and inventory.hung == []

        nvml.gpus[0].hung = True
        stuck = inventory.observe_within(0.2)  # returns although NVML never answers
        assert [s.gpu.id for s in stuck] == [s.gpu.id for s in first]  # unknown is not absent
        for snap in stuck:
            assert not snap.gpu.healthy
            assert snap.reading.utilization_pct is None and snap.reading.temperature_c is None
            assert snap.reading.memory_used_mb is None and snap.reading.power_w is None
            assert snap.health_reason is not None and "blocked" in snap.health_reason
        assert [h.vendor for h in inventory.hung] == ["nvidia"]
        assert "readings unknown" in inventory.problems["nvidia"]

        # Still blocked: a second read joins the one in flight instead of starting another thread.
        assert not inventory.observe_within(0.1)[0].gpu.healthy
        assert _reader_threads() == 1 and nvml.blocked_calls == 1
    finally:
        nvml.unhang()

    recovered = inventory.observe_within(5.0)
    assert [s.gpu.healthy for s in recovered] == [True, True]
    assert recovered[0].reading.temperature_c == 31.0
    assert inventory.hung == [] and "nvidia" not in inventory.problems
    inventory.close()


async def test_the_event_loop_runs_while_a_read_is_blocked() -> None:
    nvml = NvmlDouble([h100()])
    inventory = GpuInventory(vendors=NVIDIA_ONLY, nvml=nvml)
    await inventory.read(5.0)
    nvml.gpus[0].hung = True
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    try:
        [snap] = await inventory.read(0.3)
        assert not snap.gpu.healthy and snap.reading.utilization_pct is None
        assert ticks > 1  # the loop kept running while NVML was blocked
    finally:
        task.cancel()
        nvml.unhang()
    [snap] = await inventory.read(5.0)
    assert snap.gpu.healthy


def test_rescan_and_close_do_not_wait_on_a_blocked_read() -> None:
    nvml = NvmlDouble([h100()])
    inventory = GpuInventory(vendors=NVIDIA_ONLY, nvml=nvml)
    inventory.observe_within(5.0)
    nvml.gpus[0].hung = True
    try:
        inventory.observe_within(0.1)  # a reader thread now holds the backend's lock, blocked
        inventory.rescan_nvidia()  # returns: it only sets a flag (hotplug calls it on the loop)
        assert inventory.nvidia is not None and inventory.nvidia.rescan_pending
        inventory.nvidia.close(timeout=0.1)  # gives up instead of waiting for good
        assert nvml.refcount == 1  # not shut down under the blocked call
    finally:
        nvml.unhang()
    inventory.observe_within(5.0)
    inventory.close()
    assert nvml.refcount == 0
