"""A naive reference planner: the obvious loop, written plainly, to check and time the real one.

For each job in fair order: scan the idle runners for one GitLab would give it to; else find the
runner kind that could carry its tags and start one if every cap allows. No caches, no indexes,
no early exits: every job rescans every runner and every GPU. It shares only the tag vocabulary
(autogit.agent.tags) with the real planner, not its code.

`compare(real, naive)` lists the differences where both are defined: which jobs are served and
by which idle runner, the runners started for jobs (kind, architecture, GPU, tags, job), and which
jobs wait with which reason. What the naive planner leaves out by design, and so is not compared:
stops (make-room, idle reaping, unresponsive runners), drains, warm-pool starts, and the human
detail of a wait. It counts a runner as idle capacity only when it is idle, not draining, and its
GPU (if any) is present, healthy, undrained and not split into MIG instances; so scenarios given to
both must keep idle runners younger than the policy's pickup timeout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from autogit.agent.model import Gpu, Host, Job, Plan, Policy, Runner, RunnerKind, WaitReason
from autogit.agent.tags import host_profiles

__all__ = ["NaivePlan", "NaiveStart", "compare", "naive_fair_order", "naive_plan"]


@dataclass(frozen=True)
class NaiveStart:
    kind: RunnerKind
    arch: str
    gpu: str | None
    tags: tuple[str, ...]
    job: int


@dataclass
class NaivePlan:
    served: dict[int, str] = field(default_factory=dict)  # job → idle runner id, or "start:N"
    start: list[NaiveStart] = field(default_factory=list)
    waiting: dict[int, WaitReason] = field(default_factory=dict)


def naive_fair_order(jobs: Sequence[Job]) -> list[Job]:
    """Each project's jobs oldest first (ties by id); then take one from each project in turn,
    projects in the order of the job they offer (oldest first, ties by id)."""
    queues: dict[int, list[Job]] = {}
    for job in jobs:
        queues.setdefault(job.project_id, []).append(job)
    for queue in queues.values():
        queue.sort(key=lambda j: (j.created_at, j.id))
    out: list[Job] = []
    depth = 0
    while True:
        this_round = [queue[depth] for queue in queues.values() if depth < len(queue)]
        if not this_round:
            return out
        this_round.sort(key=lambda j: (j.created_at, j.id))
        out.extend(this_round)
        depth += 1


def _arch(platform: str | None, host: Host) -> str:
    return platform.split("/", 1)[1] if platform and "/" in platform else host.arch


def _matches(job_tags: set[str], tags: Sequence[str], run_untagged: bool) -> bool:
    return job_tags <= set(tags) and (bool(job_tags) or run_untagged)


def _split(host: Host) -> set[str]:
    return {g.id for g in host.gpus if g.mig_mode} | {g.mig_parent for g in host.gpus if g.mig_parent}


def _usable_runner(runner: Runner, host: Host) -> bool:
    if runner.busy or runner.draining:
        return False
    if runner.gpu is None:
        return True
    gpu = next((g for g in host.gpus if g.id == runner.gpu), None)
    return gpu is not None and gpu.healthy and not gpu.drained and gpu.id not in _split(host)


def _gpu_free(gpu: Gpu, host: Host, held: list[str]) -> bool:
    if gpu.id in held:
        return False
    # Never together with its MIG parent, or with one of its instances.
    if gpu.mig_parent is not None and gpu.mig_parent in held:
        return False
    return not any(g.mig_parent == gpu.id and g.id in held for g in host.gpus)


def naive_plan(host: Host, runners: Sequence[Runner], jobs: Sequence[Job], policy: Policy, now: datetime) -> NaivePlan:
    del now  # the naive planner neither reaps nor judges responsiveness
    out = NaivePlan()
    profiles = host_profiles(host, policy)
    native = profiles[0]
    gpus_by_size = sorted(host.gpus, key=lambda g: (g.memory_mb, g.id))
    # Most specific idle runner first; among equals the one on the smallest GPU, then by id.
    def gpu_memory(r: Runner) -> int:
        return next((g.memory_mb for g in host.gpus if g.id == r.gpu), 0)

    idle = sorted((r for r in runners if _usable_runner(r, host)), key=lambda r: (len(r.tags), gpu_memory(r), r.id))
    claimed: set[str] = set()
    # What every runner takes, existing (stopping or not) and started: (arch, cpus, memory, gpu).
    held: list[tuple[str, float, int, str | None]] = [
        (
            _arch(r.platform, host),
            policy.runner_cpus if r.cpus is None else r.cpus,
            policy.runner_memory_mb if r.memory_mb is None else r.memory_mb,
            r.gpu,
        )
        for r in runners
    ]

    def caps_allow(arch: str) -> bool:
        if len(held) >= policy.max_runners:
            return False
        cap = policy.max_per_arch.get(arch)
        if cap is not None and sum(1 for a, _, _, _ in held if a == arch) >= cap:
            return False
        cpus = sum(c for _, c, _, _ in held)
        if policy.runner_cpus and cpus + policy.runner_cpus > host.cpus - policy.reserved_cpus + 1e-9:
            return False
        memory = sum(m for _, _, m, _ in held)
        return not (policy.runner_memory_mb and memory + policy.runner_memory_mb > host.memory_mb - policy.reserved_memory_mb)

    for job in naive_fair_order(jobs):
        tags = set(job.tags)
        runner = next((r for r in idle if r.id not in claimed and _matches(tags, r.tags, r.run_untagged)), None)
        if runner is not None:
            claimed.add(runner.id)
            out.served[job.id] = runner.id
            continue
        gpu: Gpu | None = None
        if tags <= native.tags:
            kind, arch, start_tags = RunnerKind.NATIVE, native.arch, tuple(sorted(native.tags))
        else:
            fitting = [p for p in profiles[1:] if tags <= p.tags]
            if not fitting:
                out.waiting[job.id] = WaitReason.NO_MATCHING_HARDWARE
                continue
            emulated = [p for p in fitting if p.kind is RunnerKind.EMULATED]
            if emulated and not policy.emulation:
                out.waiting[job.id] = WaitReason.EMULATION_DISABLED
                continue
            if emulated:
                kind, arch, start_tags = RunnerKind.EMULATED, emulated[0].arch, tuple(sorted(tags))
            else:
                if not policy.gpus:
                    out.waiting[job.id] = WaitReason.GPU_UNAVAILABLE
                    continue
                fits = {p.gpu for p in fitting}
                usable = [g for g in gpus_by_size if g.id in fits and g.healthy and not g.drained and g.id not in _split(host)]
                if not usable:
                    out.waiting[job.id] = WaitReason.GPU_UNAVAILABLE
                    continue
                kind, arch, start_tags = RunnerKind.GPU, native.arch, tuple(sorted(tags))
                taken = [h[3] for h in held if h[3] is not None]
                gpu = next((g for g in usable if _gpu_free(g, host, taken)), None)
        if policy.paused:
            out.waiting[job.id] = WaitReason.SCALING_PAUSED
            continue
        if not caps_allow(arch) or (kind is RunnerKind.GPU and gpu is None):
            out.waiting[job.id] = WaitReason.WAITING_FOR_CAPACITY
            continue
        held.append((arch, policy.runner_cpus, policy.runner_memory_mb, gpu.id if gpu else None))
        out.served[job.id] = f"start:{len(out.start)}"
        out.start.append(NaiveStart(kind, arch, gpu.id if gpu else None, start_tags, job.id))
    return out


def compare(real: Plan, naive: NaivePlan) -> list[str]:
    """The differences between the real plan and the naive one where both are defined (empty: equal)."""
    diffs: list[str] = []
    job_starts = [s for s in real.start if s.for_jobs]  # warm-pool starts are the real planner's own
    index = {i: n for n, i in enumerate(i for i, s in enumerate(real.start) if s.for_jobs)}
    real_served = {
        s.job: f"start:{index[int(s.runner.split(':')[1])]}" if s.runner.startswith("start:") else s.runner for s in real.served
    }
    if real_served != naive.served:
        wrong = sorted(j for j in real_served.keys() | naive.served.keys() if real_served.get(j) != naive.served.get(j))
        diffs.append(f"served differs for {len(wrong)} jobs, e.g. {[(j, real_served.get(j), naive.served.get(j)) for j in wrong[:3]]}")
    real_starts = [NaiveStart(s.kind, _arch(s.platform, Host(arch="?", cpus=1, memory_mb=1)), s.gpu, tuple(s.tags), s.for_jobs[0]) for s in job_starts]
    if real_starts != naive.start:
        diffs.append(f"starts differ: {len(real_starts)} real, {len(naive.start)} naive")
    real_waiting = {w.job: w.reason for w in real.waiting}
    if real_waiting != naive.waiting:
        wrong = sorted(j for j in real_waiting.keys() | naive.waiting.keys() if real_waiting.get(j) != naive.waiting.get(j))
        diffs.append(f"waiting differs for {len(wrong)} jobs, e.g. {[(j, real_waiting.get(j), naive.waiting.get(j)) for j in wrong[:3]]}")
    return diffs
