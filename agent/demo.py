"""`autogit-agent demo`: the GitLab simulator, the agent and real runner containers on this
machine's Docker engine, with a scripted stream of jobs of mixed tags, shown live.

The simulator is a double of GitLab (gitlab_double); the runner image is a double of gitlab-runner
built locally (gitlab_double/runner_image, no registry needed) whose docker executor runs each job
in a job container, a foreign-architecture one in a job image of that architecture under QEMU. Everything else is the real agent: the planner, the
reconciler, the Docker runtime, the GitLab adapter and the webhook listener.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from .config import DEFAULT_RUNNER_IMAGE, AgentConfig
from .events import Event
from .gitlab.adapter import GitLabAdapter
from .gitlab.webhook import WebhookListener
from .inventory.cpu import observe_cpu
from .model import Host
from .reconciler import Reconciler
from .runtime import build_runtime
from .state import AgentState

if TYPE_CHECKING:
    from autogit.gitlab_double.gitlab_sim import GitLabSimulator

__all__ = ["DOUBLE_MISSING", "run_demo", "start_double"]

DEMO_JOB_IMAGE = "debian:bookworm-slim"
DOUBLE_HOST = "127.0.0.1"  # the double is reached by the agent and by runners on the host network only
TOKEN_FILE = "gitlab-admin-token"
# The doubles are not in the product package (autogit-agent): they come with autogit-agent-demo,
# or with a source checkout (ADR-012).
DOUBLE_MISSING = "the GitLab double is not installed: apt install autogit-agent-demo (in a source checkout: ./scripts/dev-setup)"


def _build_script() -> Path:
    """The gitlab-runner double's image recipe, shipped beside the GitLab double."""
    import autogit.gitlab_double as gitlab_double

    return Path(gitlab_double.__file__).resolve().parent / "runner_image" / "build.sh"


def _problem() -> str | None:
    if importlib.util.find_spec("autogit.gitlab_double") is None:
        return DOUBLE_MISSING
    if shutil.which("docker") is None:
        return "Docker is not installed: apt-get install docker.io (or run ./scripts/dev-setup in a checkout)"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "the Docker engine is not running: start it (systemctl start docker, or dockerd &)"
    return None


def _build_problem() -> str | None:
    """What building the local gitlab-runner double needs, in one line, or None."""
    missing = [tool for tool in ("debootstrap", "dpkg-deb", "apt-get", "flock") if shutil.which(tool) is None]
    if os.geteuid() != 0:
        return "building the local gitlab-runner double needs root (debootstrap): run the demo as root, or give --runner-image"
    if missing:
        return f"building the local gitlab-runner double needs {', '.join(missing)}: apt-get install debootstrap, or give --runner-image"
    if not _build_script().exists():
        return f"the gitlab-runner double's recipe is missing ({_build_script()}): reinstall autogit-agent-demo"
    return None


def _pull(image: str, timeout_s: float = 60) -> bool:
    try:
        return subprocess.run(["docker", "pull", "-q", image], capture_output=True, timeout=timeout_s).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _images(console: Console, runner_image: str | None) -> dict[str, str]:
    """The runner image the user gave, else the pinned official one where a registry answers,
    else the local gitlab-runner double built without any registry."""
    if runner_image:
        console.print(f"[dim]runner image {runner_image} (as given); job image {DEMO_JOB_IMAGE}[/]")
        return {"RUNNER_IMAGE": runner_image, "JOB_IMAGE": DEMO_JOB_IMAGE}
    if _pull(DEFAULT_RUNNER_IMAGE) and _pull(DEMO_JOB_IMAGE):
        console.print(f"[dim]runner image {DEFAULT_RUNNER_IMAGE} (the pinned official one); job image {DEMO_JOB_IMAGE}[/]")
        return {"RUNNER_IMAGE": DEFAULT_RUNNER_IMAGE, "JOB_IMAGE": DEMO_JOB_IMAGE}
    problem = _build_problem()
    if problem is not None:
        raise RuntimeError(f"no image registry answers and {problem}")
    console.print("[dim]no image registry answers: building the local gitlab-runner double (first run: ~1 min, then cached)…[/]")
    env = dict(os.environ, PIP=os.environ.get("PIP") or f"{sys.executable} -m pip")
    out = subprocess.run(["sh", str(_build_script())], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "image build failed")
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def _script(n: int, arch: str, emulated: list[str]) -> list[tuple[float, list[str], str | None]]:
    """(delay before, tags, platform) for each job of the stream."""
    kinds: list[tuple[list[str], str | None]] = [([], None), ([arch], None)]
    kinds += [([a], f"linux/{a}") for a in ("arm64", "riscv64") if a in emulated]
    stream = [(0.4 if i else 0.0, *kinds[i % len(kinds)]) for i in range(n)]
    stream.insert(n // 2, (0.4, ["s390x"], "linux/s390x"))  # no runner here could carry it
    return stream


def _view(state: AgentState, sim: GitLabSimulator, events: list[Event], started: float) -> Group:
    runners = Table(title="runners (containers on this Docker engine)", expand=True)
    for col in ("runner", "kind", "tags", "state", "job"):
        runners.add_column(col)
    for r in state.runners:
        runners.add_row(r.container or r.runner.id, r.runner.kind.value, ", ".join(r.runner.tags), r.state, str(r.job or ""))
    counts: dict[str, int] = {}
    for job in sim.jobs:
        counts[job.status] = counts.get(job.status, 0) + 1
    jobs = Table(title=f"GitLab queue (simulator)  t+{time.monotonic() - started:4.0f}s", expand=True)
    for col in ("pending", "running", "success", "failed", "canceled"):
        jobs.add_column(col, justify="right")
    jobs.add_row(*(str(counts.get(c, 0)) for c in ("pending", "running", "success", "failed", "canceled")))
    waits = Table(title="waiting, with the planner's reason", expand=True)
    waits.add_column("job")
    waits.add_column("reason")
    for w in (state.plan.waiting if state.plan else [])[:5]:
        waits.add_row(str(w.job), f"{w.reason.value}: {w.detail}")
    log = Table(title="events", expand=True, show_header=False)
    log.add_column("event")
    for e in events[-8:]:
        log.add_row(f"{e.time:%H:%M:%S} {e.type:<18} {e.message}")
    return Group(jobs, runners, waits, log)


async def _demo(n_jobs: int, images: dict[str, str], console: Console) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="autogit-demo-"))  # 0700
    sim = await start_double(workdir, console)
    cpu = observe_cpu()
    config = AgentConfig.model_validate(
        {
            "hostname": "demo",
            "gitlab": {"url": sim.url, "scope": {"kind": "projects", "projects": [1]}, "poll_interval": 2, "max_retries": 1},
            "scaling": {"max_runners": max(2, min(6, cpu.cpus * 2)), "idle_timeout": 5, "runner_cpus": 0, "runner_memory_mb": 0},
            "runner": {"image": images["RUNNER_IMAGE"], "job_image": images["JOB_IMAGE"], "check_interval": 1, "drain_timeout": 600,
                       "docker": {"network": "host", "config_dir": str(workdir / "runners")}}
                      # the local double: its own helper, and nothing pulled
                      | ({"helper_image": images["HELPER_IMAGE"], "pull_policy": "never"} if "HELPER_IMAGE" in images else {}),
            "webhook": {"enabled": True, "listen": "127.0.0.1:0"},
            "fleet": {"enabled": False},  # one host: no presence registration to leave in the double
        }
    )
    state = AgentState()
    events: list[Event] = []
    state.bus.add_listener(events.append)
    host = Host(hostname="demo", arch=cpu.arch, emulated=cpu.emulated, cpus=cpu.cpus, memory_mb=cpu.memory_mb)
    runtime = build_runtime(config, "demo", host)
    gitlab = GitLabAdapter(config.gitlab, SecretStr(sim.private_token))
    reconciler = Reconciler(config, state, runtime, gitlab, lambda: host)

    async def on_job(project_id: int, job_id: int, _status: str) -> None:
        status, job = await gitlab.get_job(project_id, job_id)
        reconciler.hint_job(status, job)

    secret = SecretStr(secrets.token_urlsafe(32))  # this run's, as the admin token: nothing well known
    webhook = WebhookListener(config.webhook, secret, state.bus, on_job)
    await webhook.start()
    sim.add_webhook(f"http://127.0.0.1:{webhook.port}{config.webhook.path}", secret.get_secret_value())
    loop_task = asyncio.create_task(reconciler.run_forever())
    started = time.monotonic()
    stream = _script(n_jobs, cpu.arch, cpu.emulated)
    unservable: list[int] = []
    try:
        with Live(_view(state, sim, events, started), console=console, refresh_per_second=4) as live:
            for delay, tags, platform in stream:
                await asyncio.sleep(delay)
                # the double's foreign job images are single-platform; an official job image is multi-arch
                arch_image = images.get(f"JOB_IMAGE_{platform.split('/')[-1].upper()}") if platform else None
                job = sim.add_job(project_id=1, tags=tags, script=["echo hello from $(uname -m)", "sleep 2"], name="demo",
                                  image_platform=platform, image=arch_image or (images["JOB_IMAGE"] if platform else None))
                if "s390x" in tags:
                    unservable.append(job.id)
                live.update(_view(state, sim, events, started))
            await _until_scaled_back(live, state, sim, events, started, unservable)
    finally:
        reconciler.stop()
        await loop_task
        for c in await runtime.list():
            await runtime.remove(c.name)
        await runtime.close()
        await webhook.stop()
        await sim.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    ok = sum(1 for j in sim.jobs if j.status == "success")
    console.print(f"[bold]{ok} jobs succeeded; runners scaled up and back to zero; nothing left behind.[/]")
    return 0 if ok == n_jobs else 1


async def start_double(workdir: Path, console: Console) -> GitLabSimulator:
    """The GitLab double on loopback with a fresh admin token, written for the operator to
    `workdir`/TOKEN_FILE (0600; mkdtemp makes `workdir` 0700) and said where, never shown. The
    token reaches the agent in memory and is in no argument, environment variable or log line:
    whoever holds it can queue jobs that the demo's runners run on this host's network."""
    from autogit.gitlab_double.admin_token import write_token_file
    from autogit.gitlab_double.gitlab_sim import GitLabSimulator

    sim = GitLabSimulator(host=DOUBLE_HOST)
    await sim.start()
    token_file = workdir / TOKEN_FILE
    write_token_file(token_file, sim.private_token)
    console.print(f"[dim]GitLab double (a test double, not GitLab) at {sim.url}, loopback only; its admin token "
                  f"(PRIVATE-TOKEN for /api/v4 and /_sim/) is in {token_file} until the demo ends[/]")
    return sim


async def _until_scaled_back(live: Live, state: AgentState, sim: GitLabSimulator, events: list[Event], started: float, unservable: list[int]) -> None:
    """Until every servable job is done (the unservable ones are then cancelled) and no runner is left; 300 s at most."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        live.update(_view(state, sim, events, started))
        servable_done = all(j.status not in {"pending", "running"} for j in sim.jobs if j.id not in unservable)
        if servable_done and unservable:
            for job_id in unservable:
                sim.cancel_job(job_id)
            unservable = []
        if servable_done and not unservable and not sim.runners and not state.runners:
            break
    live.update(_view(state, sim, events, started))


def run_demo(jobs: int = 12, runner_image: str | None = None) -> int:
    console = Console()
    problem = _problem()
    if problem is not None:
        print(f"autogit-agent demo: {problem}", file=sys.stderr)
        return 69
    try:
        images = _images(console, runner_image)
    except RuntimeError as exc:
        print(f"autogit-agent demo: runner image: {exc}", file=sys.stderr)
        return 69
    return asyncio.run(_demo(jobs, images, console))
