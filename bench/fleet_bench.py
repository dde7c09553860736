"""Benchmark: a fleet of agents on one GitLab (fleet.enabled, ADR-009).

For 1, 3 and 5 agents (real reconcilers, distinct hostnames and config dirs) against the GitLab
double and the gitlab-runner double on the real Docker engine, a stream of jobs: runners
registered per job, and pending → job running (GitLab's queued_duration) p50/p95. The single
host with the fleet off, measured in the same run, is the baseline.

    .venv/bin/python bench/fleet_bench.py [--jobs 12]

Goals (issue 12): ≤ 1.05 runners per job; pickup p50 within 1.2× the single-host figure.
Needs Docker and the runner double's images (gitlab_double/runner_image/build.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr

from autogit.agent.config import AgentConfig
from autogit.agent.fleet import join_settle
from autogit.agent.gitlab.adapter import GitLabAdapter
from autogit.agent.inventory.cpu import observe_cpu
from autogit.agent.model import Host
from autogit.agent.reconciler import Reconciler
from autogit.agent.runtime.docker import DockerRuntime
from autogit.agent.state import AgentState
from autogit.gitlab_double import GitLabSimulator

REPO = Path(__file__).resolve().parents[1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Agent:
    def __init__(self, sim: GitLabSimulator, images: dict[str, str], name: str, fleet: bool, workdir: Path) -> None:
        cpu = observe_cpu()
        self.config = AgentConfig.model_validate({
            "hostname": name,
            "gitlab": {"url": sim.url, "scope": {"kind": "projects", "projects": [1]}, "poll_interval": 0.5, "max_retries": 0},
            "scaling": {"max_runners": 4, "idle_timeout": 2, "runner_cpus": 0, "runner_memory_mb": 0, "reserved_cpus": 0, "reserved_memory_mb": 0},
            "fleet": {"enabled": fleet, "hold_off": 4, "membership_ttl": 4, "heartbeat_interval": 1},
            "runner": {"image": images["RUNNER_IMAGE"], "helper_image": images["HELPER_IMAGE"], "job_image": images["JOB_IMAGE"],
                       "pull_policy": "never", "network": "host", "config_dir": str(workdir / name), "check_interval": 1},
        })  # fmt: skip
        self.state = AgentState()
        host = Host(hostname=name, arch=cpu.arch, emulated=cpu.emulated, cpus=cpu.cpus, memory_mb=cpu.memory_mb)
        self.runtime = DockerRuntime(self.config.runner, name)
        self.gitlab = GitLabAdapter(self.config.gitlab, SecretStr(sim.private_token))
        self.reconciler = Reconciler(self.config, self.state, self.runtime, self.gitlab, lambda: host)

    async def close(self) -> None:
        for c in await self.runtime.list():
            token = self.runtime.token_of(c.name)
            await self.runtime.remove(c.name)
            if c.gitlab_id is not None:
                await self.gitlab.delete_runner(c.gitlab_id, token)
        await self.runtime.close()


async def scenario(images: dict[str, str], n_agents: int, fleet: bool, n_jobs: int) -> tuple[float, list[float]]:
    """(runners registered per job, pickup ms per job)."""
    sim = GitLabSimulator()
    await sim.start()
    workdir = Path(tempfile.mkdtemp(prefix="autogit-fleet-bench-"))
    agents = [Agent(sim, images, f"fb{os.getpid()}x{i}", fleet, workdir) for i in range(n_agents)]
    tasks = [asyncio.create_task(a.reconciler.run_forever()) for a in agents]
    jitter = random.Random(11)
    try:
        if fleet:  # every agent sees every other before the jobs come
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not all(len(a.state.live_hosts) == n_agents for a in agents):
                await asyncio.sleep(0.2)
            await asyncio.sleep(join_settle(1))  # newcomers rank last until their peers have read them
        before = sim.runners_ever()
        jobs = []
        for _ in range(n_jobs):
            jobs.append(sim.add_job(project_id=1, script=["sleep 2"]).id)
            await asyncio.sleep(jitter.uniform(0.2, 1.0))
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not all(sim.job(j).status in {"success", "failed"} for j in jobs):
            await asyncio.sleep(0.2)
        registered = len(sim.runners_ever()) - len(before)
        picks = [(sim.job(j).started_at - sim.job(j).created_at) * 1000 for j in jobs if sim.job(j).started_at]  # type: ignore[operator]
        return registered / n_jobs, picks
    finally:
        for a in agents:
            a.reconciler.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        for a in agents:
            await a.close()
        await sim.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=12)
    args = ap.parse_args()
    built = subprocess.run(["sh", str(REPO / "gitlab_double/runner_image/build.sh")], capture_output=True, text=True, check=True).stdout
    images = dict(line.split("=", 1) for line in built.splitlines() if "=" in line)
    print(f"{args.jobs} jobs, 0.2–1.0 s apart, each 'sleep 2'; poll 0.5 s, hold_off 4 s; webhooks off")
    base_rate, base = asyncio.run(scenario(images, 1, False, args.jobs))
    print(f"baseline  1 agent, fleet off   runners/job {base_rate:.2f}   pickup p50 {pct(base, 0.5):6.0f} ms  p95 {pct(base, 0.95):6.0f} ms")
    # What the fleet prevents: three agents that each plan over the whole queue.
    alone_rate, alone = asyncio.run(scenario(images, 3, False, args.jobs))
    print(f"no fleet  3 agents, fleet off  runners/job {alone_rate:.2f}   pickup p50 {pct(alone, 0.5):6.0f} ms  p95 {pct(alone, 0.95):6.0f} ms")
    for n in (1, 3, 5):
        rate, picks = asyncio.run(scenario(images, n, True, args.jobs))
        print(f"fleet     {n} agent(s)          runners/job {rate:.2f}   pickup p50 {pct(picks, 0.5):6.0f} ms  p95 {pct(picks, 0.95):6.0f} ms"
              f"   (p50 {pct(picks, 0.5) / max(1.0, pct(base, 0.5)):.2f}× single host)")  # fmt: skip
    print("goal      runners/job ≤ 1.05; pickup p50 ≤ 1.2× the single-host figure")


if __name__ == "__main__":
    main()
