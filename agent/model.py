"""The shared vocabulary: hosts, GPUs, jobs, runners, policy and plans.

Every boundary (scenario files, the config, the socket API, the TUI) speaks these pydantic
models. The planner reads them and never mutates them: they are frozen.
"""

from __future__ import annotations

from datetime import datetime, UTC
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

__all__ = [
    "AbortRunner",
    "Backoff",
    "BusyEvidence",
    "DeleteRegistration",
    "Frozen",
    "HostRegistration",
    "KillRunner",
    "Lifecycle",
    "Observation",
    "PauseRegistration",
    "QueueRead",
    "RegistrationState",
    "RemoveRunner",
    "RunnerHold",
    "RunnerStatus",
    "UnreadProject",
    "GpuVendor",
    "Gpu",
    "Host",
    "Job",
    "Runner",
    "RunnerKind",
    "Policy",
    "StartRunner",
    "StopRunner",
    "DrainRunner",
    "JobWait",
    "JobServed",
    "WaitReason",
    "Plan",
    "Tag",
    "TagSet",
    "UtcDatetime",
]


def _check_tag(tag: str) -> str:
    # GitLab splits tag lists on commas and strips blanks; such a tag could never match.
    if not tag or tag != tag.strip() or "," in tag:
        raise ValueError(f"invalid tag {tag!r}: tags are non-empty, unpadded and comma-free")
    return tag


def _as_utc(moment: datetime) -> datetime:
    # GitLab sends UTC offsets; a naive time in a scenario means UTC. Mixing naive and aware
    # datetimes would make comparisons raise, so every boundary time becomes aware.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
Tag = Annotated[str, AfterValidator(_check_tag)]
# Tags are a set in GitLab's matching rule; keep them sorted so output is deterministic.
TagSet = Annotated[list[Tag], AfterValidator(lambda tags: sorted(set(tags)))]


class Frozen(BaseModel):
    """Base of every boundary model: immutable, and unknown fields are errors (a typo is loud)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def trusted(cls, **values: Any) -> Self:
        """Build from values the caller already knows are valid and complete, skipping
        validation. The planner makes ~10^4 of these per pass, and pydantic's model_construct
        costs about 3x this (it also fills defaults and handles aliases, which we never need)."""
        obj = cls.__new__(cls)
        _set = object.__setattr__
        _set(obj, "__dict__", values)
        _set(obj, "__pydantic_fields_set__", set(values))
        _set(obj, "__pydantic_extra__", None)
        _set(obj, "__pydantic_private__", None)
        return obj


class GpuVendor(StrEnum):
    NVIDIA = "nvidia"
    AMD = "amd"
    INTEL = "intel"


class Gpu(Frozen):
    """One schedulable GPU as the planner sees it: a whole GPU, or one MIG instance of an NVIDIA
    GPU in MIG mode (its id is then the instance's 'MIG-…' UUID). The inventory adds the live
    readings."""

    id: str = Field(description="Stable id: the NVIDIA UUID, else the PCI bus id.")
    vendor: GpuVendor
    model: str = Field(description="Marketing name, e.g. 'NVIDIA H100 80GB HBM3'.")
    memory_mb: NonNegativeInt = Field(description="Total device memory in MiB.")
    healthy: bool = True
    drained: bool = Field(False, description="Set by an operator or on loss: never scheduled.")
    pci_bus_id: str | None = Field(None, description="Normalised sysfs form, e.g. '0000:01:00.0'.")
    render_node: str | None = Field(None, description="e.g. '/dev/dri/renderD128' (AMD, Intel).")
    driver_version: str | None = None
    integrated: bool = Field(False, description="Intel integrated graphics (shares host memory).")
    tags: TagSet = Field(default_factory=list, description="Extra tags beyond the derived ones.")
    compute_capability: str | None = Field(
        None, description="NVIDIA CUDA compute capability 'major.minor', e.g. '9.0'; None: unknown or not NVIDIA."
    )
    gfx_target: str | None = Field(None, description="AMD ISA target from the KFD topology, e.g. 'gfx90a'.")
    mig_mode: bool = Field(
        False, description="NVIDIA MIG mode is on: the GPU runs jobs only through its MIG instances, never whole."
    )
    mig_parent: str | None = Field(
        None, description="Set on a MIG instance: the id (UUID) of the whole GPU it is a slice of."
    )
    mig_profile: str | None = Field(None, description="A MIG instance's profile, e.g. '1g.10gb'.")


class Host(Frozen):
    hostname: str = "localhost"
    arch: str = Field(description="Docker platform architecture: amd64, arm64, riscv64, arm/v7.")
    emulated: list[str] = Field(
        default_factory=list,
        description="Foreign architectures runnable here through QEMU binfmt_misc with the F flag.",
    )
    cpus: PositiveInt
    memory_mb: PositiveInt
    gpus: list[Gpu] = Field(default_factory=list)


class Job(Frozen):
    """A pending GitLab CI job, with GitLab's own field meanings."""

    id: int
    project_id: int
    tags: TagSet = Field(default_factory=list, description="GitLab's tag_list.")
    created_at: UtcDatetime
    name: str | None = None
    web_url: str | None = Field(None, description="The job's GitLab page, where GitLab's answer gave it; None: not known.")
    queued_at: UtcDatetime | None = Field(
        None,
        description="When it entered the queue (GitLab's queued_at: later than created_at when its pipeline waited "
        "for earlier stages); None: created_at.",
    )
    reach: list[str] = Field(
        default_factory=list,
        description="Where a runner must be registered to be given this job: `group:<id>` or `project:<id>`; empty: anywhere.",
    )


class RunnerKind(StrEnum):
    NATIVE = "native"  # ordinary jobs of this host's own architecture; takes untagged jobs
    EMULATED = "emulated"  # a foreign architecture through QEMU; only jobs that ask for it
    GPU = "gpu"  # holds one GPU exclusively; only jobs that ask for a GPU


class RunnerStatus(StrEnum):
    """A runner instance's observed state, in words every runtime maps to (ADR-010)."""

    CREATING = "creating"  # created, not yet running (image pull, scheduling, restarting)
    RUNNING = "running"  # its gitlab-runner process runs
    EXITED = "exited"  # it ended (a one-job runner that finished, a crash, a kill): removed next
    GONE = "gone"  # being deleted by the runtime itself
    UNKNOWN = "unknown"  # the runtime reports a state this agent does not know: never read as exited


class BusyEvidence(StrEnum):
    """How a runner's busy state is known this pass."""

    GITLAB = "gitlab"  # GitLab's jobs listing shows a job running on it
    LOCAL = "local"  # it owns job workloads now (job containers): busy, whatever GitLab's listing says
    UNKNOWN = "unknown"  # the queue read missed a project it could run jobs of: treated as busy


class RegistrationState(Frozen):
    """A runner's GitLab registration as GitLab's runner listing shows it."""

    id: int
    paused: bool = False
    online: bool | None = Field(None, description="GitLab's `online`: contacted within its online window; None: not said.")
    contacted_at: UtcDatetime | None = Field(None, description="GitLab's contacted_at; None: not read (the list entity lacks it) or never.")
    status: str | None = Field(
        None, description="GitLab's REST status (deprecated_rest_status): online, offline, stale, never_contacted, paused."
    )

    @property
    def never_contacted(self) -> bool:
        return self.status == "never_contacted"


class Runner(Frozen):
    """A runner this host has (starting, idle or busy), as observed."""

    id: str
    tags: TagSet = Field(default_factory=list)
    run_untagged: bool = False
    kind: RunnerKind = RunnerKind.NATIVE
    platform: str | None = Field(None, description="Platform its jobs run on, e.g. 'linux/arm64'.")
    gpu: str | None = Field(None, description="Id of the GPU it holds exclusively.")
    reach: str | None = Field(None, description="Where it is registered (`group:<id>`, `project:<id>`); None: instance-wide.")
    busy: bool = False
    idle_since: UtcDatetime | None = Field(None, description="When it last became idle; None: unknown.")
    draining: bool = Field(False, description="Takes no new job; removed once idle.")
    cpus: NonNegativeFloat | None = Field(None, description="Reserved CPUs; None: the policy's.")
    memory_mb: NonNegativeInt | None = Field(None, description="Reserved MiB; None: the policy's.")
    # What the runtime and GitLab show of it (the lifecycle decisions read these; a scenario may omit them).
    busy_by: BusyEvidence | None = Field(None, description="How `busy` is known; None: as `busy` says (GitLab's listing).")
    status: RunnerStatus = Field(RunnerStatus.RUNNING, description="The runtime's observed state.")
    status_since: UtcDatetime | None = None
    started_at: UtcDatetime | None = Field(None, description="When its runner process started; None: unknown.")
    stop_requested_at: UtcDatetime | None = Field(None, description="When a graceful stop was asked for; it is then leaving.")
    abort_requested_at: UtcDatetime | None = Field(None, description="When the forceful stop (abort) was sent.")
    gitlab_id: int | None = Field(None, description="Its registration id; None: not recorded.")
    registration: RegistrationState | None = Field(None, description="Its registration in GitLab's listing; None: not listed.")
    missing_strikes: NonNegativeInt = Field(0, description="Passes in a row GitLab answered 404 for its registration.")
    operator_drain: bool = Field(False, description="An operator asked to drain it.")


class Policy(Frozen):
    """The scaling policy: the config's `scaling` section, and a scenario's `policy`."""

    max_runners: NonNegativeInt = Field(8, description="Most runners on this host at once.")
    max_per_arch: dict[str, NonNegativeInt] = Field(
        default_factory=dict,
        description="Most runners per job architecture, e.g. {arm64: 2}; absent: no extra cap.",
    )
    idle_timeout: NonNegativeFloat = Field(
        600, description="Seconds an idle runner is kept before it is reaped."
    )
    warm_pool: NonNegativeInt = Field(
        0, description="Idle native runners kept ready beyond the demand (never reaped)."
    )
    emulation: bool = Field(True, description="Serve foreign-architecture jobs through QEMU.")
    runner_cpus: NonNegativeFloat = Field(1.0, description="CPUs reserved per runner.")
    runner_memory_mb: NonNegativeInt = Field(2048, description="Memory (MiB) reserved per runner.")
    reserved_cpus: NonNegativeFloat = Field(0.5, description="CPUs kept back for the host itself.")
    reserved_memory_mb: NonNegativeInt = Field(
        1024, description="Memory (MiB) kept back for the host itself."
    )
    extra_tags: TagSet = Field(
        default_factory=list, description="Tags every runner of this host also carries."
    )
    gpus: bool = Field(True, description="Serve GPU jobs with exclusive GPU runners.")
    paused: bool = Field(False, description="Operator pause: start nothing, reap as usual.")
    pickup_timeout: PositiveFloat = Field(
        120,
        description="Seconds an idle runner may leave a job it matches pending before it is taken for "
        "unresponsive (e.g. gitlab-runner pausing after job requests answered 403): it is then not counted as "
        "capacity and is stopped, so a fresh runner takes the job.",
    )


class StartRunner(Frozen):
    reach: str | None = Field(None, description="Where to register it (`group:<id>`, `project:<id>`); None: the scope's default.")
    kind: RunnerKind
    tags: TagSet
    run_untagged: bool
    platform: str
    gpu: str | None = None
    for_jobs: list[int] = Field(default_factory=list, description="Jobs it is started for.")
    cpus: NonNegativeFloat
    memory_mb: NonNegativeInt


class StopRunner(Frozen):
    runner: str
    reason: str


class DrainRunner(Frozen):
    runner: str
    reason: str


class AbortRunner(Frozen):
    runner: str
    reason: str


class KillRunner(Frozen):
    runner: str
    reason: str


class RemoveRunner(Frozen):
    """Remove the runner with what its jobs left, then delete its registration (with its own token)."""

    runner: str
    reason: str
    gitlab_id: int | None = None


class DeleteRegistration(Frozen):
    gitlab_id: int
    reason: str


class PauseRegistration(Frozen):
    """paused=true in GitLab before a graceful stop, so no job lands on a runner that is leaving."""

    runner: str
    gitlab_id: int


class RunnerHold(Frozen):
    """Why a runner the plan would otherwise stop, abort or kill is left as it is this pass."""

    runner: str
    reason: str = Field(description="stopping (drain deadline runs), aborting (kill deadline runs), busy-unknown.")
    detail: str = ""
    until: UtcDatetime | None = Field(None, description="When the hold ends by itself (a deadline); None: when the cause goes.")


class WaitReason(StrEnum):
    NO_MATCHING_HARDWARE = "no-matching-hardware"
    EMULATION_DISABLED = "emulation-disabled"
    GPU_UNAVAILABLE = "gpu-unavailable"
    WAITING_FOR_CAPACITY = "waiting-for-capacity"
    SCALING_PAUSED = "scaling-paused"


class JobWait(Frozen):
    job: int
    reason: WaitReason
    detail: str = ""
    missing_tags: list[str] = Field(
        default_factory=list, description="Tags no runner of this host could ever carry."
    )


class JobServed(Frozen):
    job: int
    runner: str = Field(description="An idle runner's id, or 'start:N' for the N-th start.")


class Plan(Frozen):
    """The planner's decisions for one observation."""

    start: list[StartRunner] = Field(default_factory=list)
    stop: list[StopRunner] = Field(default_factory=list)
    drain: list[DrainRunner] = Field(default_factory=list)
    served: list[JobServed] = Field(default_factory=list)
    waiting: list[JobWait] = Field(default_factory=list)
    abort: list[AbortRunner] = Field(default_factory=list)
    kill: list[KillRunner] = Field(default_factory=list)
    remove: list[RemoveRunner] = Field(default_factory=list)
    delete_registrations: list[DeleteRegistration] = Field(default_factory=list)
    pause: list[PauseRegistration] = Field(default_factory=list)
    held: list[RunnerHold] = Field(default_factory=list)


class UnreadProject(Frozen):
    """A project the queue read could not list this pass (403, 404, timeout)."""

    project_id: int
    reach: str | None = Field(None, description="Where its runners are registered (`group:<id>`, `project:<id>`); None: anywhere.")
    error: str = ""


class QueueRead(Frozen):
    """How complete the pending/running listing behind `jobs` and `busy` is."""

    complete: bool = True
    unread: list[UnreadProject] = Field(default_factory=list)
    fresh: bool = Field(True, description="Read this pass; False: a quick pass on the last full poll's busy state.")


class HostRegistration(Frozen):
    """A registration of this host's runners that GitLab lists (`autogit:<host>:<name>`)."""

    id: int
    name: str
    registration: RegistrationState | None = None


class Lifecycle(Frozen):
    """The stop deadlines (the config's runner section)."""

    drain_timeout: PositiveFloat = Field(3600, description="Graceful stop (drain) → abort after this many seconds.")
    force_timeout: PositiveFloat = Field(30, description="The runner's own forceful shutdown timeout.")
    kill_grace: NonNegativeFloat = Field(10, description="Past force_timeout, before the kill.")


class Backoff(Frozen):
    """An (action, object) the agent retries only after `until`, and why (agent/backoff.py)."""

    action: str
    target: str
    until: UtcDatetime
    cause: str


class Observation(Frozen):
    """Everything the planner decides from: one pass's view of the host, its runners, GitLab and the agent's backoffs."""

    host: Host
    runners: list[Runner] = Field(default_factory=list)
    jobs: list[Job] = Field(default_factory=list)
    policy: Policy = Field(default_factory=Policy)
    now: UtcDatetime
    queue: QueueRead = Field(default_factory=QueueRead)
    registrations: list[HostRegistration] = Field(
        default_factory=list, description="This host's registrations GitLab lists; None of them without a runner survives the pass."
    )
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)
    backoff: list[Backoff] = Field(default_factory=list)
