"""Benchmark: autogit-tui's first full frame with 16 GPUs, 200 runners and 1,000 pending jobs,
and its CPU use while following a stream of 20 events a second (each one changes the state the
way the reconciler would: a runner changes state, a job arrives or leaves, a GPU reading moves).

Baselines measured in the same run: an empty Textual app's start-up, and its CPU use idling.
The agent (the real ApiServer on a real unix socket, with a real AgentState and the real
planner's plan) runs in a child process, so the CPU figures are the console's alone.
Goals: first frame < 1 s; < 5 % of one core while following.

    .venv/bin/python bench/tui_bench.py [--gpus 16] [--runners 200] [--jobs 1000] [--rate 20] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import random
import tempfile
import time
from datetime import datetime, timedelta, UTC
from pathlib import Path

from textual.app import App
from textual.widgets import Static

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


# --- the agent side (child process) -----------------------------------------------------------------


def _state(n_gpus: int, n_runners: int, n_jobs: int):
    from autogit.agent.events import EventBus
    from autogit.agent.model import Gpu, GpuVendor, Host, Job, Policy, Runner, RunnerKind
    from autogit.agent.planner import plan
    from autogit.agent.state import AgentPhase, AgentState, GpuReading, RunnerView

    rnd = random.Random(7)
    state = AgentState(bus=EventBus(history=1000, queue_size=1000))
    gpus = [Gpu(id=f"GPU-{i:04d}", vendor=GpuVendor.NVIDIA, model="NVIDIA H100 80GB HBM3" if i % 2 else "NVIDIA L4",
                memory_mb=81559 if i % 2 else 23034, pci_bus_id=f"0000:{i + 1:02x}:00.0") for i in range(n_gpus)]
    state.host = Host(hostname="bench-host", arch="amd64", emulated=["arm64"], cpus=256, memory_mb=2_000_000, gpus=gpus)
    runners = []
    for i in range(n_runners):
        gpu = gpus[i].id if i < n_gpus else None
        busy = rnd.random() < 0.7
        runner = Runner(id=f"bench-host-r{i:04d}", tags=["gpu", "cuda"] if gpu else rnd.choice([["amd64", "docker"], ["arm64"]]),
                        kind=RunnerKind.GPU if gpu else RunnerKind.NATIVE, platform="linux/amd64", gpu=gpu, busy=busy,
                        idle_since=None if busy else NOW)
        runners.append(RunnerView(runner=runner, state="busy" if busy else "idle", job=100 + i if busy else None,
                                  started_at=NOW - timedelta(minutes=rnd.randint(0, 600))))
    state.runners = runners
    tag_sets = [[], ["amd64"], ["arm64"], ["gpu", "cuda"], ["gpu", "h100"], ["s390x"], ["riscv64"], ["amd64", "docker"]]
    state.jobs = [Job(id=10_000 + i, project_id=rnd.randint(1, 50), tags=rnd.choice(tag_sets),
                      created_at=NOW - timedelta(seconds=rnd.randint(0, 3600))) for i in range(n_jobs)]
    state.gpu_readings = {g.id: GpuReading(utilization_pct=rnd.uniform(0, 100), memory_used_mb=rnd.randint(0, 20000),
                                           temperature_c=rnd.uniform(30, 80), power_w=rnd.uniform(20, 600)) for g in gpus}
    state.plan = plan(state.host, [rv.runner for rv in runners], state.jobs, Policy(max_runners=n_runners + 8), NOW)
    state.plan_time = NOW
    state.set_health("gitlab", True)
    state.set_health("docker", True)
    state.set_phase(AgentPhase.RUNNING)
    return state


def _agent(sock: str, sizes: tuple[int, int, int], conn) -> None:
    from autogit.agent.api.server import ApiServer
    from autogit.agent.config import ApiConfig
    from autogit.agent.metrics import AgentMetrics
    from autogit.agent.state import GpuReading

    async def main() -> None:
        state = _state(*sizes)
        server = ApiServer(state, ApiConfig(socket=Path(sock), group="root", admin_group="root"), AgentMetrics(), hostname="bench-host")
        await server.start(socket_activation=False)
        conn.send("ready")
        loop = asyncio.get_running_loop()
        rate, seconds = await loop.run_in_executor(None, conn.recv)
        rnd = random.Random(3)
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < seconds:
            kind = n % 4
            if kind == 0:  # a runner changes state
                i = rnd.randrange(len(state.runners))
                rv = state.runners[i]
                new = "idle" if rv.state == "busy" else "busy"
                state.runners = [*state.runners[:i], rv.model_copy(update={"state": new}), *state.runners[i + 1:]]
                state.bus.publish("runner.state", f"runner {rv.runner.id} {new}", runner=rv.runner.id)
            elif kind == 1:  # the queue moves: one job leaves, one arrives
                job = state.jobs[0]
                state.jobs = [*state.jobs[1:], job.model_copy(update={"id": job.id + 1_000_000})]
                state.bus.publish("queue.changed", "1 job started, 1 new", added=1)
            elif kind == 2:
                gpu = state.host.gpus[rnd.randrange(len(state.host.gpus))].id
                state.gpu_readings[gpu] = GpuReading(utilization_pct=rnd.uniform(0, 100), memory_used_mb=rnd.randint(0, 20000))
                state.bus.publish("gpu.reading", f"GPU {gpu} reading", gpu=gpu)
            else:
                state.reconcile_count += 1
                state.bus.publish("reconcile.done", f"pass {state.reconcile_count}: nothing to do")
            n += 1
            await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
        conn.send(n)
        await loop.run_in_executor(None, conn.recv)
        await server.stop()

    asyncio.run(main())


# --- the console side (this process) -----------------------------------------------------------------


class EmptyApp(App[None]):
    def compose(self):
        yield Static("hello")


async def empty_app(seconds: float) -> tuple[float, float]:
    t0 = time.perf_counter()
    app = EmptyApp()
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.pause()
        first = time.perf_counter() - t0
        c0, w0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu = (time.process_time() - c0) / (time.perf_counter() - w0)
    return first, cpu


async def console(sock: str, conn, rate: int, seconds: float) -> tuple[float, float, int, int]:
    from autogit.agent.api.client import AgentClient
    from autogit.tui.app import AutoGitApp
    from autogit.tui.widgets.tables import GpuTable, QueueTable

    t0 = time.perf_counter()
    app = AutoGitApp(AgentClient(sock), socket_path=sock, owns_client=True)
    async with app.run_test(size=(200, 50)) as pilot:
        main = app.main_screen
        # Every resource loaded and the visible tab (GPUs) filled; hidden tabs fill when shown.
        while not (app.connection == "connected" and main.is_mounted and app.jobs is not None
                   and app.runners is not None and main.query_one(GpuTable).row_count):
            await asyncio.sleep(0.005)
        await pilot.pause()  # the frame with every row is rendered
        first = time.perf_counter() - t0
        await asyncio.sleep(1.0)  # let the start-up settle
        c0, w0 = time.process_time(), time.perf_counter()
        conn.send((rate, seconds))
        sent = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await asyncio.sleep(0.6)
        cpu = (time.process_time() - c0) / (time.perf_counter() - w0)
        logged = len(main.query_one("#event-log").events)
        t1 = time.perf_counter()
        main.action_tab("queue")  # the queue tab, built from 1,000 jobs on demand
        while not main.query_one(QueueTable).row_count:
            await asyncio.sleep(0.001)
        await pilot.pause()
        switch = time.perf_counter() - t1
        assert main.query_one(QueueTable).row_count
    conn.send("stop")
    return first, cpu, sent, logged, switch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--gpus", type=int, default=16)
    p.add_argument("--runners", type=int, default=200)
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--rate", type=int, default=20)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()

    sock = str(Path(tempfile.mkdtemp(prefix="autogit-tui-bench-")) / "agent.sock")
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_agent, args=(sock, (args.gpus, args.runners, args.jobs), child), daemon=True)
    proc.start()
    assert parent.recv() == "ready"

    base_first, base_cpu = asyncio.run(empty_app(args.seconds))
    first, cpu, sent, logged, switch = asyncio.run(console(sock, parent, args.rate, args.seconds))
    proc.join(10)

    print(f"world: {args.gpus} GPUs, {args.runners} runners, {args.jobs} pending jobs; stream {args.rate} events/s for {args.seconds:g} s")
    print(f"baseline  empty Textual app: first frame {base_first * 1000:7.1f} ms   idle CPU {base_cpu * 100:5.2f} % of a core")
    print(f"autogit-tui                 : first frame {first * 1000:7.1f} ms   CPU following {cpu * 100:5.2f} % of a core"
          f"   ({sent} events sent, {logged} in the log)")
    print(f"switching to the queue tab (1,000 jobs grouped): {switch * 1000:.1f} ms")
    print(f"goals: first frame < 1000 ms: {'met' if first < 1 else 'MISSED'};  CPU < 5 %: {'met' if cpu < 0.05 else 'MISSED'}")


if __name__ == "__main__":
    main()
