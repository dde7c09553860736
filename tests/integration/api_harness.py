"""Shared by the API tests and bench/api_events.py: a real AgentState filled with real model
objects (the plan comes from the real planner), and the real ApiServer on a real unix socket,
run on its own event loop in a thread so that synchronous code (http.client, subprocesses run
as other users, hypothesis) and async code (the client) can both talk to it.

Anything that touches the state or the bus while the server runs must go through
`ServerThread.in_loop` (asyncio queues are not thread-safe).
"""

from __future__ import annotations

import asyncio
import http.client
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, UTC
from pathlib import Path
from typing import Any, TypeVar

from autogit.agent.api.server import ApiServer
from autogit.agent.config import ApiConfig
from autogit.agent.events import EventBus
from autogit.agent.metrics import AgentMetrics
from autogit.agent.model import Gpu, GpuVendor, Host, Job, Policy, Runner, RunnerKind
from autogit.agent.planner import plan
from autogit.agent.state import AgentPhase, AgentState, GpuReading, RunnerView

T = TypeVar("T")
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
GPU_SMALL = "GPU-5d2a-small"
GPU_BIG = "GPU-9f1c-big"


def make_state(history: int = 1000, queue_size: int = 1000) -> AgentState:
    host = Host(
        hostname="ci-host-1",
        arch="amd64",
        emulated=["arm64"],
        cpus=16,
        memory_mb=65536,
        gpus=[
            Gpu(id=GPU_SMALL, vendor=GpuVendor.NVIDIA, model="NVIDIA L4", memory_mb=23034, pci_bus_id="0000:01:00.0", tags=["cuda"]),
            Gpu(id=GPU_BIG, vendor=GpuVendor.NVIDIA, model="NVIDIA H100 80GB HBM3", memory_mb=81559, pci_bus_id="0000:02:00.0", tags=["cuda", "h100"]),
        ],
    )
    runners = [
        Runner(id="ci-host-1-r1", tags=["amd64", "x86_64"], run_untagged=True, platform="linux/amd64", busy=True),
        Runner(id="ci-host-1-r2", tags=["amd64", "x86_64"], run_untagged=True, platform="linux/amd64", idle_since=NOW - timedelta(minutes=10)),
        Runner(id="ci-host-1-g1", tags=["gpu", "cuda", "h100"], kind=RunnerKind.GPU, platform="linux/amd64", gpu=GPU_BIG, busy=True),
    ]
    jobs = [
        Job(id=101, project_id=7, tags=[], created_at=NOW - timedelta(minutes=2)),
        Job(id=102, project_id=7, tags=["amd64"], created_at=NOW - timedelta(minutes=1)),
        Job(id=104, project_id=9, tags=["gpu", "cuda"], created_at=NOW - timedelta(seconds=50)),
        Job(id=106, project_id=11, tags=["s390x"], created_at=NOW - timedelta(seconds=30)),
        Job(id=107, project_id=11, tags=["gpu", "h100"], created_at=NOW - timedelta(seconds=20), name="train"),
    ]
    clock = lambda: NOW  # noqa: E731 - a fixed clock keeps responses deterministic
    state = AgentState(bus=EventBus(history=history, queue_size=queue_size, clock=clock), clock=clock)
    state.host = host
    state.runners = [
        RunnerView(runner=runners[0], container="autogit-runner-r1", gitlab_id=501, state="busy", job=99, started_at=NOW - timedelta(hours=1)),
        RunnerView(runner=runners[1], container="autogit-runner-r2", gitlab_id=502, state="idle", started_at=NOW - timedelta(hours=1)),
        RunnerView(runner=runners[2], container="autogit-runner-g1", gitlab_id=503, state="busy", job=107, started_at=NOW - timedelta(minutes=5)),
    ]
    state.jobs = jobs
    state.gpu_readings = {
        GPU_BIG: GpuReading(utilization_pct=97.0, memory_used_mb=70000, temperature_c=71.0, power_w=610.5),
        GPU_SMALL: GpuReading(utilization_pct=None, memory_used_mb=0),  # utilisation unknown, not zero
    }
    state.plan = plan(host, [rv.runner for rv in state.runners], jobs, Policy(max_runners=6), NOW)
    state.plan_time = NOW
    state.reconcile_count = 42
    state.set_health("gitlab", True)
    state.set_health("docker", False, "docker.sock: connection refused")
    state.set_phase(AgentPhase.DEGRADED, "docker failing")
    return state


def socket_dir() -> Path:
    # World-traversable so tests can connect as other users; the socket's own mode is the gate.
    path = Path(tempfile.mkdtemp(prefix="autogit-api-", dir="/tmp"))
    path.chmod(0o755)
    return path


class ServerThread:
    def __init__(self, state: AgentState, config: ApiConfig, metrics: AgentMetrics | None = None, **server_kw: Any) -> None:
        self.state = state
        self.config = config
        if metrics is None:
            metrics = AgentMetrics()
            metrics.bind_state(state)
        self.metrics = metrics
        self.server_kw = server_kw
        self.loop = asyncio.new_event_loop()
        self.server: ApiServer | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="api-server", daemon=True)

    @property
    def path(self) -> str:
        return str(self.config.socket)

    def start(self) -> ServerThread:
        self._thread.start()

        async def boot() -> ApiServer:
            server = ApiServer(self.state, self.config, self.metrics, hostname="test-host", **self.server_kw)
            await server.start(socket_activation=False)
            return server

        self.server = self.run(boot())
        return self

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def in_loop(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        async def call() -> T:
            return fn(*args, **kw)

        return self.run(call())

    def stop(self) -> None:
        if self.server is not None:
            self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
        if self.config.socket.parent.name.startswith("autogit-api-"):
            shutil.rmtree(self.config.socket.parent, ignore_errors=True)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("autogit", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def http(path: str, method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    conn = _UnixHTTPConnection(path, timeout)
    try:
        conn.request(method, url, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def api_config(directory: Path, **kw: Any) -> ApiConfig:
    kw.setdefault("group", "root")
    kw.setdefault("admin_group", "root")
    return ApiConfig(socket=directory / "agent.sock", **kw)


def fingerprint(state: AgentState) -> tuple[Any, ...]:
    """What 'state unchanged' means: intents, event count and everything the API serves."""
    return (state.intents, state.bus.last_seq, state.phase, tuple(state.runners), tuple(state.jobs), state.plan, os.getpid())
