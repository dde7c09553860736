"""A GPU fallen off the bus that hangs NVML does not freeze the agent: the real Agent (its
socket API, its readings loop, its event bus) with the NVML double's hung GPU. The socket
answers while the read is blocked; the GPU shows as unhealthy with unknown readings, one
`gpu.read-hung` event says why, and `gpu.read-recovered` follows once NVML answers again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from doubles.nvml_double import NvmlDouble, h100  # noqa: E402

from autogit.agent.api.client import AgentClient
from autogit.agent.config import AgentConfig
from autogit.agent.daemon import Agent
from autogit.agent.inventory.gpu import GpuInventory
from autogit.agent.model import GpuVendor


async def _until(condition, what: str, timeout: float = 10.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def _events(agent: Agent, kind: str) -> list[str]:
    return [e.message for e in agent.state.bus.history() if e.type == kind]


async def test_the_socket_answers_while_nvml_hangs(tmp_path: Path) -> None:
    config = AgentConfig.model_validate(
        {
            "api": {"socket": str(tmp_path / "agent.sock"), "group": "nonexistent-group"},
            "runner": {"config_dir": str(tmp_path / "runners")},
            "gpu": {"vendors": ["nvidia"], "readings_interval": 0.05, "read_timeout": 0.3},
        }
    )
    agent = Agent(config, None)
    nvml = NvmlDouble([h100()])
    agent.gpus = GpuInventory(vendors={GpuVendor.NVIDIA}, nvml=nvml)
    agent._host = agent._observe_host()
    await agent.api.start()
    loop = asyncio.create_task(agent.reconciler.run_forever())  # publishes the host the socket shows
    readings = asyncio.create_task(agent._watch_gpus())
    try:
        await _until(lambda: agent.state.host is not None, "the first pass")
        async with AgentClient(config.api.socket) as client:
            [view] = (await client.gpus()).gpus
            assert view.gpu.healthy and view.reading is not None and view.reading.temperature_c == 31.0

            nvml.gpus[0].hung = True
            await _until(lambda: _events(agent, "gpu.read-hung"), "the gpu.read-hung event")
            assert nvml.blocked_calls == 1  # the read is still blocked in "NVML"
            await _until(lambda: not agent.state.gpus()[0].healthy, "the pass that sees it")
            status = await client.status()  # served while it is
            assert status.host.arch
            [view] = (await client.gpus()).gpus
            assert not view.gpu.healthy
            assert view.reading is not None and view.reading.temperature_c is None and view.reading.utilization_pct is None
            [line] = _events(agent, "gpu.read-hung")
            assert "nvidia GPU read blocked" in line and "readings unknown" in line

            nvml.unhang()
            await _until(lambda: _events(agent, "gpu.read-recovered"), "the gpu.read-recovered event")
            await _until(lambda: agent.state.gpus()[0].healthy, "the GPU healthy again")
            [view] = (await client.gpus()).gpus
            assert view.gpu.healthy and view.reading is not None and view.reading.temperature_c == 31.0
    finally:
        nvml.unhang()
        agent._stop.set()
        readings.cancel()
        agent.reconciler.stop()
        await asyncio.wait_for(loop, 10)
        await agent.api.stop()
        agent.gpus.close()
