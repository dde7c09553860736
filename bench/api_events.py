"""Event-stream delivery over the real socket, beside an in-process baseline.

100 subscribers (in a child process, so client work does not share the agent's GIL) follow
GET /v1/events while the agent publishes 1000 events at 100/s, 1000 at 1000/s, then 1000 at
once. Each
event carries its CLOCK_MONOTONIC publish time (shared by all processes on the machine), so the
child measures publish-to-receipt latency. A third client polls GET /v1/status throughout.

Baselines printed beside: model_dump_json of the same events in-process (the serialisation the
server does per event and subscriber), and GET /v1/status with no stream load.

    .venv/bin/python bench/api_events.py [--subscribers 100] [--events 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))


# (name, events per second; 0 = all at once). Publish times are spread by the agent's own loop.
PHASES = {"100Hz": 100, "1kHz": 1000, "burst": 0}


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


# --- the child: subscribers and the status poller -----------------------------------------


async def child(sock: str, subscribers: int, expect: int) -> None:
    import aiohttp

    conn = aiohttp.UnixConnector(path=sock, limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:

        async def status_once() -> float:
            began = time.perf_counter()
            async with session.get("http://autogit/v1/status") as resp:
                await resp.read()
                assert resp.status == 200
            return (time.perf_counter() - began) * 1000

        idle_status = [await status_once() for _ in range(300)]
        latencies: dict[str, list[float]] = {name: [] for name in PHASES}
        connected = 0
        all_connected = asyncio.Event()

        async def follow() -> None:
            nonlocal connected
            got = 0
            async with session.get("http://autogit/v1/events") as resp:
                connected += 1
                if connected == subscribers:
                    all_connected.set()
                async for line in resp.content:
                    if not line.strip():
                        continue
                    now = time.monotonic_ns()
                    event = json.loads(line)
                    phase = event["data"].get("phase")
                    if phase in latencies:
                        latencies[phase].append((now - event["data"]["t"]) / 1e6)
                        got += 1
                        if got == expect:
                            return

        tasks = [asyncio.create_task(follow()) for _ in range(subscribers)]
        await all_connected.wait()
        print("ready", flush=True)
        loaded_status: list[float] = []
        while not all(t.done() for t in tasks):
            loaded_status.append(await status_once())
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks)
    import resource

    cpu = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"child_cpu_s": cpu.ru_utime + cpu.ru_stime, "idle_status": idle_status, "loaded_status": loaded_status, **latencies}), flush=True)


# --- the parent: the agent's API server and the publisher --------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--child", nargs=3, metavar=("SOCK", "SUBSCRIBERS", "EXPECT"))
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(args.child[0], int(args.child[1]), int(args.child[2])))
        return

    from api_harness import ServerThread, api_config, make_state, socket_dir

    from autogit.agent.events import Event

    n = args.events
    srv = ServerThread(make_state(history=1000, queue_size=4 * n), api_config(socket_dir(), max_connections=1024)).start()
    try:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", srv.path, str(args.subscribers), str(len(PHASES) * n)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        while srv.state.bus.subscriber_count < args.subscribers:
            time.sleep(0.01)

        async def phase(name: str, rate: int) -> float:
            began = time.perf_counter()
            for i in range(n):
                srv.state.bus.publish("bench." + name, f"{name} {i}", phase=name, i=i, t=time.monotonic_ns())
                if rate:
                    await asyncio.sleep(1 / rate)
            return (time.perf_counter() - began) * 1000

        import resource

        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = time.perf_counter()
        for name, rate in PHASES.items():
            publish_ms = srv.run(phase(name, rate), timeout=120)
            time.sleep(1.0)  # let the previous phase's deliveries finish
        burst_publish_ms = publish_ms
        out, _ = proc.communicate(timeout=300)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        agent_cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
        wall = time.perf_counter() - wall0
        result = json.loads(out.strip().splitlines()[-1])
        dropped = sum(1 for e in srv.state.bus.history() if e.type == "stream.dropped")
    finally:
        srv.stop()

    # Baseline: the same serialisation in-process, per event and for the whole fan-out.
    events = [Event.model_construct(seq=i, time=srv.state.started_at, type="bench.1kHz", message=f"1kHz {i}", data={"phase": "1kHz", "i": i, "t": time.monotonic_ns()}) for i in range(n)]
    began = time.perf_counter()
    for e in events:
        e.model_dump_json()
    per_event_us = (time.perf_counter() - began) / n * 1e6
    fanout_ms = per_event_us * n * args.subscribers / 1000

    print(f"subscribers: {args.subscribers}, events per phase: {n}, drops: {dropped}")
    for name, rate in PHASES.items():
        lat = result[name]
        how = f"{rate} events/s" if rate else "all at once"
        print(f"delivery latency, {n} events {how:>14}: n={len(lat)} p50={statistics.median(lat):7.2f} ms p99={pct(lat, 99):7.2f} ms max={max(lat):7.2f} ms")
    print(f"burst publish of {n} events with {args.subscribers} subscribers: {burst_publish_ms:.2f} ms (publish never waits on subscribers)")
    for name in ("idle_status", "loaded_status"):
        lat = result[name]
        print(f"GET /v1/status {name.split('_')[0]:6s}: n={len(lat)} p50={statistics.median(lat):.2f} ms p99={pct(lat, 99):.2f} ms")
    print(f"cpu during the phases ({wall:.1f} s wall): agent {agent_cpu:.1f} s, subscriber process {result['child_cpu_s']:.1f} s (2 cores here)")
    print(f"baseline, in-process model_dump_json: {per_event_us:.2f} us/event; x{args.subscribers} subscribers x {n} events = {fanout_ms:.1f} ms of serialisation")


if __name__ == "__main__":
    main()
