"""Event-stream delivery over the real socket, beside a bare fan-out baseline, both in this run.

100 subscribers (in a child process, so client work does not share the agent's GIL) follow
GET /v1/events while the agent publishes 1000 events at 100/s, 1000 at 1000/s, then 1000 at
once. Each event carries its CLOCK_MONOTONIC publish time (shared by all processes on the
machine), so the child measures publish-to-receipt latency. A third client polls GET /v1/status
throughout.

Baseline: the least any fan-out must do, measured the same way with the same child: a bare
asyncio unix-socket server (no HTTP, no bus, no queues) that serialises each event once
(model_dump_json, as the server does) and writes those bytes to the same number of raw socket
subscribers, at the same rates. Also printed: GET /v1/status with no stream load.

    .venv/bin/python bench/api_events.py [--subscribers 100] [--events 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, UTC
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))


# (name, events per second; 0 = all at once). Publish times are spread by the agent's own loop.
PHASES = {"100Hz": 100, "1kHz": 1000, "burst": 0}


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


# --- the child: subscribers and the status poller -----------------------------------------


def _take(line: bytes, latencies: dict[str, list[float]]) -> bool:
    """Count one NDJSON line's publish-to-receipt latency; True if it was a bench event."""
    if not line.strip():
        return False
    now = time.monotonic_ns()
    event = json.loads(line)
    phase = event["data"].get("phase")
    if phase not in latencies:
        return False
    latencies[phase].append((now - event["data"]["t"]) / 1e6)
    return True


async def raw_child(sock: str, subscribers: int, expect: int) -> None:
    """The baseline's subscribers: raw unix-socket connections reading NDJSON lines."""
    latencies: dict[str, list[float]] = {name: [] for name in PHASES}

    async def follow(reader: asyncio.StreamReader) -> None:
        got = 0
        while got < expect:
            line = await reader.readline()
            if not line:
                raise ConnectionError("baseline server closed the stream")
            got += _take(line, latencies)

    streams = [await asyncio.open_unix_connection(sock, limit=1 << 20) for _ in range(subscribers)]
    print("ready", flush=True)
    await asyncio.gather(*(follow(reader) for reader, _ in streams))
    for _, writer in streams:
        writer.close()
    import resource

    cpu = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"child_cpu_s": cpu.ru_utime + cpu.ru_stime, **latencies}), flush=True)


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
                    got += _take(line, latencies)
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


# --- the parent: the agent's API server (or the bare fan-out) and the publisher ----------------


class BareFanout:
    """The baseline server: a raw asyncio unix socket; each event serialised once, its bytes
    written to every subscriber's transport. No HTTP, no bus, no queues, no batching."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.writers: list[asyncio.StreamWriter] = []
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="bare-fanout", daemon=True)

    def start(self) -> BareFanout:
        self._thread.start()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.append(writer)
            await reader.read()  # until the subscriber goes away

        self.server = self.run(asyncio.start_unix_server(serve, self.path))
        return self

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def publish(self, event: Any) -> None:
        data = event.model_dump_json().encode() + b"\n"
        for writer in self.writers:
            writer.write(data)

    def stop(self) -> None:
        async def close() -> None:
            self.server.close()
            for writer in self.writers:
                writer.close()

        self.run(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def measure(run: Callable[..., Any], publish: Callable[[str, int], None], child_args: list[str], ready: Callable[[], bool]) -> dict[str, Any]:
    """Start the subscriber child, publish every phase through `publish` on the server's loop
    (`run`), and return the child's figures with the agent-side CPU and the burst publish time."""
    proc = subprocess.Popen([sys.executable, __file__, *child_args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    while not ready():
        time.sleep(0.01)

    async def phase(name: str, rate: int, n: int) -> float:
        began = time.perf_counter()
        for i in range(n):
            publish(name, i)
            if rate:
                await asyncio.sleep(1 / rate)
        return (time.perf_counter() - began) * 1000

    import resource

    n = int(child_args[-1]) // len(PHASES)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    for name, rate in PHASES.items():
        publish_ms = run(phase(name, rate, n), timeout=120)
        time.sleep(1.0)  # let the previous phase's deliveries finish
    out, _ = proc.communicate(timeout=300)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["server_cpu_s"] = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    result["wall_s"] = time.perf_counter() - wall0
    result["burst_publish_ms"] = publish_ms
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--child", nargs=3, metavar=("SOCK", "SUBSCRIBERS", "EXPECT"))
    parser.add_argument("--raw-child", nargs=3, metavar=("SOCK", "SUBSCRIBERS", "EXPECT"))
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(args.child[0], int(args.child[1]), int(args.child[2])))
        return
    if args.raw_child:
        asyncio.run(raw_child(args.raw_child[0], int(args.raw_child[1]), int(args.raw_child[2])))
        return

    from api_harness import ServerThread, api_config, make_state, socket_dir

    from autogit.agent.events import Event

    n, subs = args.events, args.subscribers
    expect = str(len(PHASES) * n)

    srv = ServerThread(make_state(history=1000, queue_size=4 * n), api_config(socket_dir(), max_connections=1024, max_connections_per_uid=1024)).start()
    try:
        bus = srv.state.bus
        agent = measure(
            srv.run,
            lambda name, i: bus.publish("bench." + name, f"{name} {i}", phase=name, i=i, t=time.monotonic_ns()) and None,
            ["--child", srv.path, str(subs), expect],
            lambda: bus.subscriber_count >= subs,
        )
        dropped = sum(1 for e in bus.history() if e.type == "stream.dropped")
    finally:
        srv.stop()

    bare_dir = socket_dir()
    bare = BareFanout(str(bare_dir / "bare.sock")).start()
    seq = iter(range(1, 1 << 62))
    try:
        baseline = measure(
            bare.run,
            lambda name, i: bare.publish(
                Event.model_construct(seq=next(seq), time=datetime.now(UTC), type="bench." + name, message=f"{name} {i}",
                                      data={"phase": name, "i": i, "t": time.monotonic_ns()})  # fmt: skip
            ),
            ["--raw-child", bare.path, str(subs), expect],
            lambda: len(bare.writers) >= subs,
        )
    finally:
        bare.stop()
        shutil.rmtree(bare_dir, ignore_errors=True)

    print(f"subscribers: {subs}, events per phase: {n}, drops: {dropped}")
    print("delivery latency (publish → a subscriber has the line), agent beside the bare fan-out baseline:")
    for name, rate in PHASES.items():
        how = f"{n} events {f'at {rate}/s' if rate else 'at once'}"
        for who, result in (("baseline bare fan-out", baseline), ("agent /v1/events", agent)):
            lat = result[name]
            print(f"  {how:22s} {who:22s} n={len(lat):6d} p50={statistics.median(lat):7.2f} ms p99={pct(lat, 99):7.2f} ms max={max(lat):7.2f} ms")
    for who, result in (("baseline", baseline), ("agent", agent)):
        print(f"burst publish of {n} events to {subs} subscribers, {who}: {result['burst_publish_ms']:.2f} ms")
    for name in ("idle_status", "loaded_status"):
        lat = agent[name]
        print(f"GET /v1/status {name.split('_')[0]:6s}: n={len(lat)} p50={statistics.median(lat):.2f} ms p99={pct(lat, 99):.2f} ms")
    for who, result in (("baseline", baseline), ("agent", agent)):
        print(f"cpu during the phases, {who} ({result['wall_s']:.1f} s wall): server {result['server_cpu_s']:.1f} s, "
              f"subscriber process {result['child_cpu_s']:.1f} s (2 cores here)")  # fmt: skip


if __name__ == "__main__":
    main()
