"""Property tests: the invariants that must hold for any host, runners, jobs and policy."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, UTC

from hypothesis import given, settings
from hypothesis import strategies as st

from autogit.agent.model import Gpu, Host, Job, Policy, Runner, RunnerKind
from autogit.agent.planner import plan

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TAG_POOL = ["amd64", "x86_64", "arm64", "riscv64", "gpu", "cuda", "rocm", "h100", "docker", "big", "vram-80g"]

tag_sets = st.lists(st.sampled_from(TAG_POOL), max_size=3, unique=True)

gpus = st.lists(
    st.builds(
        Gpu,
        id=st.sampled_from(["g0", "g1", "g2", "g3"]),
        vendor=st.sampled_from(["nvidia", "amd", "intel"]),
        model=st.sampled_from(["NVIDIA H100 80GB HBM3", "NVIDIA L4", "AMD Instinct MI300X", "Intel Arc A770"]),
        memory_mb=st.sampled_from([16384, 23034, 81559]),
        healthy=st.booleans(),
        drained=st.booleans(),
    ),
    max_size=4,
    unique_by=lambda g: g.id,
)

hosts = st.builds(
    Host,
    hostname=st.just("h"),
    arch=st.just("amd64"),
    emulated=st.lists(st.sampled_from(["arm64", "riscv64"]), unique=True),
    cpus=st.integers(1, 32),
    memory_mb=st.integers(1024, 65536),
    gpus=gpus,
)

policies = st.builds(
    Policy,
    max_runners=st.integers(0, 12),
    max_per_arch=st.dictionaries(st.sampled_from(["amd64", "arm64", "riscv64"]), st.integers(0, 4), max_size=2),
    idle_timeout=st.sampled_from([0, 60, 300]),
    warm_pool=st.integers(0, 3),
    emulation=st.booleans(),
    runner_cpus=st.sampled_from([0, 0.5, 1, 2]),
    runner_memory_mb=st.sampled_from([0, 512, 2048]),
    reserved_cpus=st.sampled_from([0, 1]),
    reserved_memory_mb=st.sampled_from([0, 1024]),
    extra_tags=st.lists(st.sampled_from(["docker", "big"]), max_size=1, unique=True),
    gpus=st.booleans(),
    paused=st.booleans(),
)


@st.composite
def runner_lists(draw):
    out = []
    for i in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(list(RunnerKind)))
        busy = draw(st.booleans())
        out.append(
            Runner(
                id=f"r{i}",
                tags=draw(tag_sets),
                run_untagged=draw(st.booleans()),
                kind=kind,
                platform=draw(st.sampled_from(["linux/amd64", "linux/arm64", "linux/riscv64"])),
                gpu=draw(st.sampled_from([None, "g0", "g1", "g9"])) if kind is RunnerKind.GPU else None,
                busy=busy,
                idle_since=None if busy else NOW - timedelta(seconds=draw(st.integers(0, 1000))),
                draining=draw(st.booleans()),
            )
        )
    return out


job_lists = st.lists(
    st.builds(
        Job,
        id=st.integers(1, 10_000),
        project_id=st.integers(1, 4),
        tags=tag_sets,
        created_at=st.integers(0, 3600).map(lambda s: NOW - timedelta(seconds=s)),
    ),
    max_size=25,
    unique_by=lambda j: j.id,
)


def _arch(platform: str | None) -> str:
    return platform.split("/", 1)[1] if platform else "amd64"


@settings(max_examples=400, deadline=None)
@given(hosts, runner_lists(), job_lists, policies)
def test_invariants(host, runners, jobs, policy):
    p = plan(host, runners, jobs, policy, NOW)
    by_id = {r.id: r for r in runners}
    jobs_by_id = {j.id: j for j in jobs}

    # Every job is either served or waiting with a reason, exactly once.
    served = [s.job for s in p.served]
    waiting = [w.job for w in p.waiting]
    assert sorted(served + waiting) == sorted(jobs_by_id)
    assert all(w.reason for w in p.waiting)

    # GitLab's rule for every job counted on an existing runner or a new one.
    for s in p.served:
        job = jobs_by_id[s.job]
        if s.runner.startswith("start:"):
            start = p.start[int(s.runner.split(":")[1])]
            assert set(job.tags) <= set(start.tags) and (job.tags or start.run_untagged)
            assert start.for_jobs == [job.id]
        else:
            r = by_id[s.runner]
            assert set(job.tags) <= set(r.tags) and (job.tags or r.run_untagged)
            assert not r.busy and not r.draining
    # A runner takes one job at a time.
    assert all(n == 1 for n in Counter(s.runner for s in p.served).values())

    # Busy runners are never stopped.
    stopped = {s.runner for s in p.stop}
    assert not any(by_id[r].busy for r in stopped)
    assert len(stopped) == len(p.stop)

    # Caps: if there was room, the starts never push past it.
    if p.start:
        assert not policy.paused
        assert len(runners) + len(p.start) <= policy.max_runners
        for arch, cap in policy.max_per_arch.items():
            existing = sum(1 for r in runners if _arch(r.platform) == arch)
            new = sum(1 for s in p.start if _arch(s.platform) == arch)
            assert new == 0 or existing + new <= cap
        cpus = sum(policy.runner_cpus for _ in runners) + policy.runner_cpus * len(p.start)
        assert policy.runner_cpus == 0 or cpus <= host.cpus - policy.reserved_cpus + 1e-9
        memory = policy.runner_memory_mb * (len(runners) + len(p.start))
        assert policy.runner_memory_mb == 0 or memory <= host.memory_mb - policy.reserved_memory_mb

    # A GPU is held by at most one runner, and only healthy, undrained GPUs are handed out.
    gpus = {g.id: g for g in host.gpus}
    new_gpus = [s.gpu for s in p.start if s.gpu]
    held = {r.gpu for r in runners if r.gpu}
    assert len(new_gpus) == len(set(new_gpus)) and not set(new_gpus) & held
    assert all(gpus[g].healthy and not gpus[g].drained for g in new_gpus)
    # Special runners never take untagged jobs.
    assert all(s.run_untagged == (s.kind is RunnerKind.NATIVE) for s in p.start)


@settings(max_examples=150, deadline=None)
@given(hosts, runner_lists(), job_lists, policies, st.randoms(use_true_random=False))
def test_deterministic_whatever_the_input_order(host, runners, jobs, policy, rnd):
    first = plan(host, runners, jobs, policy, NOW)
    shuffled_runners, shuffled_jobs = list(runners), list(jobs)
    rnd.shuffle(shuffled_runners)
    rnd.shuffle(shuffled_jobs)
    again = plan(host, shuffled_runners, shuffled_jobs, policy, NOW)
    assert first.model_dump() == again.model_dump()
