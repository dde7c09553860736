"""Benchmark: scale-up latency and the agent's idle footprint.

1. Scale-up latency: from a job becoming pending in the GitLab simulator to its runner
   container running (the agent's `runner.started` event, published once Docker has started
   the container), p50 and p95 over N jobs, with webhooks and with polling only. Runners are
   one-job runners, so every job needs a new runner. Printed beside the physical floor: a bare
   `docker run -d` of the same image, measured in the same run (Docker SDK and CLI).
2. Pickup, what users feel: pending → job running (GitLab's queued_duration: the job's
   started_at minus its created_at, as the simulator records them) with the gitlab-runner double
   and its docker executor: cold (one-job runners, webhooks: every job needs a new runner) and
   warm (an idle reusable runner waits; with workhorse long polling, and with plain polling
   every check_interval). Beside the same bare `docker run -d` of the runner image.
3. Idle footprint: `autogit-agent run` as its own process with 100 pending jobs it can never
   serve; its resident memory and CPU use over a window.

    .venv/bin/python bench/scaleup_bench.py [--jobs 50] [--poll 5] [--idle-seconds 30]

Needs Docker and the runner double image (gitlab_double/runner_image/build.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import psutil
import yaml
from pydantic import SecretStr

from autogit.agent.config import AgentConfig
from autogit.agent.gitlab.adapter import GitLabAdapter
from autogit.agent.gitlab.webhook import WebhookListener
from autogit.agent.inventory.cpu import observe_cpu
from autogit.agent.model import Host
from autogit.agent.reconciler import Reconciler
from autogit.agent.runtime.docker import DockerRuntime
from autogit.gitlab_double.gitlab_sim import GitLabSimulator
from autogit.agent.state import AgentState

REPO = Path(__file__).resolve().parents[1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def fmt(label: str, ms: list[float]) -> str:
    return f"{label:<52} p50 {pct(ms, 0.5):7.0f} ms   p95 {pct(ms, 0.95):7.0f} ms   (n={len(ms)})"


def bare_docker_run(image: str, n: int) -> tuple[list[float], list[float]]:
    client = docker.from_env()
    sdk, cli = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        c = client.containers.run(image, command=["run"], detach=True, network_mode="host")
        sdk.append((time.perf_counter() - t0) * 1000)
        c.remove(force=True)
        t0 = time.perf_counter()
        cid = subprocess.run(["docker", "run", "-d", "--network", "host", image, "run"], capture_output=True, text=True, check=True).stdout.strip()
        cli.append((time.perf_counter() - t0) * 1000)
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
    client.close()
    return sdk, cli


def runner_section(images: dict[str, str], workdir: Path, mode: str) -> dict[str, object]:
    return {"image": images["RUNNER_IMAGE"], "helper_image": images["HELPER_IMAGE"], "job_image": images["JOB_IMAGE"],
            "pull_policy": "never", "network": "host", "config_dir": str(workdir), "mode": mode, "check_interval": 1}  # fmt: skip


@contextlib.asynccontextmanager
async def agent_under_bench(sim: GitLabSimulator, runner: dict[str, object], scaling: dict[str, object], webhooks: bool, poll: float):
    """The real reconciler (and webhook listener) against the simulator, running until the block ends."""
    cpu = observe_cpu()
    config = AgentConfig.model_validate(
        {
            "hostname": f"bench{os.getpid()}",
            "gitlab": {"url": sim.url, "scope": {"kind": "projects", "projects": [1]}, "poll_interval": poll, "max_retries": 0},
            "scaling": {"max_runners": 4, "runner_cpus": 0, "runner_memory_mb": 0} | scaling,
            "runner": runner,
            "webhook": {"enabled": webhooks, "listen": "127.0.0.1:0"},
        }
    )
    state = AgentState()
    host = Host(hostname="bench", arch=cpu.arch, emulated=cpu.emulated, cpus=cpu.cpus, memory_mb=cpu.memory_mb)
    runtime = DockerRuntime(config.runner, config.hostname or "bench")
    gitlab = GitLabAdapter(config.gitlab, SecretStr(sim.private_token))
    reconciler = Reconciler(config, state, runtime, gitlab, lambda: host)
    listener = None
    if webhooks:
        async def on_job(project_id: int, job_id: int, _status: str) -> None:
            status, job = await gitlab.get_job(project_id, job_id)
            reconciler.hint_job(status, job)

        listener = WebhookListener(config.webhook, SecretStr("bench"), state.bus, on_job)
        await listener.start()
        sim.add_webhook(f"http://127.0.0.1:{listener.port}{config.webhook.path}", "bench")
    task = asyncio.create_task(reconciler.run_forever())
    try:
        yield state, runtime
    finally:
        reconciler.stop()
        await task
        for c in await runtime.list():
            await runtime.remove(c.name)
        await runtime.close()
        if listener is not None:
            await listener.stop()


async def scale_up(images: dict[str, str], n: int, webhooks: bool, poll: float) -> list[float]:
    """Pending → its runner container running (ms) per job, one-job runners."""
    sim = GitLabSimulator()
    await sim.start()
    workdir = Path(tempfile.mkdtemp(prefix="autogit-bench-"))
    latencies = []
    jitter = random.Random(42)
    try:
        async with agent_under_bench(sim, runner_section(images, workdir, "one-job"), {"idle_timeout": 60}, webhooks, poll) as (state, _):
            started: dict[int, float] = {}
            state.bus.add_listener(lambda e: [started.setdefault(j, time.monotonic()) for j in e.data.get("for_jobs", [])] if e.type == "runner.started" else None)
            await asyncio.sleep(1)
            for _ in range(n):
                t0 = time.monotonic()
                job = sim.add_job(project_id=1, script=["true"])
                while job.id not in started:
                    await asyncio.sleep(0.005)
                latencies.append((started[job.id] - t0) * 1000)
                while sim.job(job.id).status not in {"success", "failed"}:
                    await asyncio.sleep(0.05)
                # Arrivals at random points of the poll cycle, as real jobs come.
                await asyncio.sleep(jitter.uniform(0, poll))
    finally:
        await sim.stop()
    return latencies


async def pickup(images: dict[str, str], n: int, mode: str, gap: tuple[float, float]) -> list[float]:
    """Pending → running (ms) per job. mode: cold | warm-longpoll | warm-poll; each job arrives
    `gap` seconds (uniform) after the previous one finished."""
    sim = GitLabSimulator(long_poll_s=50.0 if mode == "warm-longpoll" else 0.0)
    await sim.start()
    workdir = Path(tempfile.mkdtemp(prefix="autogit-bench-"))
    cold = mode == "cold"
    runner = runner_section(images, workdir, "one-job" if cold else "reusable")
    scaling = {"idle_timeout": 600, "warm_pool": 0 if cold else 1}
    out: list[float] = []
    jitter = random.Random(7)
    try:
        async with agent_under_bench(sim, runner, scaling, webhooks=True, poll=5) as (_, runtime):
            if not cold:  # the warm pool's runner is up and polling
                while not any(c.status == "running" for c in await runtime.list()):
                    await asyncio.sleep(0.1)
                await asyncio.sleep(2)
            for _ in range(n):
                job = sim.add_job(project_id=1, script=["true"])
                while sim.job(job.id).started_at is None:
                    await asyncio.sleep(0.002)
                out.append((sim.job(job.id).started_at - job.created_at) * 1000)  # type: ignore[operator]
                while sim.job(job.id).status not in {"success", "failed"}:
                    await asyncio.sleep(0.02)
                await asyncio.sleep(jitter.uniform(*gap))
    finally:
        await sim.stop()
    return out


def idle_footprint(seconds: float) -> tuple[float, float, float]:
    """(RSS MiB, CPU % of one core) of a real agent process with 100 unservable jobs pending;
    plus the RSS of a bare Python interpreter importing nothing, for scale."""

    async def main() -> tuple[float, float]:
        sim = GitLabSimulator()
        await sim.start()
        for i in range(100):
            sim.add_job(project_id=1, tags=["s390x", f"never-{i % 7}"])
        tmp = Path(tempfile.mkdtemp(prefix="autogit-idle-"))
        cfg = {
            "hostname": f"idle{os.getpid()}",
            "gitlab": {"url": sim.url, "scope": {"kind": "projects", "projects": [1]}, "poll_interval": 10},
            "api": {"socket": str(tmp / "agent.sock"), "group": "none"},
            "runner": {"config_dir": str(tmp / "runners")},
        }
        (tmp / "agent.yaml").write_text(yaml.safe_dump(cfg))
        env = dict(os.environ, AUTOGIT_GITLAB_TOKEN=sim.private_token)
        exe = Path(sys.executable).parent / "autogit-agent"
        proc = subprocess.Popen([str(exe), "run", "--config", str(tmp / "agent.yaml")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            await asyncio.sleep(5)  # start-up and first passes
            p = psutil.Process(proc.pid)
            cpu0 = sum(p.cpu_times()[:2])
            await asyncio.sleep(seconds)
            cpu = (sum(p.cpu_times()[:2]) - cpu0) / seconds * 100
            rss = p.memory_info().rss / 2**20
        finally:
            proc.terminate()
            proc.wait(30)
            await sim.stop()
        return rss, cpu

    rss, cpu = asyncio.run(main())
    bare = subprocess.run([sys.executable, "-c", "import psutil,os;print(psutil.Process(os.getpid()).memory_info().rss)"], capture_output=True, text=True)
    return rss, cpu, int(bare.stdout) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--poll", type=float, default=5.0)
    ap.add_argument("--idle-seconds", type=float, default=30.0)
    args = ap.parse_args()
    built = subprocess.run(["sh", str(REPO / "gitlab_double/runner_image/build.sh")], capture_output=True, text=True, check=True).stdout
    images = dict(line.split("=", 1) for line in built.splitlines() if "=" in line)
    image = images["RUNNER_IMAGE"]
    print(f"image {image}; {args.jobs} jobs per mode; poll interval {args.poll:g}s; one-job runners")
    sdk, cli = bare_docker_run(image, min(args.jobs, 20))
    # A runner that just finished a job asks again only after check_interval (1 s): a job arriving
    # in that gap waits for it, one arriving later is handed over by the held long poll at once.
    cases = {
        "cold (one-job), 0.2–1.2 s apart": ("cold", (0.2, 1.2)),
        "warm (long poll), 0.2–1.2 s apart": ("warm-longpoll", (0.2, 1.2)),
        "warm (long poll), 2–5 s apart": ("warm-longpoll", (2.0, 5.0)),
        "warm (poll 1 s), 2–5 s apart": ("warm-poll", (2.0, 5.0)),
    }
    picks = {label: asyncio.run(pickup(images, args.jobs, mode, gap)) for label, (mode, gap) in cases.items()}
    hooks = asyncio.run(scale_up(images, args.jobs, webhooks=True, poll=args.poll))
    polled = asyncio.run(scale_up(images, args.jobs, webhooks=False, poll=args.poll))
    print(fmt("baseline  bare docker run -d (SDK)", sdk))
    print(fmt("baseline  bare docker run -d (CLI)", cli))
    print(fmt("agent     pending → runner running (webhook)", hooks))
    print(fmt(f"agent     pending → runner running (poll {args.poll:g}s)", polled))
    print(f"ratio     webhook p50 / bare SDK p50 = {pct(hooks, 0.5) / pct(sdk, 0.5):.2f} (goal < 1.5)")
    for label, values in picks.items():
        print(fmt(f"pickup    {label}", values))
    cold, warm = picks["cold (one-job), 0.2–1.2 s apart"], picks["warm (long poll), 2–5 s apart"]
    print(f"goal      cold p50 ≤ bare SDK p50 + 1 s: {pct(cold, 0.5):.0f} ≤ {pct(sdk, 0.5) + 1000:.0f} ms; "
          f"warm p50 ≤ 200 ms: {pct(warm, 0.5):.0f} ms (long poll, 2–5 s apart)")
    rss, cpu, bare_rss = idle_footprint(args.idle_seconds)
    print(f"idle      agent with 100 unservable pending jobs: RSS {rss:.1f} MiB (goal < 80), CPU {cpu:.2f}% of a core (goal < 1%)")
    print(f"baseline  bare python3 interpreter RSS {bare_rss:.1f} MiB")


if __name__ == "__main__":
    main()
