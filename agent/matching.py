"""GitLab's matching rules and this agent's capacity arithmetic, in one place.

The planner, the fleet and scenarios all ask these questions; each used to carry its own copy
(and the planner's and the fleet's already disagreed on job reach). Pure: no I/O, no clock.

GitLab's rules (app/models/ci/runner.rb `matches_build?`, app/services/ci/register_job_service.rb):
- a runner takes a job only if every job tag is one of its tags (tags ⊆);
- an untagged job only where the runner has `run_untagged`;
- a group runner only jobs of its group's projects, a project runner only its projects' jobs
  (the job's *reach*: where a runner must be registered to be given it), an instance runner any.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .model import Gpu, Host, Policy, Runner

__all__ = [
    "Capacity",
    "capacity_of",
    "mig_families",
    "reaches",
    "runner_arch",
    "serves",
    "split_gpus",
    "tags_match",
]


def tags_match(job_tags: frozenset[str], runner_tags: frozenset[str], run_untagged: bool) -> bool:
    """GitLab's tag rule: every job tag on the runner; an untagged job only on a run_untagged runner."""
    return job_tags <= runner_tags and (bool(job_tags) or run_untagged)


def reaches(runner_reach: str | None, job_reach: Sequence[str]) -> bool:
    """Whether a runner registered at `runner_reach` (None: instance-wide) is given jobs whose
    runners must be registered at one of `job_reach` (empty: anywhere)."""
    return runner_reach is None or not job_reach or runner_reach in job_reach


def serves(job_tags: frozenset[str], job_reach: Sequence[str], runner_tags: frozenset[str], run_untagged: bool, runner_reach: str | None) -> bool:
    """GitLab would give the job to the runner: its tags and its reach both match."""
    return tags_match(job_tags, runner_tags, run_untagged) and reaches(runner_reach, job_reach)


def runner_arch(platform: str | None, host_arch: str) -> str:
    """The architecture a runner's jobs run on: its platform's (linux/arm64 → arm64), else the host's."""
    if platform and "/" in platform:
        return platform.split("/", 1)[1]
    return host_arch


def split_gpus(gpus: Iterable[Gpu]) -> frozenset[str]:
    """GPUs that are never held whole: in MIG mode, or with MIG instances listed (ADR-006)."""
    gpus = list(gpus)
    return frozenset({g.id for g in gpus if g.mig_mode} | {g.mig_parent for g in gpus if g.mig_parent is not None})


def mig_families(gpus: Iterable[Gpu]) -> dict[str, frozenset[str]]:
    """GPU id → the ids it must never be held together with (its MIG parent or instances)."""
    family: dict[str, set[str]] = defaultdict(set)
    for gpu in gpus:
        if gpu.mig_parent is not None:
            family[gpu.id].add(gpu.mig_parent)
            family[gpu.mig_parent].add(gpu.id)
    return {gpu_id: frozenset(ids) for gpu_id, ids in family.items()}


@dataclass(slots=True)
class Capacity:
    """Running totals of what a host's runners take under its policy, checked before every start."""

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

    def add_runner(self, runner: Runner, host_arch: str) -> str:
        """Count an existing runner (its own reservation, else the policy's); returns its architecture."""
        policy = self.policy
        arch = runner_arch(runner.platform, host_arch)
        cpus = policy.runner_cpus if runner.cpus is None else runner.cpus
        memory = policy.runner_memory_mb if runner.memory_mb is None else runner.memory_mb
        self.add(arch, cpus, memory, runner.gpu)
        return arch

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

    def slots(self) -> int:
        """How many more runners of any architecture fit: max_runners, CPU and memory budgets."""
        policy = self.policy
        caps = [policy.max_runners - self.total]
        if policy.runner_cpus:
            caps.append(math.floor((self.cpu_budget - self.cpus) / policy.runner_cpus + 1e-9))
        if policy.runner_memory_mb:
            caps.append((self.memory_budget - self.memory_mb) // policy.runner_memory_mb)
        return max(0, min(caps))

    def arch_slots(self) -> dict[str, int]:
        """How many more runners each capped architecture takes (max_per_arch), before `slots`."""
        return {arch: max(0, cap - self.per_arch[arch]) for arch, cap in self.policy.max_per_arch.items()}


def capacity_of(host: Host, runners: Iterable[Runner], policy: Policy) -> Capacity:
    """The capacity a host's runners leave under the policy (what is kept back for the host itself aside)."""
    capacity = Capacity(
        policy,
        cpu_budget=max(0.0, host.cpus - policy.reserved_cpus),
        memory_budget=max(0, host.memory_mb - policy.reserved_memory_mb),
        mig_family=mig_families(host.gpus),
    )
    for runner in runners:
        capacity.add_runner(runner, host.arch)
    return capacity
