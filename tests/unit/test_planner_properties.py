"""Property tests: the invariants that must hold for any host, runners, jobs and policy (safety),
that the planner does what it can (liveness), and that it agrees with the naive reference planner
(tests/reference_planner.py) wherever both are defined."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, UTC

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autogit.agent.model import Gpu, Host, Job, JobWait, Plan, Policy, Runner, RunnerKind, WaitReason
from autogit.agent.planner import plan
from autogit.agent.tags import VRAM_FLOORS_GIB, gpu_tags, host_profiles, memory_gib
from reference_planner import compare, naive_plan

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


def jobs_with(tags: st.SearchStrategy[list[str]], projects: int, most: int) -> st.SearchStrategy[list[Job]]:
    return st.lists(
        st.builds(
            Job,
            id=st.integers(1, 10_000),
            project_id=st.integers(1, projects),
            tags=tags,
            created_at=st.integers(0, 3600).map(lambda s: NOW - timedelta(seconds=s)),
        ),
        max_size=most,
        unique_by=lambda j: j.id,
    )


job_lists = jobs_with(tag_sets, projects=4, most=25)


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
    # ... from the planner's vocabulary, with a human detail (an enum member is always truthy).
    assert all(isinstance(w.reason, WaitReason) and w.detail for w in p.waiting), p.waiting

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


# --- GPU fit: memory floors, smallest that fits, MIG instances ------------------------------------

FIT_TAGS = ["gpu", "mig", "mig-1g.10gb", "nvidia", "h100", "vram-ge-10g", "vram-ge-24g", "vram-ge-40g", "vram-ge-80g", "cc-ge-9.0"]


@st.composite
def mig_hosts(draw):
    """Whole GPUs of assorted sizes, some in MIG mode, and MIG instances under some parents
    (also under a parent not flagged or not listed: an observation may be inconsistent)."""
    wholes = []
    for i in range(draw(st.integers(0, 4))):
        wholes.append(
            Gpu(
                id=f"g{i}",
                vendor="nvidia",
                model=draw(st.sampled_from(["NVIDIA H100 80GB HBM3", "NVIDIA L4", "NVIDIA GeForce RTX 4090"])),
                memory_mb=draw(st.sampled_from([9984, 23034, 24564, 40448, 49152, 81559])),
                compute_capability=draw(st.sampled_from([None, "8.9", "9.0"])),
                mig_mode=draw(st.booleans()),
                healthy=draw(st.integers(0, 5)) > 0,
                drained=draw(st.integers(0, 5)) == 0,
            )
        )
    slices = []
    for i in range(draw(st.integers(0, 5))):
        profile, memory = draw(st.sampled_from([("1g.10gb", 9984), ("2g.20gb", 20096), ("3g.40gb", 40448)]))
        slices.append(
            Gpu(
                id=f"m{i}",
                vendor="nvidia",
                model=f"NVIDIA H100 80GB HBM3 MIG {profile}",
                memory_mb=memory,
                compute_capability="9.0",
                mig_parent=draw(st.sampled_from(["g0", "g1", "g9"])),
                mig_profile=profile,
                healthy=draw(st.integers(0, 5)) > 0,
            )
        )
    return Host(hostname="h", arch="amd64", cpus=64, memory_mb=262144, gpus=wholes + slices)


@st.composite
def gpu_runner_lists(draw):
    out = []
    for i in range(draw(st.integers(0, 5))):
        busy = draw(st.booleans())
        out.append(
            Runner(
                id=f"r{i}",
                tags=draw(st.lists(st.sampled_from(FIT_TAGS), max_size=2, unique=True)),
                kind=RunnerKind.GPU,
                gpu=draw(st.sampled_from(["g0", "g1", "g2", "m0", "m1", "m2", "gone"])),
                busy=busy,
                idle_since=None if busy else NOW - timedelta(seconds=draw(st.integers(0, 1000))),
            )
        )
    return out


fit_jobs = jobs_with(st.lists(st.sampled_from(FIT_TAGS), min_size=1, max_size=3, unique=True), projects=3, most=12)
FIT_POLICY = Policy(max_runners=20, runner_cpus=0, runner_memory_mb=0, reserved_cpus=0, reserved_memory_mb=0)


@settings(max_examples=400, deadline=None)
@given(mig_hosts(), gpu_runner_lists(), fit_jobs)
def test_gpu_fit_invariants(host, runners, jobs):
    p = plan(host, runners, jobs, FIT_POLICY, NOW)
    gpus = {g.id: g for g in host.gpus}
    jobs_by_id = {j.id: j for j in jobs}
    profiles = {pr.gpu: pr.tags for pr in host_profiles(host, FIT_POLICY) if pr.gpu is not None}

    def family(gpu_id: str) -> set[str]:
        gpu = gpus.get(gpu_id)
        related = {g.id for g in host.gpus if g.mig_parent == gpu_id}
        if gpu is not None and gpu.mig_parent is not None:
            related.add(gpu.mig_parent)
        return related

    split = {g.id for g in host.gpus if g.mig_mode} | {g.mig_parent for g in host.gpus if g.mig_parent}
    # Every runner holds its GPU until it is gone, stopping or not: count them all.
    holders = [(r.id, r.gpu) for r in runners if r.gpu] + [(f"start:{i}", s.gpu) for i, s in enumerate(p.start) if s.gpu]
    for i, start in enumerate(p.start):
        if start.gpu is None:
            continue
        others = {gpu for holder, gpu in holders if holder != f"start:{i}"}
        # A GPU is held once; a MIG instance and its parent are never held at once.
        assert start.gpu not in others and not family(start.gpu) & others
        # Never a GPU taken whole while it is in MIG mode or has instances.
        assert start.gpu not in split
        # Floor tags never match a smaller card: a start's floors are within its GPU's size.
        gib = memory_gib(gpus[start.gpu].memory_mb) or 0
        floors = [int(t.removeprefix("vram-ge-").removesuffix("g")) for t in start.tags if t.startswith("vram-ge-")]
        assert all(floor <= gib for floor in floors)
        # Slices only for jobs that said `mig`, whole GPUs only for jobs that said `gpu` or neither.
        if gpus[start.gpu].mig_parent is not None:
            assert "gpu" not in start.tags
        else:
            assert not {"mig", "mig-1g.10gb"} & set(start.tags)

    # The smallest that fits: no GPU that would have fitted a started job is left free and smaller.
    taken = {gpu for _, gpu in holders}
    blocked = taken | {f for gpu in taken for f in family(gpu)}
    free = [g for g in host.gpus if g.id not in blocked and g.id not in split and g.healthy and not g.drained]
    for start in p.start:
        if start.gpu is None:
            continue
        job_tags = set(jobs_by_id[start.for_jobs[0]].tags)
        chosen = gpus[start.gpu]
        for g in free:
            if job_tags <= profiles[g.id]:
                assert (g.memory_mb, g.id) > (chosen.memory_mb, chosen.id), (g.id, chosen.id)


@given(st.integers(0, 300 * 1024), st.sampled_from(VRAM_FLOORS_GIB))
def test_a_memory_floor_tag_is_carried_exactly_by_gpus_at_or_above_it(memory_mb, floor):
    tags = gpu_tags(Gpu(id="g", vendor="amd", model="AMD Instinct MI300X", memory_mb=memory_mb))
    # At or above: the reported size, rounded up to whole GiB, reaches the floor; and the
    # usable memory is then more than floor - 1 GiB (never a card a whole GiB smaller).
    assert (f"vram-ge-{floor}g" in tags) == (memory_mb > 0 and -(-memory_mb // 1024) >= floor)
    if f"vram-ge-{floor}g" in tags:
        assert memory_mb > (floor - 1) * 1024


# --- liveness: the planner does what it can, and agrees with the naive reference planner ---------

# Stops of runners that were idle capacity (the rest are runners that serve nobody: unresponsive,
# on a GPU that is gone, unhealthy, drained or split, or drained themselves).
CAPACITY_STOPS = {"make-room", "idle-timeout"}


def _idle_capacity(host: Host, runners: list[Runner], stopped: dict[str, str]) -> list[Runner]:
    """The runners GitLab could give a job now: idle, not draining, on a usable GPU if any."""
    gpus = {g.id: g for g in host.gpus}
    split = {g.id for g in host.gpus if g.mig_mode} | {g.mig_parent for g in host.gpus if g.mig_parent}

    def gpu_ok(r: Runner) -> bool:
        g = gpus.get(r.gpu) if r.gpu else None
        return r.gpu is None or (g is not None and g.healthy and not g.drained and g.id not in split)

    return [r for r in runners if not r.busy and not r.draining and gpu_ok(r) and stopped.get(r.id, "make-room") in CAPACITY_STOPS]


def _room_for_one_more(host: Host, runners: list[Runner], p: Plan, policy: Policy, arch: str) -> bool:
    """Every cap has room for one more runner of `arch`, counting existing runners (stopping ones
    too: they hold their share until gone) and the plan's starts."""
    archs = [_arch(r.platform) for r in runners] + [_arch(s.platform) for s in p.start]
    cpus = sum(policy.runner_cpus if r.cpus is None else r.cpus for r in runners) + sum(s.cpus for s in p.start)
    memory = sum(policy.runner_memory_mb if r.memory_mb is None else r.memory_mb for r in runners) + sum(s.memory_mb for s in p.start)
    cap = policy.max_per_arch.get(arch)
    return (
        len(archs) < policy.max_runners
        and (cap is None or archs.count(arch) < cap)
        and (not policy.runner_cpus or cpus + policy.runner_cpus <= host.cpus - policy.reserved_cpus + 1e-9)
        and (not policy.runner_memory_mb or memory + policy.runner_memory_mb <= host.memory_mb - policy.reserved_memory_mb)
    )


def _free_gpu_fits(host: Host, runners: list[Runner], p: Plan, policy: Policy, tags: set[str]) -> bool:
    """A healthy, undrained whole-or-instance GPU whose tags cover `tags` is held by nobody (nor its
    MIG parent or instances)."""
    held = {r.gpu for r in runners if r.gpu} | {s.gpu for s in p.start if s.gpu}
    held |= {g.mig_parent for g in host.gpus if g.id in held and g.mig_parent} | {g.id for g in host.gpus if g.mig_parent in held}
    split = {g.id for g in host.gpus if g.mig_mode} | {g.mig_parent for g in host.gpus if g.mig_parent}
    fits = {pr.gpu for pr in host_profiles(host, policy) if pr.gpu is not None and tags <= pr.tags}
    return any(g.id in fits and g.healthy and not g.drained and g.id not in split and g.id not in held for g in host.gpus)


def _job_arch(host: Host, policy: Policy, tags: set[str]) -> str:
    fitting = [pr for pr in host_profiles(host, policy) if tags <= pr.tags]
    return next((pr.arch for pr in fitting if pr.kind is not RunnerKind.GPU), fitting[0].arch if fitting else host.arch)


def check_liveness(host: Host, runners: list[Runner], jobs: list[Job], policy: Policy, p: Plan) -> None:
    jobs_by_id = {j.id: j for j in jobs}
    stopped = {s.runner: s.reason for s in p.stop}
    claimed = {s.runner for s in p.served}
    free = [r for r in _idle_capacity(host, runners, stopped) if r.id not in claimed]
    for w in p.waiting:
        tags = set(jobs_by_id[w.job].tags)
        # Nothing waits while an idle runner GitLab would give it to is unclaimed.
        assert not [r.id for r in free if tags <= set(r.tags) and (tags or r.run_untagged)], w
        if w.reason is not WaitReason.WAITING_FOR_CAPACITY:
            continue
        # Nothing waits for capacity while every cap has room (and, for a GPU job, a GPU is free).
        gpu_job = not any(pr.kind is not RunnerKind.GPU and tags <= pr.tags for pr in host_profiles(host, policy))
        room = _room_for_one_more(host, runners, p, policy, _job_arch(host, policy, tags))
        assert not room or (gpu_job and not _free_gpu_fits(host, runners, p, policy, tags)), w


def _fresh(jobs: list[Job]) -> list[Job]:
    """The same jobs, at most a minute old: below any pickup timeout, so no idle runner is taken
    for unresponsive (the naive reference planner does not judge responsiveness)."""
    return [j.model_copy(update={"created_at": NOW - (NOW - j.created_at) / 60}) for j in jobs]


@settings(max_examples=400, deadline=None)
@given(hosts, runner_lists(), job_lists, policies)
def test_liveness(host, runners, jobs, policy):
    check_liveness(host, runners, jobs, policy, plan(host, runners, jobs, policy, NOW))


@settings(max_examples=300, deadline=None)
@given(mig_hosts(), gpu_runner_lists(), fit_jobs)
def test_gpu_liveness(host, runners, jobs):
    check_liveness(host, runners, jobs, FIT_POLICY, plan(host, runners, jobs, FIT_POLICY, NOW))


@settings(max_examples=400, deadline=None)
@given(hosts, runner_lists(), job_lists.map(_fresh), policies)
def test_equals_the_naive_reference_planner(host, runners, jobs, policy):
    assert compare(plan(host, runners, jobs, policy, NOW), naive_plan(host, runners, jobs, policy, NOW)) == []


@settings(max_examples=300, deadline=None)
@given(mig_hosts(), gpu_runner_lists(), fit_jobs.map(_fresh))
def test_gpu_fit_equals_the_naive_reference_planner(host, runners, jobs):
    assert compare(plan(host, runners, jobs, FIT_POLICY, NOW), naive_plan(host, runners, jobs, FIT_POLICY, NOW)) == []


@pytest.mark.parametrize("policy_update", [{"emulation": False}, {"gpus": False}, {"paused": True}])
def test_an_idle_runner_serves_the_job_even_where_no_such_runner_would_be_started(policy_update):
    """Liveness by example: emulation or GPUs switched off (or scaling paused) while an idle
    runner GitLab would give the job to is still there: the job is served, not told it waits."""
    host = Host(hostname="h", arch="amd64", emulated=["arm64"], cpus=8, memory_mb=16384,
                gpus=[Gpu(id="g0", vendor="nvidia", model="NVIDIA L4", memory_mb=23034)])  # fmt: skip
    idle = NOW - timedelta(seconds=10)
    runners = [
        Runner(id="arm", tags=["arm64"], kind=RunnerKind.EMULATED, platform="linux/arm64", idle_since=idle),
        Runner(id="gpu", tags=["gpu"], kind=RunnerKind.GPU, gpu="g0", idle_since=idle),
    ]
    jobs = [Job(id=1, project_id=1, tags=["arm64"], created_at=idle), Job(id=2, project_id=1, tags=["gpu"], created_at=idle)]
    p = plan(host, runners, jobs, Policy(**policy_update), NOW)
    assert {(s.job, s.runner) for s in p.served} == {(1, "arm"), (2, "gpu")} and p.waiting == []


def test_waiting_entries_are_ordinary_job_waits():
    """The planner builds its ~10^4 waiting entries on a fast path (one fields set shared by all):
    each equals, dumps and copies like a validated JobWait, and a copy never touches the others."""
    host = Host(hostname="h", arch="amd64", cpus=1, memory_mb=1024)
    jobs = [Job(id=i, project_id=1, tags=tags, created_at=NOW) for i, tags in ((1, ["s390x"]), (2, []), (3, []))]
    p = plan(host, [], jobs, Policy(max_runners=0), NOW)
    assert [w.job for w in p.waiting] == [1, 2, 3]
    for w in p.waiting:
        assert w == JobWait.model_validate(w.model_dump()) and w.model_fields_set == {"job", "reason", "detail", "missing_tags"}
    changed = p.waiting[1].model_copy(update={"detail": "other"})
    assert changed.detail == "other" and p.waiting[2].detail != "other"
    assert p.waiting[2].model_fields_set == {"job", "reason", "detail", "missing_tags"}
    assert Plan.model_validate_json(p.model_dump_json()) == p
