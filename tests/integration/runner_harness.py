"""Shared pieces of the runner-loop tests: the runner double image, and a harness that runs the
real reconciler against the GitLab simulator (a double) and the real Docker engine."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ci_policy import require
from pydantic import SecretStr

from autogit.agent.config import AgentConfig
from autogit.agent.gitlab.adapter import GitLabAdapter
from autogit.agent.inventory.cpu import observe_cpu
from autogit.agent.model import Host
from autogit.agent.reconciler import Reconciler
from autogit.agent.runtime.docker import DockerRuntime
from autogit.agent.sim.gitlab_sim import GitLabSimulator
from autogit.agent.state import AgentState

REPO = Path(__file__).resolve().parents[2]


def _docker_ok() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def runner_image() -> str:
    require(_docker_ok(), "no Docker engine (scripts/dev-setup starts dockerd)")
    out = subprocess.run(["sh", str(REPO / "tests/doubles/runner_image/build.sh")], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


class Harness:
    """A real reconciler against the simulator and the Docker engine."""

    def __init__(self, sim: GitLabSimulator, image: str, tmp: Path, **scaling) -> None:
        self.sim = sim
        self.hostname = f"t{uuid.uuid4().hex[:8]}"
        policy = {"max_runners": 5, "idle_timeout": 2, "runner_cpus": 0, "runner_memory_mb": 0, "reserved_cpus": 0, "reserved_memory_mb": 0} | scaling
        self.config = AgentConfig.model_validate(
            {
                "hostname": self.hostname,
                "gitlab": {"url": sim.url, "scope": {"kind": "projects", "projects": [1, 2]}, "poll_interval": 0.5, "request_timeout": 3, "max_retries": 0},
                "scaling": policy,
                "runner": {"image": image, "network": "host", "config_dir": str(tmp / "runners"), "shutdown_timeout": 60, "check_interval": 1},
            }
        )
        self.state = AgentState()
        cpu = observe_cpu()
        self.host = Host(hostname=self.hostname, arch=cpu.arch, emulated=cpu.emulated, cpus=cpu.cpus, memory_mb=cpu.memory_mb)
        self.runtime = DockerRuntime(self.config.runner, self.hostname)
        self.gitlab = GitLabAdapter(self.config.gitlab, SecretStr(sim.private_token))
        self.reconciler = self.new_reconciler()
        self.runner_tags: dict[int, set[str]] = {}  # every runner the simulator ever saw

    def remember_runners(self) -> None:
        for r in self.sim.runners:
            self.runner_tags[r.id] = set(r.tag_list)

    def new_reconciler(self) -> Reconciler:
        return Reconciler(self.config, self.state, self.runtime, self.gitlab, lambda: self.host)

    async def until(self, predicate, timeout: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await self.reconciler.reconcile_once(full_poll=True)
            self.remember_runners()
            if predicate():
                return
            await asyncio.sleep(0.3)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; jobs: {[(j.id, j.status) for j in self.sim.jobs]}")

    async def cleanup(self) -> None:
        for c in await self.runtime.list():
            await self.runtime.remove(c.name)
        await self.runtime.close()


@pytest.fixture
async def harness(runner_image, tmp_path) -> AsyncIterator[Harness]:
    sim = GitLabSimulator(host="127.0.0.1")
    await sim.start()
    sim.add_project(2, "autogit/other", group_id=1)
    h = Harness(sim, runner_image, tmp_path)
    try:
        yield h
    finally:
        await h.cleanup()
        await sim.stop()


def finished(sim: GitLabSimulator, ids) -> bool:
    return all(sim.job(i).status in {"success", "failed"} for i in ids)


