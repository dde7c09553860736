"""The planner: Observation → Plan. Pure: no I/O, no clock, no randomness.

`decide(observation)` makes every decision of a reconcile pass (ADR-001): which runners to
remove, abort, kill, drain, stop, start and pause, which registrations to delete, and why each
unserved job waits and each runner is held. The reconciler observes, calls it and carries the plan
out; it chooses nothing. It runs in named phases:

- lifecycle: exited runners and orphans (registration gone on two reads in a row) are removed;
  a runner asked to stop is aborted `drain_timeout` later and killed `force_timeout + kill_grace`
  after the abort; nothing is aborted or killed before its deadline.
- busy state: a runner is busy if GitLab's listing or its own job workloads say so; where the
  queue read missed a project the runner could serve, its busy state is unknown and it is
  treated as busy (unknown is never read as idle). A runner leaving, drained by an operator, or
  running past pickup_timeout without ever contacting GitLab takes no new job.
- capacity (`plan`, below): serve jobs, start runners, make room, reap, keep the warm pool.
- gates: a quick pass (no fresh busy state) reaps nothing; starts backing off wait, saying why.
- registrations: those of this host with no runner are deleted; a runner is paused in GitLab
  before it is stopped or drained.

How the capacity phase decides (`plan(host, runners, jobs, policy, now)`):

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

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any

from .model import (
    _as_utc,
    AbortRunner,
    Backoff,
    BusyEvidence,
    DeleteRegistration,
    DrainRunner,
    KillRunner,
    Lifecycle,
    Observation,
    PauseRegistration,
    QueueRead,
    RemoveRunner,
    RunnerHold,
    RunnerStatus,
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
from .matching import Capacity, capacity_of, reaches, runner_arch, split_gpus, tags_match
from .tags import Profile, arch_of_tag, host_profiles, platform_for_arch

__all__ = ["decide", "plan", "fair_order", "REASON_UNRESPONSIVE"]

# Stop reasons (documented in docs/runners/README.md, "Why a runner stops").
REASON_IDLE = "idle-timeout"
REASON_MAKE_ROOM = "make-room"
REASON_DRAINED = "drained"
REASON_GPU_GONE = "gpu-gone"
REASON_GPU_UNHEALTHY = "gpu-unhealthy"
REASON_GPU_DRAINED = "gpu-drained"
REASON_GPU_MIG_MODE = "gpu-mig-mode"  # the whole GPU a runner holds was switched to MIG mode
REASON_UNRESPONSIVE = "unresponsive"  # idle, yet left a job it matches pending past pickup_timeout
REASON_NEVER_CONTACTED = "never-contacted"  # running past pickup_timeout, GitLab says it never asked for a job
REASON_OPERATOR = "operator"  # an operator drained it
# Removal, abort and kill reasons.
REASON_EXITED = "exited"
REASON_ORPHANED = "its GitLab registration is gone"
REASON_UNREGISTERED = "never registered and not running"
REASON_DRAIN_DEADLINE = "drain-timeout"
REASON_ABORT_DEADLINE = "force-timeout"
# Reaping decisions need fresh busy state: a quick pass makes none of them.
REAP_REASONS = frozenset({REASON_IDLE, REASON_MAKE_ROOM, REASON_UNRESPONSIVE})


@dataclass(frozen=True, slots=True)
class _Demand:
    """What serving one job tag set takes: the kind of runner, its tags and its candidates."""

    kind: RunnerKind
    arch: str
    runner_tags: tuple[str, ...]
    run_untagged: bool
    gpus: tuple[Gpu, ...] = ()  # usable candidate GPUs, smallest first


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


class _Classifier:
    """Maps a job tag set to a _Demand, or to the JobWait that explains why it cannot run."""

    def __init__(self, host: Host, policy: Policy) -> None:
        self.policy = policy
        self.profiles = host_profiles(host, policy)
        self.native = self.profiles[0]
        self.gpus = {g.id: g for g in host.gpus}
        self.split = split_gpus(host.gpus)
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
            return self._classify_gpu(tags, gpu_fits)
        return self._no_hardware(tags)

    def _classify_gpu(self, tags: frozenset[str], gpu_fits: list[Gpu]) -> _Demand | JobWait:
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
        return _Demand(RunnerKind.GPU, self.native.arch, tuple(sorted(tags)), False, tuple(usable))

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
    # GitLab's rule (matching.py): tags ⊆, run_untagged, and the job's reach.
    return tags_match(tags, runner_tags, runner.run_untagged) and reaches(runner.reach, (reach,) if reach else ())


def _reach(job: Job) -> str | None:
    # The adapter gives a job one reach at most (GitLabAdapter.reach_of).
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


_Key = tuple[frozenset[str], str | None]


def plan(host: Host, runners: Sequence[Runner], jobs: Sequence[Job], policy: Policy, now: datetime) -> Plan:
    """The capacity phase: which runners to start, drain and stop, and why each unserved job waits."""
    capacity_pass = _CapacityPass(host, policy, _as_utc(now))
    capacity_pass.sort_runners(runners, jobs)
    capacity_pass.serve_jobs(jobs)
    capacity_pass.make_room()
    capacity_pass.reap()
    capacity_pass.fill_warm_pool()
    return capacity_pass.result()


class _CapacityPass:
    """One capacity phase, in the order plan() calls its steps; each step reads what the last left."""

    def __init__(self, host: Host, policy: Policy, now: datetime) -> None:
        self.host, self.policy, self.now = host, policy, now
        self.classifier = _Classifier(host, policy)
        self.gpus = self.classifier.gpus
        self.capacity = capacity_of(host, (), policy)
        self.stops: list[StopRunner] = []
        self.drains: list[DrainRunner] = []
        self.idle: list[tuple[Runner, frozenset[str]]] = []
        self.claimed: set[str] = set()
        self.idle_by_tags: dict[_Key, list[Runner]] = {}
        self.cursor: dict[_Key, int] = {}
        self.starts: list[StartRunner] = []
        self.served: list[JobServed] = []
        self.waiting: list[JobWait] = []
        self.capacity_waits: list[_Demand] = []  # one entry per job that waits for capacity
        self.spare: list[Runner] = []
        self.spare_ids: set[str] = set()
        self.kept_warm = 0

    # --- step 1: every runner counts; busy ones are drained if they must go, idle ones may serve
    def sort_runners(self, runners: Sequence[Runner], jobs: Sequence[Job]) -> None:
        policy, now, classifier = self.policy, self.now, self.classifier
        overdue = _overdue_tag_sets(jobs, policy, now)
        for runner in sorted(runners, key=lambda r: r.id):
            self.capacity.add_runner(runner, self.host.arch)
            problem = _gpu_problem(runner, self.gpus, classifier.split)
            if runner.busy:
                if problem is not None and not runner.draining:
                    self.drains.append(DrainRunner.trusted(runner=runner.id, reason=problem))
            elif problem is not None:
                self.stops.append(StopRunner.trusted(runner=runner.id, reason=problem))
            elif runner.draining:
                self.stops.append(StopRunner.trusted(runner=runner.id, reason=REASON_DRAINED))
            elif overdue and _unresponsive(runner, overdue, policy, now):
                # Not capacity: a runner that does not ask GitLab for jobs serves nobody. Stopping it
                # lets a fresh one take the job (and frees the GPU or room it holds).
                self.stops.append(StopRunner.trusted(runner=runner.id, reason=REASON_UNRESPONSIVE))
            else:
                self.idle.append((runner, frozenset(runner.tags)))

    def _gpu_memory(self, runner: Runner) -> int:
        held = self.gpus.get(runner.gpu) if runner.gpu is not None else None
        return held.memory_mb if held is not None else 0

    def _idle_runner_for(self, tags: frozenset[str], reach: str | None) -> Runner | None:
        key = (tags, reach)
        candidates = self.idle_by_tags.get(key)
        if candidates is None:
            # Most specific runner first: keep versatile runners for jobs only they can take; among
            # equals the one on the smallest GPU, so big GPUs stay free for the jobs that need them.
            candidates = sorted(
                (r for r, rt in self.idle if _matches(tags, r, rt, reach)), key=lambda r: (len(r.tags), self._gpu_memory(r), r.id)
            )
            self.idle_by_tags[key] = candidates
        i = self.cursor.get(key, 0)
        claimed = self.claimed
        while i < len(candidates) and candidates[i].id in claimed:
            i += 1
        self.cursor[key] = i
        return candidates[i] if i < len(candidates) else None

    # --- step 2: jobs in fair order, each served by an idle runner or a start, else waiting
    def serve_jobs(self, jobs: Sequence[Job]) -> None:
        policy, capacity, waiting, claimed = self.policy, self.capacity, self.waiting, self.claimed
        paused = JobWait(job=0, reason=WaitReason.SCALING_PAUSED, detail="scaling is paused by an operator")
        # Remaining capacity only shrinks while jobs are visited, so once an architecture is blocked
        # it stays blocked for the rest of this pass: remember why instead of asking again per job.
        blocked: dict[str, JobWait] = {}
        # Likewise claims only grow: once a tag set has no idle runner left and its architecture is
        # blocked (or scaling is paused), or it cannot run here at all, every later job with those
        # tags waits alike. Settle it once: (why it waits, the demand it waits for capacity with).
        settled: dict[_Key, tuple[JobWait, _Demand | None]] = {}
        classify = self.classifier.classify
        n_idle = len(self.idle)
        for job in fair_order(jobs):
            tags = frozenset(job.tags)
            reach = _reach(job)
            known = settled.get((tags, reach))
            if known is not None:
                waiting.append(_job_wait(job.id, known[0]))
                if known[1] is not None:
                    self.capacity_waits.append(known[1])
                continue
            # An idle runner GitLab would give the job to serves it, whatever this host could start.
            taker = self._idle_runner_for(tags, reach) if len(claimed) < n_idle else None
            if taker is not None:
                claimed.add(taker.id)
                self.served.append(JobServed.trusted(job=job.id, runner=taker.id))
                continue
            demand = classify(tags)
            if isinstance(demand, JobWait):
                settled[(tags, reach)] = (demand, None)
                waiting.append(_job_wait(job.id, demand))
                continue
            if policy.paused:
                settled[(tags, reach)] = (paused, None)
                waiting.append(_job_wait(job.id, paused))
                continue
            why = blocked.get(demand.arch)
            if why is None and (blocker := capacity.blocker(demand.arch)) is not None:
                why = blocked[demand.arch] = JobWait(job=0, reason=WaitReason.WAITING_FOR_CAPACITY, detail=blocker)
            if why is not None:
                settled[(tags, reach)] = (why, demand)
            self._start_or_wait(job, demand, why, reach)

    def _start_or_wait(self, job: Job, demand: _Demand, why: JobWait | None, reach: str | None) -> None:
        gpu: Gpu | None = None
        if why is None and demand.kind is RunnerKind.GPU:
            gpu = next((g for g in demand.gpus if g.id not in self.capacity.taken_gpus), None)
            if gpu is None:
                # Not settled: the architecture may be blocked later, and that is then the reason.
                why = _ALL_GPUS_HELD
        if why is not None:
            self.waiting.append(_job_wait(job.id, why))
            self.capacity_waits.append(demand)
            return
        policy = self.policy
        self.capacity.add(demand.arch, policy.runner_cpus, policy.runner_memory_mb, gpu.id if gpu else None)
        self.served.append(JobServed.trusted(job=job.id, runner=f"start:{len(self.starts)}"))
        self.starts.append(_start(demand, gpu, [job.id], policy, reach))

    # --- step 3: idle runners that serve nothing make room for jobs that wait for capacity
    def make_room(self) -> None:
        """Stop now, start on the next pass once they are gone: caps hold at every instant. A demand
        no spare runner could make room for stays so as spare runners go (capacity does not change
        here): ask once per demand, not once per waiting job."""
        self.spare = [r for r, _ in self.idle if r.id not in self.claimed]
        spare_ids = self.spare_ids = {r.id for r in self.spare}
        hopeless: set[int] = set()
        for demand in self.capacity_waits:
            if not spare_ids:
                break
            if id(demand) in hopeless:
                continue
            victim = _room_maker(demand, self.spare, spare_ids, self.capacity, self.host)
            if victim is None:
                hopeless.add(id(demand))
            else:
                spare_ids.discard(victim.id)
                self.stops.append(StopRunner.trusted(runner=victim.id, reason=REASON_MAKE_ROOM))

    # --- step 4: reap idle runners past the timeout, keeping the warm pool (most recent first)
    def reap(self) -> None:
        now, policy = self.now, self.policy
        spare = [r for r in self.spare if r.id in self.spare_ids]
        spare.sort(key=lambda r: (r.idle_since is None, r.idle_since or now, r.id), reverse=True)
        for runner in spare:
            if runner.kind is RunnerKind.NATIVE and self.kept_warm < policy.warm_pool:
                self.kept_warm += 1
                continue
            if runner.idle_since is not None and (now - runner.idle_since).total_seconds() >= policy.idle_timeout:
                self.stops.append(StopRunner.trusted(runner=runner.id, reason=REASON_IDLE))

    # --- step 5: fill the warm pool, but never ahead of jobs that already wait for capacity
    def fill_warm_pool(self) -> None:
        policy = self.policy
        if policy.paused or self.capacity_waits:
            return
        native = self.classifier.classify(frozenset())
        assert not isinstance(native, JobWait)
        while self.kept_warm < policy.warm_pool and self.capacity.blocker(native.arch) is None:
            self.capacity.add(native.arch, policy.runner_cpus, policy.runner_memory_mb, None)
            self.starts.append(_start(native, None, [], policy))
            self.kept_warm += 1

    def result(self) -> Plan:
        self.stops.sort(key=lambda s: s.runner)
        return _plan(start=self.starts, stop=self.stops, drain=self.drains, served=self.served, waiting=self.waiting)


_PLAN_LISTS = tuple(Plan.model_fields)


def _plan(**lists: list[Any]) -> Plan:
    """Plan.trusted with every list present (those not given empty), as validation would make it."""
    return Plan.trusted(**{name: lists.get(name, []) for name in _PLAN_LISTS})


_ALL_GPUS_HELD = JobWait(
    job=0, reason=WaitReason.WAITING_FOR_CAPACITY, detail="every matching GPU is held by a runner (or its MIG parent or instance is)"
)


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
    demand: _Demand, spare: list[Runner], spare_ids: set[str], capacity: Capacity, host: Host
) -> Runner | None:
    """An idle, unneeded runner whose removal lifts what blocks `demand`, or None."""
    candidates = [r for r in spare if r.id in spare_ids]
    if demand.kind is RunnerKind.GPU and capacity.blocker(demand.arch) is None:
        wanted = {g.id for g in demand.gpus}
        candidates = [r for r in candidates if r.gpu in wanted]
    elif capacity.policy.max_per_arch.get(demand.arch) is not None and capacity.total < capacity.policy.max_runners:
        candidates = [r for r in candidates if runner_arch(r.platform, host.arch) == demand.arch]
    # Longest idle goes first.
    candidates.sort(key=lambda r: (r.idle_since is None, r.idle_since or datetime.max.replace(tzinfo=None), r.id))
    return candidates[0] if candidates else None


# --- decide: every decision of a pass, in named phases ---------------------------------------------


@dataclass(slots=True)
class _Lifecycle:
    """What the lifecycle phase leaves: removals, deadline actions and holds, and the runners that stay."""

    remove: list[RemoveRunner]
    abort: list[AbortRunner]
    kill: list[KillRunner]
    held: list[RunnerHold]
    staying: list[Runner]


def decide(observation: Observation) -> Plan:
    """Every decision of one reconcile pass, from one observation (the module docstring lists the phases)."""
    obs = observation
    now = _as_utc(obs.now)
    lifecycle = _lifecycle_phase(obs.runners, obs.lifecycle, now)
    runners, never_contacted, unknown = _busy_phase(lifecycle.staying, obs.queue, obs.policy, now)
    core = plan(obs.host, runners, obs.jobs, obs.policy, now)
    stops = _stop_reasons(core.stop, never_contacted, {r.id for r in runners if r.operator_drain})
    if not obs.queue.fresh:
        stops = [s for s in stops if s.reason not in REAP_REASONS]
    drains = core.drain + _operator_drains(runners)
    starts, served, waiting = _start_gate(core, obs.backoff, now)
    held = lifecycle.held + [RunnerHold.trusted(runner=r, reason="busy-unknown", detail=why, until=None) for r, why in sorted(unknown.items())]
    by_id = {r.id: r for r in runners}
    return _plan(
        start=starts,
        stop=stops,
        drain=drains,
        served=served,
        waiting=waiting,
        abort=lifecycle.abort,
        kill=lifecycle.kill,
        remove=lifecycle.remove,
        delete_registrations=_registration_phase(obs, now),
        pause=_pause_phase([*stops, *drains], by_id, obs.backoff, now),
        held=held,
    )


def _lifecycle_phase(runners: Sequence[Runner], times: Lifecycle, now: datetime) -> _Lifecycle:
    """Removals (exited, orphaned) and the stop deadlines: SIGQUIT → drain_timeout → abort →
    force_timeout + kill_grace → kill. A deadline not reached yet is a hold, never an action."""
    out = _Lifecycle([], [], [], [], [])
    for runner in sorted(runners, key=lambda r: r.id):
        gone = _removal(runner)
        if gone is not None:
            out.remove.append(RemoveRunner.trusted(runner=runner.id, reason=gone, gitlab_id=runner.gitlab_id))
            continue
        out.staying.append(runner)
        if runner.abort_requested_at is not None:
            deadline = _as_utc(runner.abort_requested_at) + timedelta(seconds=times.force_timeout + times.kill_grace)
            if now > deadline:
                out.kill.append(KillRunner.trusted(runner=runner.id, reason=f"did not abort within {times.force_timeout:g}s"))
            else:
                out.held.append(RunnerHold.trusted(runner=runner.id, reason="aborting", detail="", until=deadline))
        elif runner.stop_requested_at is not None:
            deadline = _as_utc(runner.stop_requested_at) + timedelta(seconds=times.drain_timeout)
            if now > deadline:
                out.abort.append(AbortRunner.trusted(runner=runner.id, reason=f"did not finish its job within {times.drain_timeout:g}s"))
            else:
                out.held.append(RunnerHold.trusted(runner=runner.id, reason="stopping", detail="", until=deadline))
    return out


def _removal(runner: Runner) -> str | None:
    """Why the runner is removed now, or None. An orphan is one whose registration GitLab answered
    404 for on two passes in a row (one listing that misses it proves nothing); a stopped one goes on
    the first such answer. A runner never recorded as registered goes only once it is not running."""
    if runner.status is RunnerStatus.EXITED:
        return REASON_EXITED
    running = runner.status is RunnerStatus.RUNNING
    if runner.gitlab_id is None:
        return None if running or runner.status is RunnerStatus.UNKNOWN else REASON_UNREGISTERED
    if runner.registration is None and (runner.missing_strikes >= 2 or (runner.missing_strikes >= 1 and not running)):
        return REASON_ORPHANED
    return None


def _busy_phase(
    runners: Sequence[Runner], queue: QueueRead, policy: Policy, now: datetime
) -> tuple[list[Runner], set[str], dict[str, str]]:
    """The runners as the capacity phase must count them: busy if GitLab or its own job workloads
    say so, or if the queue read missed a project it could run a job of (unknown is busy); taking
    no new job if leaving, drained by an operator, or never in contact with GitLab past
    pickup_timeout. Returns them, the never-contacted ones and the unknown ones (id → why)."""
    out: list[Runner] = []
    never: set[str] = set()
    unknown: dict[str, str] = {}
    for runner in runners:
        busy, evidence = runner.busy or runner.busy_by is BusyEvidence.UNKNOWN, runner.busy_by
        if not busy and (why := _unread_reach(runner, queue)) is not None:
            busy, evidence = True, BusyEvidence.UNKNOWN
            unknown[runner.id] = why
        leaving = runner.stop_requested_at is not None or runner.abort_requested_at is not None
        silent = not busy and not leaving and _never_contacted(runner, policy, now)
        if silent:
            never.add(runner.id)
        out.append(_as_counted(runner, busy or leaving, evidence, runner.draining or leaving or runner.operator_drain or silent))
    return out, never, unknown


def _unread_reach(runner: Runner, queue: QueueRead) -> str | None:
    """Why the runner may be running a job the queue read missed, or None."""
    if queue.complete:
        return None
    missed = [u for u in queue.unread if reaches(runner.reach, (u.reach,) if u.reach else ())]
    if not missed:
        return None
    projects = ", ".join(str(u.project_id) for u in missed)
    return f"the queue read missed project(s) {projects}: held until they read again (give the token access, or take them out of gitlab.scope)"


def _as_counted(runner: Runner, busy: bool, evidence: BusyEvidence | None, draining: bool) -> Runner:
    # A leaving runner is on its way out: counted busy (its capacity holds), never stopped twice.
    if busy == runner.busy and draining == runner.draining and evidence == runner.busy_by:
        return runner
    return runner.model_copy(update={"busy": busy, "draining": draining, "busy_by": evidence, "idle_since": None if busy else runner.idle_since})


def _never_contacted(runner: Runner, policy: Policy, now: datetime) -> bool:
    """Running past pickup_timeout while GitLab says its runner never asked for a job (a wrong URL,
    a CA it does not trust, a network it cannot leave): not capacity, and replaced."""
    reg = runner.registration
    if reg is None or not reg.never_contacted or runner.started_at is None:
        return False
    return (now - _as_utc(runner.started_at)).total_seconds() >= policy.pickup_timeout


def _stop_reasons(stops: list[StopRunner], never: set[str], operator: set[str]) -> list[StopRunner]:
    """The capacity phase says `drained` for every runner that takes no new job; say which kind."""
    out = []
    for stop in stops:
        if stop.reason == REASON_DRAINED and stop.runner in never:
            stop = StopRunner.trusted(runner=stop.runner, reason=REASON_NEVER_CONTACTED)
        elif stop.reason == REASON_DRAINED and stop.runner in operator:
            stop = StopRunner.trusted(runner=stop.runner, reason=REASON_OPERATOR)
        out.append(stop)
    return out


def _operator_drains(runners: Sequence[Runner]) -> list[DrainRunner]:
    """A busy runner an operator drained and not yet asked to stop: drained (its job finishes)."""
    return [
        DrainRunner.trusted(runner=r.id, reason=REASON_OPERATOR)
        for r in sorted(runners, key=lambda r: r.id)
        if r.operator_drain and r.busy and r.stop_requested_at is None and r.abort_requested_at is None
    ]


def _backing_off(backoff: Sequence[Backoff], action: str, target: str, now: datetime) -> Backoff | None:
    for entry in backoff:
        if entry.action == action and entry.target in (target, "*") and _as_utc(entry.until) > now:
            return entry
    return None


def _start_gate(core: Plan, backoff: Sequence[Backoff], now: datetime) -> tuple[list[StartRunner], list[JobServed], list[JobWait]]:
    """Starts of a kind whose last start failed wait for the backoff, their jobs saying why (the cause, one line)."""
    if not backoff:
        return core.start, core.served, core.waiting
    kept: list[StartRunner] = []
    index: dict[int, int] = {}  # old start index → new one
    stalled: dict[int, Backoff] = {}  # job → the backoff its start waits for
    for i, start in enumerate(core.start):
        blocked = _backing_off(backoff, "start", start.kind.value, now)
        if blocked is None:
            index[i] = len(kept)
            kept.append(start)
        else:
            stalled.update((job, blocked) for job in start.for_jobs)
    if not stalled and len(kept) == len(core.start):
        return core.start, core.served, core.waiting
    served: list[JobServed] = []
    waiting = list(core.waiting)
    for serve in core.served:
        if not serve.runner.startswith("start:"):
            served.append(serve)
        elif (new := index.get(int(serve.runner[6:]))) is not None:
            served.append(JobServed.trusted(job=serve.job, runner=f"start:{new}"))
        else:
            why = stalled[serve.job]
            # Not a new wait reason (the API's v1 enumerations are closed): capacity it cannot get yet, and why.
            detail = f"start backing off: the last start failed ({why.cause}); next try after {_as_utc(why.until).isoformat(timespec='seconds')}"
            waiting.append(JobWait.trusted(job=serve.job, reason=WaitReason.WAITING_FOR_CAPACITY, detail=detail, missing_tags=[]))
    return kept, served, waiting


def _registration_phase(obs: Observation, now: datetime) -> list[DeleteRegistration]:
    """This host's registrations with no runner (none listed, none being removed): deleted, unless
    the last delete was refused and its backoff runs."""
    runner_ids = {r.gitlab_id for r in obs.runners if r.gitlab_id is not None}
    out = []
    for reg in sorted(obs.registrations, key=lambda r: r.id):
        if reg.id in runner_ids or _backing_off(obs.backoff, "delete-registration", str(reg.id), now) is not None:
            continue
        out.append(DeleteRegistration.trusted(gitlab_id=reg.id, reason=f"registration {reg.id} ({reg.name}) has no runner"))
    return out


def _pause_phase(leaving: Sequence[StopRunner | DrainRunner], runners: dict[str, Runner], backoff: Sequence[Backoff], now: datetime) -> list[PauseRegistration]:
    """Pause in GitLab every registration about to be stopped or drained that is not paused yet, so no
    job lands on a runner that is leaving; not while a refusal's backoff runs (the stop goes on)."""
    if _backing_off(backoff, "pause", "*", now) is not None:
        return []
    out = []
    for action in leaving:
        runner = runners.get(action.runner)
        if runner is None or runner.gitlab_id is None or (runner.registration is not None and runner.registration.paused):
            continue
        out.append(PauseRegistration.trusted(runner=runner.id, gitlab_id=runner.gitlab_id))
    return out
