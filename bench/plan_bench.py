"""Benchmark: the planner beside a naive reference planner, on the same scenarios, in this run.

The planner runs as the agent runs it: `decide()` over a whole Observation (every runner with
its registration, status and start time, some busy ones already stopping, this host's
registrations, a queue read that missed one project out of the runners' reach, a running backoff),
so the lifecycle, busy-state, gate and registration phases are timed with the capacity phase.

The baseline is tests/reference_planner.py: the obvious loop (for each job in fair order, scan
the idle runners, else start one if every cap allows), no caches or indexes. Both plan each
scenario; their results are checked equal where both are defined (which job is served by which
idle runner, the runners started for jobs by kind, architecture, GPU and tags, which jobs wait and
why), and what only the real planner decides (stops, drains, warm-pool starts) is counted apart.
Idle runners in these scenarios are younger than the pickup timeout, so none is taken for
unresponsive (the naive planner does not judge that). Goal: the largest, 10,000 jobs / 500
runners / 16 GPUs, under 50 ms median on a 2-core CI machine.

    .venv/bin/python bench/plan_bench.py [--repeat 15] [--naive-repeat 3] [--scenario JOBS/RUNNERS/GPUS ...]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, UTC
from pathlib import Path

from autogit.agent.model import Observation
from autogit.agent.planner import decide, plan
from autogit.agent.scenario import parse_scenario

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_planner import compare, naive_plan  # noqa: E402

SCENARIOS = ["10000/500/16", "1000/100/8", "100/20/2", "50/200/4"]  # the last: more runners than jobs


def make_scenario(n_jobs: int, n_runners: int, n_gpus: int, seed: int = 7) -> str:
    rnd = random.Random(seed)
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    gpus = [
        {"id": f"GPU-{i:04d}", "vendor": "nvidia", "model": "NVIDIA H100 80GB HBM3" if i % 4 == 0 else "NVIDIA L4",
         "memory_mb": 81559 if i % 4 == 0 else 23034, "healthy": i != 5, "drained": i == 6}
        for i in range(n_gpus)
    ]  # fmt: skip
    tag_sets = [[], ["amd64"], ["amd64", "docker"], ["arm64"], ["riscv64"], ["gpu"], ["gpu", "h100"], ["gpu", "l4", "cuda"], ["s390x"]]
    runners = []
    for i in range(n_runners):
        tags = rnd.choice([["amd64", "x86_64", "docker"], ["arm64"], ["riscv64"]])
        busy = rnd.random() < 0.7
        # Idle for less than the pickup timeout (120 s): every idle runner is capacity. Every runner
        # is registered and listed (what the lifecycle phases read); some busy ones are stopping.
        runners.append({"id": f"r{i:04d}", "tags": tags, "busy": busy, "draining": not busy and rnd.random() < 0.05,
                        "idle_since": None if busy else (now - timedelta(seconds=rnd.randint(0, 100))).isoformat(),
                        "reach": "group:1", "gitlab_id": 1000 + i, "busy_by": "gitlab" if busy else None,
                        "registration": {"id": 1000 + i, "status": "online", "online": True},
                        "started_at": (now - timedelta(seconds=rnd.randint(300, 7200))).isoformat(),
                        "stop_requested_at": (now - timedelta(seconds=rnd.randint(0, 600))).isoformat() if busy and rnd.random() < 0.05 else None,
                        })  # fmt: skip
    if n_gpus > 5:  # a busy runner on the unhealthy GPU: drained
        runners.append({"id": "r-gpu5", "tags": ["gpu"], "kind": "gpu", "gpu": "GPU-0005", "busy": True})
    jobs = [{"id": 100000 + i, "project_id": rnd.randint(1, 200), "tags": rnd.choice(tag_sets),
             "created_at": (now - timedelta(seconds=rnd.randint(0, 3600))).isoformat()} for i in range(n_jobs)]  # fmt: skip
    return json.dumps({
        "now": now.isoformat(),
        "host": {"hostname": "bench", "arch": "amd64", "emulated": ["arm64", "riscv64"], "cpus": 256,
                 "memory_mb": 2 * 1024 * 1024, "gpus": gpus},
        "policy": {"max_runners": n_runners + n_runners // 5, "idle_timeout": 60, "emulation": True, "extra_tags": ["docker"],
                   "runner_cpus": 0.25, "runner_memory_mb": 1024},
        "runners": runners,
        "jobs": jobs,
        "registrations": [{"id": r["gitlab_id"], "name": r["id"]} for r in runners if "gitlab_id" in r] + [{"id": 9, "name": "stray"}],
        "queue": {"complete": False, "unread": [{"project_id": 999, "reach": "group:2", "error": "403"}]},
        "backoff": [{"action": "delete-registration", "target": "9", "until": (now + timedelta(seconds=60)).isoformat(), "cause": "403"}],
    })  # fmt: skip


def timed(fn: Callable[[], object], repeat: int, collect: bool = True) -> list[float]:
    """Wall times in ms. The collector stays on (its cost is the planner's); with `collect`, each
    run starts after a full collection, so it pays for its own young-generation collections only,
    not for a full one that the objects of earlier runs made due."""
    out = []
    for _ in range(repeat):
        if collect:
            gc.collect()
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def run(spec: str, repeat: int, naive_repeat: int) -> bool:
    n_jobs, n_runners, n_gpus = (int(x) for x in spec.split("/"))
    scenario = parse_scenario(make_scenario(n_jobs, n_runners, n_gpus))
    runners = scenario.planner_runners()
    args = (scenario.host, runners, scenario.jobs, scenario.policy, scenario.now)
    observation = Observation(host=scenario.host, runners=runners, jobs=scenario.jobs, policy=scenario.policy, now=scenario.now,
                              queue=scenario.queue, registrations=scenario.registrations, backoff=scenario.backoff)  # fmt: skip
    real = decide(observation)
    naive = naive_plan(*args)
    real_ms = timed(lambda: decide(observation), repeat)
    naive_ms = timed(lambda: naive_plan(*args), naive_repeat)
    core_ms = timed(lambda: plan(*args), repeat)
    diffs = compare(real, naive)
    kinds = Counter(s.kind.value for s in naive.start)
    stops = Counter(s.reason for s in real.stop)
    warm = sum(1 for s in real.start if not s.for_jobs)
    print(f"scenario {n_jobs} jobs / {n_runners} runners / {n_gpus} GPUs")
    print(f"  both     {len(naive.served)} served ({sum(1 for r in naive.served.values() if not r.startswith('start:'))} by idle runners), "
          f"starts for jobs {dict(sorted(kinds.items()))}, {len(naive.waiting)} waiting "
          f"{dict(sorted(Counter(r.value for r in naive.waiting.values()).items()))}")  # fmt: skip
    print(f"  equal    {'yes' if not diffs else 'NO: ' + '; '.join(diffs)}")
    print(f"  real only (by design): stops {dict(sorted(stops.items()))}, drains {len(real.drain)}, warm-pool starts {warm}, "
          f"aborts {len(real.abort)}, held {len(real.held)}, registrations deleted {len(real.delete_registrations)}, pauses {len(real.pause)}")  # fmt: skip
    print(f"  baseline naive_plan()  median {statistics.median(naive_ms):8.1f} ms   min {min(naive_ms):8.1f} ms   ({naive_repeat} runs)")
    speedup = statistics.median(naive_ms) / statistics.median(real_ms)
    print(f"  planner  decide()      median {statistics.median(real_ms):8.1f} ms   min {min(real_ms):8.1f} ms   ({repeat} runs, {speedup:.1f}x faster)")
    print(f"  capacity plan()        median {statistics.median(core_ms):8.1f} ms   min {min(core_ms):8.1f} ms   (the capacity phase alone)")
    back_to_back = timed(lambda: decide(observation), repeat, collect=False)
    print(f"  planner  back to back  median {statistics.median(back_to_back):8.1f} ms   min {min(back_to_back):8.1f} ms   (no collection between runs)")
    return not diffs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--naive-repeat", type=int, default=3)
    ap.add_argument("--scenario", action="append", help="JOBS/RUNNERS/GPUS (repeatable); default: " + " ".join(SCENARIOS))
    args = ap.parse_args()
    ok = [run(spec, args.repeat, args.naive_repeat) for spec in args.scenario or SCENARIOS]
    print("goal: decide() under 50 ms median for 10000/500/16 on the 2-core CI machine, and at least 4x faster than naive_plan() in the same run")
    sys.exit(0 if all(ok) else 1)


if __name__ == "__main__":
    main()
