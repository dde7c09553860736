"""Shared pieces of the runner-loop tests: the images of the gitlab-runner double, and a harness
that runs the real reconciler against the GitLab simulator (a double) and the real Docker engine."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from dataclasses import dataclass
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import pytest
from ci_policy import require
from pydantic import SecretStr

from autogit.agent.config import AgentConfig
from autogit.agent.gitlab.adapter import GitLabAdapter
from autogit.agent.inventory.cpu import observe_cpu
from autogit.agent.model import Host
from autogit.agent.reconciler import Reconciler
from autogit.agent.runtime.docker import DockerRuntime
from autogit.agent.runtime.runner_config import short_tokens
from autogit.gitlab_double.gitlab_sim import GitLabSimulator
from autogit.agent.state import AgentState

REPO = Path(__file__).resolve().parents[2]


def _docker_ok() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@dataclass(frozen=True)
class RunnerImages:
    """What gitlab_double/runner_image/build.sh makes: the runner, its helper, and job images."""

    runner: str
    helper: str
    job: str
    job_arm64: str
    job_riscv64: str
    runner_v19: str = ""  # the same double claiming gitlab-runner 19.3.0


def build_runner_images() -> RunnerImages:
    out = subprocess.run(["sh", str(REPO / "gitlab_double/runner_image/build.sh")], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    images = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    return RunnerImages(images["RUNNER_IMAGE"], images["HELPER_IMAGE"], images["JOB_IMAGE"], images["JOB_IMAGE_ARM64"], images["JOB_IMAGE_RISCV64"],
                        images["RUNNER_IMAGE_V19"])


@pytest.fixture(scope="session")
def runner_image() -> RunnerImages:
    require(_docker_ok(), "no Docker engine (scripts/dev-setup starts dockerd)")
    return build_runner_images()


def runner_settings(images: RunnerImages, tmp: Path, **extra: object) -> dict[str, object]:
    """The agent's `runner:` section for tests: the double's images, never a registry."""
    return {
        "image": images.runner, "helper_image": images.helper, "job_image": images.job, "pull_policy": "never",
        "network": "host", "config_dir": str(tmp / "runners"), "drain_timeout": 600, "force_timeout": 10,
        "check_interval": 1, "unhealthy_interval": 2,
    } | extra  # fmt: skip


class Harness:
    """A real reconciler against the simulator and the Docker engine."""

    def __init__(self, sim: GitLabSimulator, images: RunnerImages, tmp: Path, *, token: str | None = None,
                 scope: dict | None = None, fleet: dict | None = None, hostname: str | None = None, **scaling) -> None:  # fmt: skip
        self.sim = sim
        self.images = images
        self.hostname = hostname or f"t{uuid.uuid4().hex[:8]}"
        policy = {"max_runners": 5, "idle_timeout": 2, "runner_cpus": 0, "runner_memory_mb": 0, "reserved_cpus": 0, "reserved_memory_mb": 0} | scaling
        self.config = AgentConfig.model_validate(
            {
                "hostname": self.hostname,
                "gitlab": {"url": sim.url, "scope": scope or {"kind": "projects", "projects": [1, 2]}, "poll_interval": 0.5,
                           "request_timeout": 3, "max_retries": 0},  # fmt: skip
                "scaling": policy,
                # A lone host: these tests check the runner loop, not the fleet (on by default), whose
                # presence registration would outlive the test's clean-up by design.
                "fleet": fleet or {"enabled": False},
                "runner": runner_settings(images, tmp / self.hostname),
            }
        )
        self.state = AgentState()
        cpu = observe_cpu()
        self.host = Host(hostname=self.hostname, arch=cpu.arch, emulated=cpu.emulated, cpus=cpu.cpus, memory_mb=cpu.memory_mb)
        self.runtime = DockerRuntime(self.config.runner, self.hostname)
        self.gitlab = GitLabAdapter(self.config.gitlab, SecretStr(token or sim.private_token))
        self.reconciler = self.new_reconciler()
        self.runner_tags: dict[int, set[str]] = {}  # every runner the simulator ever saw
        self.tokens_seen: set[str] = set()

    def remember_runners(self) -> None:
        for r in self.sim.runners:
            self.runner_tags[r.id] = set(r.tag_list)
            self.tokens_seen.add(r.token)

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
        """What an agent's own shutdown would leave is removed the way the agent removes it."""
        for c in await self.runtime.list():
            token = self.runtime.token_of(c.name)
            await self.runtime.remove(c.name)
            if c.gitlab_id is not None:
                await self.gitlab.delete_runner(c.gitlab_id, token)
        await self.runtime.close()

    def leftovers(self) -> list[str]:
        """Containers and volumes any runner of this harness (or its jobs) left: must be none."""
        client = docker.from_env()
        try:
            names = [c.name for c in client.containers.list(all=True, filters={"label": f"io.autogit.host={self.hostname}"})]
        finally:
            client.close()
        return sorted(set(names) | set(short_token_labels(self.tokens_seen | {r.token for r in self.sim.runners})))


def short_token_labels(tokens: set[str]) -> list[str]:
    """Containers and volumes gitlab-runner labelled as belonging to any of these runner tokens."""
    client = docker.from_env()
    try:
        names: list[str] = []
        # gitlab-runner 17.x's short form and ≥ 18.2's
        for label in {f"com.gitlab.gitlab-runner.runner.id={short}" for token in tokens for short in short_tokens(token)}:
            names += [c.name for c in client.containers.list(all=True, filters={"label": label})]
            names += [v.name for v in client.volumes.list(filters={"label": label})]
        return sorted(names)
    finally:
        client.close()


@pytest.fixture
async def sim() -> AsyncIterator[GitLabSimulator]:
    """The GitLab double with the projects a Harness's default scope names (1 and 2)."""
    simulator = GitLabSimulator(host="127.0.0.1")
    await simulator.start()
    simulator.add_project(2, "autogit/other", group_id=1)
    yield simulator
    await simulator.stop()


@pytest.fixture
async def harness(sim: GitLabSimulator, runner_image, tmp_path) -> AsyncIterator[Harness]:
    h = Harness(sim, runner_image, tmp_path)
    try:
        yield h
        h.remember_runners()
    finally:
        await h.cleanup()
    assert h.leftovers() == [], "containers or volumes left behind"
    assert [r.description for r in sim.runners] == [], "registrations left behind"


def finished(sim: GitLabSimulator, ids) -> bool:
    return all(sim.job(i).status in {"success", "failed"} for i in ids)


