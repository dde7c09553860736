"""The TUI tests' world: a real AgentState fed by a scripted scenario (GPUs appearing and
vanishing, jobs arriving, runners scaling), served by the project's real ApiServer on a real
unix socket. The server runs on its own event loop in a thread, so the app under test (Pilot,
or snap_compare's own loop) talks to it exactly as it talks to a live agent.

Every time is fixed (NOW) so snapshots are byte-stable; the plan comes from the real planner.
"""

from __future__ import annotations

from autogit.tui.app import AutoGitApp
from autogit.agent.api.client import AgentClient

import asyncio
import html
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, UTC
from pathlib import Path
from typing import Any, TypeVar

from autogit.agent.api.server import ApiServer
from autogit.agent.config import ApiConfig
from autogit.agent import fleet
from autogit.agent.events import EventBus
from autogit.agent.gitlab.adapter import Registration
from autogit.agent.metrics import AgentMetrics
from autogit.agent.model import Gpu, GpuVendor, Host, Job, Policy, Runner, RunnerKind
from autogit.agent.planner import plan
from autogit.agent.state import AgentPhase, AgentState, GpuReading, RunnerView

T = TypeVar("T")
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
H100 = "GPU-9f1c2e7a-h100"
L4 = "GPU-5d2a33b0-l4"
MI300 = "0000:c1:00.0"
ARC = "0000:03:00.0"
HERE = Path(__file__).resolve().parent
LONG_RUNNER = "autogit-gpu-box-1-gpu-5e0c1d9a7f"
GITLAB = "https://gitlab.example.com"


def clock() -> datetime:
    return NOW


def _gpus() -> list[Gpu]:
    return [
        Gpu(id=H100, vendor=GpuVendor.NVIDIA, model="NVIDIA H100 80GB HBM3", memory_mb=81559, pci_bus_id="0000:01:00.0", tags=["cuda", "h100"]),
        Gpu(id=L4, vendor=GpuVendor.NVIDIA, model="NVIDIA L4", memory_mb=23034, pci_bus_id="0000:02:00.0", tags=["cuda", "l4"]),
        Gpu(id=ARC, vendor=GpuVendor.INTEL, model="Intel Arc A770", memory_mb=16384, pci_bus_id=ARC, healthy=False),
        Gpu(id=MI300, vendor=GpuVendor.AMD, model="AMD Instinct MI300X", memory_mb=196608, pci_bus_id=MI300, tags=["rocm"]),
    ]


def _runner(rid: str, state: str, tags: list[str], *, job: int | None = None, gpu: str | None = None,
            kind: RunnerKind = RunnerKind.NATIVE, platform: str = "linux/amd64", minutes: int = 30) -> RunnerView:
    busy = state == "busy"
    runner = Runner(id=rid, tags=tags, run_untagged=kind is RunnerKind.NATIVE, kind=kind, platform=platform, gpu=gpu,
                    busy=busy, idle_since=None if busy else NOW - timedelta(minutes=3), draining=state == "draining")
    return RunnerView(runner=runner, container=rid if rid.startswith("autogit-") else f"autogit-{rid}", gitlab_id=500 + len(rid), state=state, job=job,
                      started_at=NOW - timedelta(minutes=minutes))


def make_state() -> AgentState:
    """The scripted world at NOW: 4 GPUs (one unhealthy), 6 runners, 12 pending jobs."""
    state = AgentState(bus=EventBus(history=1000, queue_size=1000, clock=clock), clock=clock)
    state.host = Host(hostname="gpu-box-1", arch="amd64", emulated=["arm64", "riscv64"], cpus=64, memory_mb=515072, gpus=_gpus())
    state.runners = [
        _runner("gpu-box-1-a1", "busy", ["amd64", "docker"], job=9001, minutes=95),
        _runner("gpu-box-1-a2", "idle", ["amd64", "docker"], minutes=12),
        _runner("gpu-box-1-e1", "busy", ["arm64"], job=9002, kind=RunnerKind.EMULATED, platform="linux/arm64", minutes=40),
        _runner("gpu-box-1-g1", "busy", ["cuda", "gpu", "h100"], job=9003, gpu=H100, kind=RunnerKind.GPU, minutes=8),
        _runner("gpu-box-1-g2", "starting", ["cuda", "gpu", "l4"], gpu=L4, kind=RunnerKind.GPU, minutes=0),
        # The agent's own naming (autogit-<host>-<kind>-<10 hex>): the longest name on screen.
        _runner(LONG_RUNNER, "idle", ["gpu", "rocm"], gpu=MI300, kind=RunnerKind.GPU, minutes=25),
    ]
    state.jobs = [
        Job(id=9001, project_id=7, tags=["amd64"], created_at=NOW - timedelta(minutes=20), name="build", web_url=f"{GITLAB}/infra/agent/-/jobs/9001"),
        Job(id=9002, project_id=7, tags=["arm64"], created_at=NOW - timedelta(minutes=18), name="build-arm"),
        Job(id=9003, project_id=9, tags=["gpu", "h100"], created_at=NOW - timedelta(minutes=9), name="train"),
        Job(id=9010, project_id=7, tags=[], created_at=NOW - timedelta(minutes=4)),
        Job(id=9011, project_id=7, tags=["amd64"], created_at=NOW - timedelta(minutes=3)),
        Job(id=9012, project_id=9, tags=["gpu", "h100"], created_at=NOW - timedelta(minutes=7), name="eval"),
        Job(id=9013, project_id=9, tags=["gpu", "h100"], created_at=NOW - timedelta(minutes=6), name="eval-2"),
        Job(id=9014, project_id=11, tags=["s390x"], created_at=NOW - timedelta(minutes=31), name="mainframe-test", web_url=f"{GITLAB}/legacy/cobol/-/jobs/9014"),
        Job(id=9015, project_id=11, tags=["riscv64"], created_at=NOW - timedelta(seconds=50)),
        Job(id=9016, project_id=12, tags=["gpu", "l4"], created_at=NOW - timedelta(seconds=40)),
        Job(id=9017, project_id=12, tags=["gpu", "rocm"], created_at=NOW - timedelta(seconds=30), web_url=f"{GITLAB}/ml/rocm-bench/-/jobs/9017"),
        Job(id=9018, project_id=13, tags=["arm64"], created_at=NOW - timedelta(seconds=20)),
    ]
    state.gpu_readings = {
        H100: GpuReading(utilization_pct=97.0, memory_used_mb=70000, temperature_c=71.0, power_w=612.0),
        L4: GpuReading(utilization_pct=3.0, memory_used_mb=900, temperature_c=38.0, power_w=17.5),
        MI300: GpuReading(utilization_pct=None, memory_used_mb=0, temperature_c=44.0, power_w=None),  # unknown, not zero
    }
    _replan(state)
    state.set_health("gitlab", True)
    state.set_health("docker", True)
    state.set_phase(AgentPhase.RUNNING, "first observation done")
    state.bus.publish("gpu.added", "GPU 0000:c1:00.0 (AMD Instinct MI300X) appeared", gpu=MI300)
    state.bus.publish("runner.started", "runner gpu-box-1-g2 starting for job 9016 on GPU-5d2a33b0-l4", runner="gpu-box-1-g2")
    state.bus.publish("gpu.unhealthy", "GPU 0000:03:00.0 (Intel Arc A770) reports errors; drained", gpu=ARC)
    return state


def _replan(state: AgentState) -> None:
    assert state.host is not None
    state.plan = plan(state.host, [rv.runner for rv in state.runners], state.jobs, Policy(max_runners=8, paused=state.intents.paused), NOW)
    state.plan_time = NOW
    state.reconcile_count += 1


def make_fleet_state() -> AgentState:
    """The scripted world with fleet.enabled, three hosts on one GitLab: this host and gpu-box-2
    live, gpu-box-3 gone (its heartbeat is past the TTL, its runner still registered). Ownership
    comes from the real fleet.assign_jobs, and this host plans for its share only, as the
    reconciler does."""
    state = make_state()
    assert state.host is not None
    me = fleet.build_presence(state.host, [rv.runner for rv in state.runners], Policy(max_runners=8), version="0.9.0",
                              now=NOW - timedelta(seconds=5))  # fmt: skip
    box2 = fleet.Presence(hostname="gpu-box-2", version="0.9.0", arch="arm64", emulated=["amd64"],
                          gpus=[fleet.GpuClass(tags=["cuda", "gpu", "l4"], count=2, free=1)], room=fleet.Room(slots=2),
                          heartbeat_at=NOW - timedelta(seconds=12))  # fmt: skip
    box3 = fleet.Presence(hostname="gpu-box-3", version="0.8.1", arch="amd64", extra_tags=["docker"], room=fleet.Room(slots=0),
                          heartbeat_at=NOW - timedelta(minutes=6))  # fmt: skip
    state.presences = [me, box2, box3]
    live = fleet.live_presences(state.presences, NOW, membership_ttl=90)
    state.live_hosts = {p.hostname for p in live}
    state.fleet = [
        Registration(id=7101, description="autogit:gpu-box-2:autogit-gpu-box-2-native-3c1f9e0a2b", tags=["arm64"], status="online", run_untagged=True),
        Registration(id=7102, description="autogit:gpu-box-2:autogit-gpu-box-2-gpu-8d0e4a1c55", tags=["cuda", "gpu", "l4"], status="online"),
        Registration(id=7201, description="autogit:gpu-box-3:autogit-gpu-box-3-native-0b9a7c6d4e", tags=["amd64", "docker"], status="offline"),
    ]
    state.fleet_seen = NOW
    peers = [fleet.PeerRunner(host="gpu-box-2", tags=r.tags, run_untagged=r.run_untagged, idle=False) for r in state.fleet if r.host == "gpu-box-2"]
    peers += [fleet.PeerRunner(host="gpu-box-1", tags=rv.runner.tags, run_untagged=rv.runner.run_untagged, idle=rv.state == "idle")
              for rv in state.runners]  # fmt: skip
    state.ownership = fleet.assign_jobs("gpu-box-1", state.jobs, live, peers, NOW, hold_off=30)
    mine = {o.job for o in state.ownership if o.mine}
    state.plan = plan(state.host, [rv.runner for rv in state.runners], [j for j in state.jobs if j.id in mine], Policy(max_runners=8), NOW)
    return state


# --- scenario steps, as the reconciler would write them -----------------------------------------------


def gpu_vanishes(state: AgentState, gpu_id: str) -> None:
    assert state.host is not None
    state.host = state.host.model_copy(update={"gpus": [g for g in state.host.gpus if g.id != gpu_id]})
    state.gpu_readings.pop(gpu_id, None)
    _replan(state)
    state.bus.publish("gpu.removed", f"GPU {gpu_id} vanished", gpu=gpu_id)


def gpu_appears(state: AgentState, gpu: Gpu, reading: GpuReading | None = None) -> None:
    assert state.host is not None
    state.host = state.host.model_copy(update={"gpus": [*state.host.gpus, gpu]})
    if reading is not None:
        state.gpu_readings[gpu.id] = reading
    _replan(state)
    state.bus.publish("gpu.added", f"GPU {gpu.id} ({gpu.model}) appeared", gpu=gpu.id)


def jobs_arrive(state: AgentState, jobs: list[Job]) -> None:
    state.jobs = [*state.jobs, *jobs]
    _replan(state)
    state.bus.publish("queue.changed", f"{len(jobs)} new pending jobs", added=len(jobs))


def runner_started(state: AgentState, view: RunnerView) -> None:
    state.runners = [*state.runners, view]
    _replan(state)
    state.bus.publish("runner.started", f"runner {view.runner.id} started", runner=view.runner.id)


def runner_removed(state: AgentState, runner_id: str) -> None:
    state.runners = [rv for rv in state.runners if rv.runner.id != runner_id]
    _replan(state)
    state.bus.publish("runner.removed", f"runner {runner_id} removed (idle)", runner=runner_id)


# --- the server --------------------------------------------------------------------------------------


def jobs_started(server: AgentServer) -> None:
    """The agent's pass hook (metrics.observe_pass) sees jobs 9001 and 9002 of the scenario
    running on its runners, with GitLab's queued_duration: the Queue tab's queue times."""
    from autogit.agent.gitlab.adapter import QueueSnapshot, RunningJob

    state = server.state
    runner_of = {rv.job: rv.gitlab_id for rv in state.runners if rv.job is not None}
    snapshot = QueueSnapshot(pending=state.jobs, running=[
        RunningJob(id=9001, project_id=7, runner_id=runner_of[9001], tags=["amd64"], queued_duration=95.0),
        RunningJob(id=9002, project_id=7, runner_id=runner_of[9002], tags=["arm64"], queued_duration=1250.0),
    ])  # fmt: skip
    server.in_loop(server.metrics.observe_pass, state, snapshot)


def socket_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="autogit-tui-", dir="/tmp"))
    path.chmod(0o755)  # traversable by other users: the socket's own mode is the gate
    return path


class AgentServer:
    """The real ApiServer on a real unix socket, on its own loop in a thread; stop() and
    start() again on the same path and state (an agent restart that keeps its state)."""

    def __init__(self, state: AgentState, directory: Path, **config: Any) -> None:
        config.setdefault("group", "root")
        config.setdefault("admin_group", "root")
        self.state = state
        self.config = ApiConfig(socket=directory / "agent.sock", **config)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="agent-api", daemon=True)
        self._thread.start()
        self.server: ApiServer | None = None
        self.metrics = AgentMetrics(clock=clock)  # kept across stop()/start(), as an agent process keeps it

    @property
    def path(self) -> str:
        return str(self.config.socket)

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def in_loop(self, fn: Callable[..., T], *args: Any) -> T:
        async def call() -> T:
            return fn(*args)

        return self.run(call())

    def start(self) -> AgentServer:
        async def boot() -> ApiServer:
            server = ApiServer(self.state, self.config, self.metrics, hostname="gpu-box-1", heartbeat=2.0, shutdown_timeout=0.5)
            await server.start(socket_activation=False)
            return server

        self.server = self.run(boot())
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.run(self.server.stop())
            self.server = None

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class Relay:
    """A byte relay that runs as another user (nobody), so the agent sees that user's
    credentials (SO_PEERCRED) on its socket: the real way to test a non-admin console."""

    def __init__(self, target: str, directory: Path, uid: int = 65534, gid: int = 65534) -> None:
        self.directory = directory / "relay"
        self.directory.mkdir()
        os.chown(self.directory, uid, gid)
        self.path = str(self.directory / "relay.sock")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "relay.py"), target, self.path], user=uid, group=gid, extra_groups=[],
        )
        deadline = time.monotonic() + 10
        while not os.path.exists(self.path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the relay did not start")
            time.sleep(0.02)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def build_app(socket_path: str, **kw) -> AutoGitApp:
    kw.setdefault("clock", clock)
    kw.setdefault("readings_interval", None)
    kw.setdefault("tick", None)
    kw.setdefault("coalesce", 0.05)
    kw.setdefault("backoff", (0.1, 0.5))
    kw.setdefault("log_interval", 0.05)
    return AutoGitApp(AgentClient(socket_path, timeout=3.0), socket_path=socket_path, owns_client=True, **kw)



def svg_text(svg: str) -> str:
    """The frame's text, line by line (what the terminal shows; styles and animations aside)."""
    lines: dict[float, str] = {}
    for y, chunk in re.findall(r'<text [^>]*y="([0-9.]+)"[^>]*clip-path="url\(#[^)]*-line-\d+\)"[^>]*>([^<]*)</text>', svg):
        lines[float(y)] = lines.get(float(y), "") + html.unescape(chunk).replace("\xa0", " ")
    return "\n".join(lines[y].rstrip() for y in sorted(lines))


async def wait_until(pilot, condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Let the app run until `condition()` holds: the app and the agent are on different loops,
    so this polls the app's state (never the agent's) between pauses."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)
