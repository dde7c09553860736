"""The planner: (host, runners, jobs, policy, now) → Plan. Pure: no I/O, no clock, no randomness.

How it decides (ADR-001 explains why):

1. Each distinct job tag set is classified once against the host's profiles (tags.py):
   native (⊆ the native profile), emulated (⊆ a usable foreign-architecture profile) or GPU
   (⊆ some GPU's profile); otherwise the job waits with a reason that says what is missing.
2. Jobs are visited in fair order: round-robin over projects, each round oldest first, so a
   project with a thousand queued jobs cannot starve one with a single job.
3. A job is served by an idle runner that GitLab would give it to (job tags ⊆ runner tags;
   untagged jobs only on run_untagged runners), even one of a kind this host would not start
   now (emulation or GPUs switched off in the policy), else by a new runner if every cap allows:
   total, per architecture, CPU and memory budget, and for GPU jobs one free healthy GPU
   (the smallest that fits, so big GPUs stay free for the jobs that need them). A MIG
   instance is a GPU of its own; a GPU in MIG mode is never taken whole, and an instance is
   never taken while a runner holds its parent (ADR-006).
4. Idle runners that serve nothing are stopped to make room for waiting jobs, reaped after
   the idle timeout (beyond the warm pool), or stopped when their GPU is gone. Busy runners
   are never stopped: when they must go they are drained instead.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter

from .model import (
    _as_utc,
    DrainRunner,
    Gpu,
    Host,
    Job,
    JobServed,
    JobWait,
    Plan,
    Policy,
    Runner,
    RunnerKind,
    StartRunner,
    StopRunner,
    WaitReason,
)
from .tags import Profile, arch_of_tag, host_profiles, platform_for_arch

__all__ = ["plan", "fair_order", "REASON_UNRESPONSIVE"]

# Stop reasons (documented in docs/runners/scaling.md).
REASON_IDLE = "idle-timeout"
REASON_MAKE_ROOM = "make-room"
REASON_DRAINED = "drained"
REASON_GPU_GONE = "gpu-gone"
REASON_GPU_UNHEALTHY = "gpu-unhealthy"
REASON_GPU_DRAINED = "gpu-drained"
REASON_GPU_MIG_MODE = "gpu-mig-mode"  # the whole GPU a runner holds was switched to MIG mode
REASON_UNRESPONSIVE = "unresponsive"  # idle, yet left a job it matches pending past pickup_timeout


@dataclass(frozen=True, slots=True)
class _Demand:
    """What serving one job tag set takes: the kind of runner, its tags and its candidates."""

    kind: RunnerKind
    arch: str
    runner_tags: tuple[str, ...]
    run_untagged: bool
    gpus: tuple[Gpu, ...] = ()  # usable candidate GPUs, smallest first


@dataclass(slots=True)
class _Capacity:
    """Running totals of what the host's runners take, checked before every start."""

    policy: Policy
    cpu_budget: float
    memory_budget: int
    total: int = 0
    cpus: float = 0.0
    memory_mb: int = 0
    per_arch: Counter[str] = field(default_factory=Counter)
    # GPU id → the GPUs that share its silicon: a MIG instance's parent, a parent's instances.
    mig_family: dict[str, frozenset[str]] = field(default_factory=dict)
    taken_gpus: set[str] = field(default_factory=set)  # held by a runner, or sharing silicon with one

    def add(self, arch: str, cpus: float, memory_mb: int, gpu: str | None) -> None:
        self.total += 1
        self.per_arch[arch] += 1
        self.cpus += cpus
        self.memory_mb += memory_mb
        if gpu is not None:
            self.taken_gpus.add(gpu)
            self.taken_gpus |= self.mig_family.get(gpu, frozenset())

    def blocker(self, arch: str) -> str | None:
        """Which cap a new runner for `arch` would break, or None if it fits."""
        policy = self.policy
        if self.total >= policy.max_runners:
            return f"max_runners ({policy.max_runners}) reached"
        arch_cap = policy.max_per_arch.get(arch)
        if arch_cap is not None and self.per_arch[arch] >= arch_cap:
            return f"max_per_arch[{arch}] ({arch_cap}) reached"
        if policy.runner_cpus and self.cpus + policy.runner_cpus > self.cpu_budget + 1e-9:
            return f"CPU budget ({self.cpu_budget:g} CPUs) reached"
        if policy.runner_memory_mb and self.memory_mb + policy.runner_memory_mb > self.memory_budget:
            return f"memory budget ({self.memory_budget} MiB) reached"
        return None


def _pending_since(job: Job) -> datetime:
    return job.queued_at or job.created_at


def fair_order(jobs: Sequence[Job]) -> list[Job]:
    """Round-robin over projects; within a round, oldest first (ties by job id)."""
    # One stable sort by (created_at, id), two passes with plain keys (cheaper than tuple keys);
    # then the n-th job of each project goes to round n, and each round keeps that order.
    ordered = sorted(jobs, key=attrgetter("id"))
    # oldest in the queue first: GitLab's queued_at where it gave one (a later stage's job is
    # created with its pipeline, long before it is pending)
    ordered.sort(key=_pending_since)
    seen: dict[int, int] = {}
    rounds: list[list[Job]] = []
    for job in ordered:
        rank = seen.get(job.project_id, 0)
        seen[job.project_id] = rank + 1
        if rank == len(rounds):
            rounds.append([job])
        else:
            rounds[rank].append(job)
    return [job for round_ in rounds for job in round_]


def _runner_arch(runner: Runner, host: Host) -> str:
    if runner.platform and "/" in runner.platform:
        return runner.platform.split("/", 1)[1]
    return host.arch


def _gpu_problem(runner: Runner, gpus: dict[str, Gpu], split: frozenset[str]) -> str | None:
    if runner.gpu is None:
        return None
    gpu = gpus.get(runner.gpu)
    if gpu is None:
        return REASON_GPU_GONE
    if not gpu.healthy:
        return REASON_GPU_UNHEALTHY
    if gpu.drained:
        return REASON_GPU_DRAINED
    if gpu.id in split:
        return REASON_GPU_MIG_MODE
    return None


def _split_gpus(gpus: Sequence[Gpu]) -> frozenset[str]:
    """GPUs that are never held whole: in MIG mode, or with MIG instances listed."""
    return frozenset({g.id for g in gpus if g.mig_mode} | {g.mig_parent for g in gpus if g.mig_parent is not None})


def _mig_families(gpus: Sequence[Gpu]) -> dict[str, frozenset[str]]:
    """GPU id → the ids it must never be held together with (its MIG parent or instances)."""
    family: dict[str, set[str]] = defaultdict(set)
    for gpu in gpus:
        if gpu.mig_parent is not None:
            family[gpu.id].add(gpu.mig_parent)
            family[gpu.mig_parent].add(gpu.id)
    return {gpu_id: frozenset(ids) for gpu_id, ids in family.items()}


class _Classifier:
    """Maps a job tag set to a _Demand, or to the JobWait that explains why it cannot run."""

    def __init__(self, host: Host, policy: Policy) -> None:
        self.policy = policy
        self.profiles = host_profiles(host, policy)
        self.native = self.profiles[0]
        self.gpus = {g.id: g for g in host.gpus}
        self.split = _split_gpus(host.gpus)
        self.cache: dict[frozenset[str], _Demand | JobWait] = {}

    def classify(self, tags: frozenset[str]) -> _Demand | JobWait:
        found = self.cache.get(tags)
        if found is None:
            found = self.cache[tags] = self._classify(tags)
        return found

    def _classify(self, tags: frozenset[str]) -> _Demand | JobWait:
        native = self.native
        if tags <= native.tags:
            return _Demand(RunnerKind.NATIVE, native.arch, tuple(sorted(native.tags)), True)
        fits = [p for p in self.profiles[1:] if tags <= p.tags]
        emulated = [p for p in fits if p.kind is RunnerKind.EMULATED]
        if emulated:
            if not self.policy.emulation:
                return self._wait(WaitReason.EMULATION_DISABLED, f"emulation of {emulated[0].arch} is off in the policy")
            return _Demand(RunnerKind.EMULATED, emulated[0].arch, tuple(sorted(tags)), False)
        gpu_fits = [self.gpus[p.gpu] for p in fits if p.gpu is not None]
        if gpu_fits:
            if not self.policy.gpus:
                return self._wait(WaitReason.GPU_UNAVAILABLE, "GPU scheduling is off in the policy")
            # Smallest first (then by id): the planner takes the first free one.
            split = self.split
            usable = sorted((g for g in gpu_fits if g.healthy and not g.drained and g.id not in split), key=lambda g: (g.memory_mb, g.id))
            if not usable:
                names = ", ".join(sorted(g.id for g in gpu_fits))
                if any(g.id in split for g in gpu_fits if g.healthy and not g.drained):
                    detail = f"every matching GPU is in MIG mode and runs jobs only through its MIG instances (tag `mig`): {names}"
                    return self._wait(WaitReason.GPU_UNAVAILABLE, detail)
                return self._wait(WaitReason.GPU_UNAVAILABLE, f"every matching GPU is unhealthy or drained: {names}")
            return _Demand(RunnerKind.GPU, native.arch, tuple(sorted(tags)), False, tuple(usable))
        return self._no_hardware(tags)

    def _no_hardware(self, tags: frozenset[str]) -> JobWait:
        best: Profile = min(self.profiles, key=lambda p: len(tags - p.tags))
        missing = sorted(tags - best.tags)
        # If every tag exists somewhere but never together, say so rather than list nothing.
        anywhere = frozenset().union(*(p.tags for p in self.profiles))
        never = sorted(tags - anywhere)
        foreign = sorted(a for t in tags if (a := arch_of_tag(t)) and a != self.native.arch)
        if never:
            detail = f"no runner here could carry tags {never}"
            if foreign:
                detail += f" (no QEMU binfmt handler with the F flag for {', '.join(foreign)})"
            return JobWait(job=0, reason=WaitReason.NO_MATCHING_HARDWARE, detail=detail, missing_tags=never)
        detail = f"no single runner here carries all of {sorted(tags)}"
        if "gpu" in tags and any(t == "mig" or t.startswith("mig-") for t in tags):
            detail += " (`gpu` asks for a whole GPU; a MIG instance carries `mig` instead)"
        return JobWait(job=0, reason=WaitReason.NO_MATCHING_HARDWARE, detail=detail, missing_tags=missing)

    @staticmethod
    def _wait(reason: WaitReason, detail: str) -> JobWait:
        return JobWait(job=0, reason=reason, detail=detail)


def _matches(tags: frozenset[str], runner: Runner, runner_tags: frozenset[str], reach: str | None = None) -> bool:
    # GitLab's rule: every job tag on the runner; untagged jobs only where run_untagged; and the
    # runner registered where it serves the job's project (a group runner serves its group only).
    return tags <= runner_tags and (bool(tags) or runner.run_untagged) and (reach is None or runner.reach in (None, reach))


def _reach(job: Job) -> str | None:
    return job.reach[0] if job.reach else None


def _overdue_tag_sets(jobs: Sequence[Job], policy: Policy, now: datetime) -> set[tuple[frozenset[str], str | None]]:
    """The distinct (tag set, reach) of jobs pending longer than pickup_timeout."""
    cutoff = now.timestamp() - policy.pickup_timeout
    return {(frozenset(j.tags), _reach(j)) for j in jobs if _as_utc(_pending_since(j)).timestamp() <= cutoff}


def _unresponsive(runner: Runner, overdue: set[tuple[frozenset[str], str | None]], policy: Policy, now: datetime) -> bool:
    """Idle for longer than pickup_timeout while a job it matches has waited that long too."""
    if runner.idle_since is None or (now - _as_utc(runner.idle_since)).total_seconds() < policy.pickup_timeout:
        return False
    runner_tags = frozenset(runner.tags)
    return any(_matches(tags, runner, runner_tags, reach) for tags, reach in overdue)


def plan(host: Host, runners: Sequence[Runner], jobs: Sequence[Job], policy: Policy, now: datetime) -> Plan:
    """Decide which runners to start, drain and stop, and why each unserved job waits."""
    now = _as_utc(now)
    classifier = _Classifier(host, policy)
    gpus = classifier.gpus
    capacity = _Capacity(
        policy,
        cpu_budget=max(0.0, host.cpus - policy.reserved_cpus),
        memory_budget=max(0, host.memory_mb - policy.reserved_memory_mb),
        mig_family=_mig_families(host.gpus),
    )
    stops: list[StopRunner] = []
    drains: list[DrainRunner] = []
    idle: list[tuple[Runner, frozenset[str]]] = []
    overdue = _overdue_tag_sets(jobs, policy, now)

    for runner in sorted(runners, key=lambda r: r.id):
        cpus = policy.runner_cpus if runner.cpus is None else runner.cpus
        memory = policy.runner_memory_mb if runner.memory_mb is None else runner.memory_mb
        capacity.add(_runner_arch(runner, host), cpus, memory, runner.gpu)
        problem = _gpu_problem(runner, gpus, classifier.split)
        if runner.busy:
            if problem is not None and not runner.draining:
                drains.append(DrainRunner.trusted(runner=runner.id, reason=problem))
        elif problem is not None:
            stops.append(StopRunner.trusted(runner=runner.id, reason=problem))
        elif runner.draining:
            stops.append(StopRunner.trusted(runner=runner.id, reason=REASON_DRAINED))
        elif overdue and _unresponsive(runner, overdue, policy, now):
            # Not capacity: a runner that does not ask GitLab for jobs serves nobody. Stopping it
            # lets a fresh one take the job (and frees the GPU or room it holds).
            stops.append(StopRunner.trusted(runner=runner.id, reason=REASON_UNRESPONSIVE))
        else:
            idle.append((runner, frozenset(runner.tags)))

    def gpu_memory(runner: Runner) -> int:
        held = gpus.get(runner.gpu) if runner.gpu is not None else None
        return held.memory_mb if held is not None else 0

    claimed: set[str] = set()
    idle_by_tags: dict[tuple[frozenset[str], str | None], list[Runner]] = {}
    cursor: dict[tuple[frozenset[str], str | None], int] = {}
    starts: list[StartRunner] = []
    served: list[JobServed] = []
    waiting: list[JobWait] = []
    capacity_waits: list[_Demand] = []  # one entry per job that waits for capacity

    def idle_runner_for(tags: frozenset[str], reach: str | None) -> Runner | None:
        key = (tags, reach)
        candidates = idle_by_tags.get(key)
        if candidates is None:
            # Most specific runner first: keep versatile runners for jobs only they can take; among
            # equals the one on the smallest GPU, so big GPUs stay free for the jobs that need them.
            candidates = sorted((r for r, rt in idle if _matches(tags, r, rt, reach)), key=lambda r: (len(r.tags), gpu_memory(r), r.id))
            idle_by_tags[key] = candidates
        i = cursor.get(key, 0)
        while i < len(candidates) and candidates[i].id in claimed:
            i += 1
        cursor[key] = i
        return candidates[i] if i < len(candidates) else None

    def wait(job: Job, template: JobWait) -> None:
        waiting.append(_job_wait(job.id, template))

    paused = JobWait(job=0, reason=WaitReason.SCALING_PAUSED, detail="scaling is paused by an operator")
    all_gpus_held = JobWait(
        job=0, reason=WaitReason.WAITING_FOR_CAPACITY, detail="every matching GPU is held by a runner (or its MIG parent or instance is)"
    )
    # Remaining capacity only shrinks while jobs are visited, so once an architecture is blocked
    # it stays blocked for the rest of this pass: remember why instead of asking again per job.
    blocked: dict[str, JobWait] = {}
    # Likewise claims only grow: once a tag set has no idle runner left and its architecture is
    # blocked (or scaling is paused), or it cannot run here at all, every later job with those
    # tags waits alike. Settle it once: (why it waits, the demand it waits for capacity with).
    settled: dict[tuple[frozenset[str], str | None], tuple[JobWait, _Demand | None]] = {}
    classify = classifier.classify
    for job in fair_order(jobs):
        tags = frozenset(job.tags)
        reach = _reach(job)
        known = settled.get((tags, reach))
        if known is not None:
            wait(job, known[0])
            if known[1] is not None:
                capacity_waits.append(known[1])
            continue
        # An idle runner GitLab would give the job to serves it, whatever this host could start.
        taker = idle_runner_for(tags, reach) if len(claimed) < len(idle) else None
        if taker is not None:
            claimed.add(taker.id)
            served.append(JobServed.trusted(job=job.id, runner=taker.id))
            continue
        demand = classify(tags)
        if isinstance(demand, JobWait):
            settled[(tags, reach)] = (demand, None)
            wait(job, demand)
            continue
        if policy.paused:
            settled[(tags, reach)] = (paused, None)
            wait(job, paused)
            continue
        why = blocked.get(demand.arch)
        if why is None and (blocker := capacity.blocker(demand.arch)) is not None:
            why = blocked[demand.arch] = JobWait(job=0, reason=WaitReason.WAITING_FOR_CAPACITY, detail=blocker)
        if why is not None:
            settled[(tags, reach)] = (why, demand)
        gpu: Gpu | None = None
        if why is None and demand.kind is RunnerKind.GPU:
            gpu = next((g for g in demand.gpus if g.id not in capacity.taken_gpus), None)
            if gpu is None:
                # Not settled: the architecture may be blocked later, and that is then the reason.
                why = all_gpus_held
        if why is not None:
            wait(job, why)
            capacity_waits.append(demand)
            continue
        capacity.add(demand.arch, policy.runner_cpus, policy.runner_memory_mb, gpu.id if gpu else None)
        served.append(JobServed.trusted(job=job.id, runner=f"start:{len(starts)}"))
        starts.append(_start(demand, gpu, [job.id], policy, reach))

    spare = [r for r, _ in idle if r.id not in claimed]
    spare_ids = {r.id for r in spare}

    # Idle runners that serve nothing make room for jobs that wait for capacity (stop now,
    # start on the next pass once they are gone: caps hold at every instant).
    # A demand no spare runner could make room for stays so as spare runners go (capacity does not
    # change here): ask once per demand, not once per waiting job.
    hopeless: set[int] = set()
    for demand in capacity_waits:
        if not spare_ids:
            break
        if id(demand) in hopeless:
            continue
        victim = _room_maker(demand, spare, spare_ids, capacity, host)
        if victim is None:
            hopeless.add(id(demand))
        else:
            spare_ids.discard(victim.id)
            stops.append(StopRunner.trusted(runner=victim.id, reason=REASON_MAKE_ROOM))

    # Reap idle runners past the timeout, keeping the warm pool (most recently active first).
    kept_warm = 0
    spare = [r for r in spare if r.id in spare_ids]
    spare.sort(key=lambda r: (r.idle_since is None, r.idle_since or now, r.id), reverse=True)
    for runner in spare:
        if runner.kind is RunnerKind.NATIVE and kept_warm < policy.warm_pool:
            kept_warm += 1
            continue
        if runner.idle_since is not None and (now - runner.idle_since).total_seconds() >= policy.idle_timeout:
            stops.append(StopRunner.trusted(runner=runner.id, reason=REASON_IDLE))

    # Fill the warm pool, but never ahead of jobs that already wait for capacity.
    if not policy.paused and not capacity_waits:
        native = classifier.classify(frozenset())
        assert not isinstance(native, JobWait)
        while kept_warm < policy.warm_pool and capacity.blocker(native.arch) is None:
            capacity.add(native.arch, policy.runner_cpus, policy.runner_memory_mb, None)
            starts.append(_start(native, None, [], policy))
            kept_warm += 1

    stops.sort(key=lambda s: s.runner)
    return Plan.trusted(start=starts, stop=stops, drain=drains, served=served, waiting=waiting)


# Every JobWait the planner makes sets all four fields; a frozen model never changes its fields
# set in place (pydantic's copies copy it), so one set serves them all.
_WAIT_FIELDS = {"job", "reason", "detail", "missing_tags"}
_new_wait = JobWait.__new__
_set = object.__setattr__


def _job_wait(job_id: int, why: JobWait) -> JobWait:
    """`why` for one job: JobWait.trusted, cut down for the hot path (most of a long queue waits,
    ~10^4 entries a pass): one dict and no set of its own per entry."""
    wait = _new_wait(JobWait)
    _set(wait, "__dict__", {"job": job_id, "reason": why.reason, "detail": why.detail, "missing_tags": why.missing_tags})
    _set(wait, "__pydantic_fields_set__", _WAIT_FIELDS)
    _set(wait, "__pydantic_extra__", None)
    _set(wait, "__pydantic_private__", None)
    return wait


def _start(demand: _Demand, gpu: Gpu | None, for_jobs: list[int], policy: Policy, reach: str | None = None) -> StartRunner:
    return StartRunner.trusted(
        reach=reach,
        kind=demand.kind,
        tags=list(demand.runner_tags),
        run_untagged=demand.run_untagged,
        platform=platform_for_arch(demand.arch),
        gpu=gpu.id if gpu else None,
        for_jobs=for_jobs,
        cpus=policy.runner_cpus,
        memory_mb=policy.runner_memory_mb,
    )


def _room_maker(
    demand: _Demand, spare: list[Runner], spare_ids: set[str], capacity: _Capacity, host: Host
) -> Runner | None:
    """An idle, unneeded runner whose removal lifts what blocks `demand`, or None."""
    candidates = [r for r in spare if r.id in spare_ids]
    if demand.kind is RunnerKind.GPU and capacity.blocker(demand.arch) is None:
        wanted = {g.id for g in demand.gpus}
        candidates = [r for r in candidates if r.gpu in wanted]
    elif capacity.policy.max_per_arch.get(demand.arch) is not None and capacity.total < capacity.policy.max_runners:
        candidates = [r for r in candidates if _runner_arch(r, host) == demand.arch]
    # Longest idle goes first.
    candidates.sort(key=lambda r: (r.idle_since is None, r.idle_since or datetime.max.replace(tzinfo=None), r.id))
    return candidates[0] if candidates else None
