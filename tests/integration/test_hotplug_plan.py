"""Hotplug changes the plan: the real agent (autogit.agent.daemon.Agent) with its real GPU
inventory and udev watcher under umockdev; an AMD card plugged in makes a waiting GPU job
startable, and pulling it out drains the runner that held it.

Run under umockdev-wrapper (scripts/test does).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, UTC
from pathlib import Path

import pytest
from umockdev_support import add_amd, remove_devices

from autogit.agent.config import AgentConfig
from autogit.agent.daemon import Agent
from autogit.agent.model import Job, Runner, RunnerKind, WaitReason
from autogit.agent.planner import plan

pytestmark = pytest.mark.umockdev

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
GPU_JOB = Job(id=7, project_id=1, tags=["gpu", "rocm"], created_at=NOW)


async def _until(condition, what: str, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_plugging_a_gpu_in_and_out_changes_the_plan(umockdev_testbed, tmp_path: Path) -> None:
    tb = umockdev_testbed
    config = AgentConfig.model_validate(
        {
            "api": {"socket": str(tmp_path / "agent.sock")},
            "runner": {"config_dir": str(tmp_path / "runners")},
            "gpu": {"vendors": ["amd"], "readings_interval": 0.05},
        }
    )
    agent = Agent(config, None)
    await agent._start_hotplug()
    assert agent._hotplug is not None
    try:
        def decide(runners=()):
            host = agent.reconciler.host_source()
            return plan(host, list(runners), [GPU_JOB], config.scaling, NOW)

        before = decide()
        assert before.start == [] and before.waiting[0].reason is WaitReason.NO_MATCHING_HARDWARE

        card = add_amd(tb, "0000:83:00.0", minor=2, vram_gib=16)
        await _until(lambda: any(g.id == "0000:83:00.0" for g in agent.reconciler.host_source().gpus), "the card in the host")
        assert agent.state.wake.is_set()  # the reconciler is woken for an immediate pass
        after = decide()
        assert [(s.kind, s.gpu) for s in after.start] == [(RunnerKind.GPU, "0000:83:00.0")]

        # Live readings follow the card without any uevent (the agent's readings loop).
        readings = asyncio.create_task(agent._watch_gpus())
        try:
            assert agent.state.gpu_readings["0000:83:00.0"].utilization_pct == 3.0
            tb.set_attribute(card[0], "gpu_busy_percent", "93")
            await _until(lambda: agent.state.gpu_readings["0000:83:00.0"].utilization_pct == 93.0, "the new reading")
        finally:
            readings.cancel()

        holder = Runner(id="r-gpu", tags=["gpu", "rocm"], kind=RunnerKind.GPU, gpu="0000:83:00.0", busy=True)
        agent.state.wake.clear()
        remove_devices(tb, *card)
        await _until(lambda: not agent.reconciler.host_source().gpus, "the card gone from the host")
        assert agent.state.wake.is_set()
        gone = decide([holder])
        assert [(d.runner, d.reason) for d in gone.drain] == [("r-gpu", "gpu-gone")] and gone.stop == []
        events = [e.type for e in agent.state.bus.history()]
        assert "gpu.added" in events and "gpu.removed" in events
    finally:
        agent._hotplug.stop()
        agent.gpus.close()
