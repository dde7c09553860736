"""Benchmark: the planner on 10,000 pending jobs, 500 runners and 16 GPUs.

Prints the planning time beside the time of merely parsing the same scenario (the baseline),
both measured in this run. Goal: planning under 50 ms on a 2-core CI machine.

    .venv/bin/python bench/plan_bench.py [--jobs 10000] [--runners 500] [--gpus 16] [--repeat 15]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from datetime import datetime, timedelta, UTC

from autogit.agent.planner import plan
from autogit.agent.scenario import parse_scenario


def make_scenario(n_jobs: int, n_runners: int, n_gpus: int, seed: int = 7) -> str:
    rnd = random.Random(seed)
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    gpus = [
        {"id": f"GPU-{i:04d}", "vendor": "nvidia", "model": "NVIDIA H100 80GB HBM3" if i % 4 == 0 else "NVIDIA L4",
         "memory_mb": 81559 if i % 4 == 0 else 23034, "healthy": i != 5, "drained": i == 6}
        for i in range(n_gpus)
    ]
    tag_sets = [[], ["amd64"], ["amd64", "docker"], ["arm64"], ["riscv64"], ["gpu"], ["gpu", "h100"], ["gpu", "l4", "cuda"], ["s390x"]]
    runners = []
    for i in range(n_runners):
        tags = rnd.choice([["amd64", "x86_64", "docker"], ["arm64"], ["riscv64"]])
        busy = rnd.random() < 0.7
        runners.append({"id": f"r{i:04d}", "tags": tags, "busy": busy,
                        "idle_since": None if busy else (now - timedelta(seconds=rnd.randint(0, 900))).isoformat()})
    jobs = [{"id": 100000 + i, "project_id": rnd.randint(1, 200), "tags": rnd.choice(tag_sets),
             "created_at": (now - timedelta(seconds=rnd.randint(0, 3600))).isoformat()} for i in range(n_jobs)]
    return json.dumps({
        "now": now.isoformat(),
        "host": {"hostname": "bench", "arch": "amd64", "emulated": ["arm64", "riscv64"], "cpus": 256,
                 "memory_mb": 2 * 1024 * 1024, "gpus": gpus},
        "policy": {"max_runners": 600, "idle_timeout": 300, "emulation": True, "extra_tags": ["docker"],
                   "runner_cpus": 0.25, "runner_memory_mb": 1024},
        "runners": runners,
        "jobs": jobs,
    })


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--runners", type=int, default=500)
    ap.add_argument("--gpus", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    text = make_scenario(args.jobs, args.runners, args.gpus)
    scenario = parse_scenario(text)
    runners = scenario.planner_runners()
    parse_ms = timed(lambda: parse_scenario(text), args.repeat)
    plan_ms = timed(lambda: plan(scenario.host, runners, scenario.jobs, scenario.policy, scenario.now), args.repeat)
    result = plan(scenario.host, runners, scenario.jobs, scenario.policy, scenario.now)
    print(f"scenario: {args.jobs} jobs, {args.runners} runners, {args.gpus} GPUs ({len(text) / 1e6:.1f} MB JSON)")
    print(f"plan result: {len(result.start)} start, {len(result.stop)} stop, {len(result.served)} served, {len(result.waiting)} waiting")
    print(f"baseline  parse scenario   median {statistics.median(parse_ms):7.1f} ms   min {min(parse_ms):7.1f} ms")
    print(f"planner   plan()           median {statistics.median(plan_ms):7.1f} ms   min {min(plan_ms):7.1f} ms   (goal < 50 ms)")


if __name__ == "__main__":
    main()
