"""The socket API's wire schema (v1), shared by the server, the client, the CLI and the TUI.

Every response body is one of these models; the OpenAPI document is generated from their JSON
schemas, so the docs, the server and the TUI cannot drift apart. The TUI imports this module and
`client.py` only, never agent internals.

Compatibility rule for v1: fields may be added at any depth, never renamed, removed or given
another meaning; a new value of an enumeration (phase, vendor, kind, wait reason, job status,
error type) is a change of meaning too, so it needs a new API version. Every response model
here, nested ones included, ignores fields it does not know (extra="ignore"), so an older
client keeps working against a newer agent. That is why the objects the wire carries (Gpu,
Host, Job, Runner, Plan, Event, ...) are their own models here, mirroring the agent's internal
ones field for field (a unit test holds them equal): the internal models stay strict
(extra="forbid": a typo in a scenario or a config is loud). Request bodies are strict too: a typo
in an action body is an error, not a silent no-op.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..model import BusyEvidence, GpuVendor, RunnerKind, RunnerStatus, WaitReason
from ..state import AgentPhase, LeaderRole

__all__ = [
    "API_VERSION",
    "ActionRequest",
    "ActionResponse",
    "AgentPhase",
    "ClusterNode",
    "ClusterPod",
    "ClusterReport",
    "ComponentHealth",
    "ConfigReport",
    "Counts",
    "AbortRunner",
    "BusyEvidence",
    "DeleteRegistration",
    "DrainRunner",
    "KillRunner",
    "PauseRegistration",
    "RegistrationState",
    "RemoveRunner",
    "RunnerHold",
    "RunnerStatus",
    "ErrorBody",
    "ErrorResponse",
    "ErrorType",
    "Event",
    "FleetHost",
    "FleetResponse",
    "FleetRunner",
    "Gpu",
    "GpuReading",
    "GpuVendor",
    "GpuView",
    "GpusResponse",
    "Host",
    "LeaderRole",
    "Leadership",
    "Job",
    "JobStatus",
    "JobView",
    "JobServed",
    "JobWait",
    "JobsResponse",
    "QueueTime",
    "Plan",
    "PlanResponse",
    "Runner",
    "RunnerKind",
    "RunnerView",
    "RunnersResponse",
    "StartRunner",
    "StatusResponse",
    "StopRunner",
    "WaitReason",
    "Wire",
    "WIRE_MIRRORS",
    "RESPONSE_MODELS",
]

API_VERSION: Literal["v1"] = "v1"


class Wire(BaseModel):
    """Base of every response model, nested ones included: immutable; unknown fields are ignored
    so an older client keeps working against a newer agent that added fields. `from_attributes`
    lets the server build one from the agent's internal model of the same shape."""

    model_config = ConfigDict(frozen=True, extra="ignore", from_attributes=True)


# --- the agent's vocabulary as the wire carries it (mirrors of agent.model / state / events) ---


class Gpu(Wire):
    """One schedulable GPU: a whole GPU, or one MIG instance of an NVIDIA GPU in MIG mode (its id
    is then the instance's 'MIG-…' UUID)."""

    id: str = Field(description="Stable id: the NVIDIA UUID, else the PCI bus id.")
    vendor: GpuVendor
    model: str = Field(description="Marketing name, e.g. 'NVIDIA H100 80GB HBM3'.")
    memory_mb: int = Field(description="Total device memory in MiB.")
    healthy: bool = True
    drained: bool = Field(False, description="Set by an operator or on loss: never scheduled.")
    pci_bus_id: str | None = Field(None, description="Normalised sysfs form, e.g. '0000:01:00.0'.")
    render_node: str | None = Field(None, description="e.g. '/dev/dri/renderD128' (AMD, Intel).")
    driver_version: str | None = None
    integrated: bool = Field(False, description="Intel integrated graphics (shares host memory).")
    tags: list[str] = Field(default_factory=list, description="Extra tags beyond the derived ones.")
    compute_capability: str | None = Field(None, description="NVIDIA CUDA compute capability 'major.minor', e.g. '9.0'; None: unknown or not NVIDIA.")
    gfx_target: str | None = Field(None, description="AMD ISA target from the KFD topology, e.g. 'gfx90a'.")
    mig_mode: bool = Field(False, description="NVIDIA MIG mode is on: the GPU runs jobs only through its MIG instances, never whole.")
    mig_parent: str | None = Field(None, description="Set on a MIG instance: the id (UUID) of the whole GPU it is a slice of.")
    mig_profile: str | None = Field(None, description="A MIG instance's profile, e.g. '1g.10gb'.")


class Host(Wire):
    hostname: str = "localhost"
    arch: str = Field(description="Docker platform architecture: amd64, arm64, riscv64, arm/v7.")
    emulated: list[str] = Field(
        default_factory=list,
        description="Foreign architectures runnable here through QEMU binfmt_misc with the F flag.",
    )
    cpus: int
    memory_mb: int
    gpus: list[Gpu] = Field(default_factory=list)


class Job(Wire):
    """A pending GitLab CI job, with GitLab's own field meanings."""

    id: int
    project_id: int
    tags: list[str] = Field(default_factory=list, description="GitLab's tag_list.")
    created_at: datetime
    name: str | None = None
    web_url: str | None = Field(None, description="The job's GitLab page, where GitLab's answer gave it; None: not known.")
    queued_at: datetime | None = Field(
        None,
        description="When it entered the queue (GitLab's queued_at: later than created_at when its pipeline waited "
        "for earlier stages); None: created_at.",
    )
    reach: list[str] = Field(
        default_factory=list,
        description="Where a runner must be registered to be given this job: `group:<id>` or `project:<id>`; empty: anywhere.",
    )


class RegistrationState(Wire):
    """A runner's GitLab registration as GitLab's runner listing shows it."""

    id: int
    paused: bool = False
    online: bool | None = Field(None, description="GitLab's `online`: contacted within its online window; None: not said.")
    contacted_at: datetime | None = Field(None, description="GitLab's contacted_at; None: not read or never.")
    status: str | None = Field(None, description="GitLab's REST status: online, offline, stale, never_contacted, paused.")


class Runner(Wire):
    """A runner this host has (starting, idle or busy), as observed."""

    id: str
    tags: list[str] = Field(default_factory=list)
    run_untagged: bool = False
    kind: RunnerKind = RunnerKind.NATIVE
    platform: str | None = Field(None, description="Platform its jobs run on, e.g. 'linux/arm64'.")
    gpu: str | None = Field(None, description="Id of the GPU it holds exclusively.")
    reach: str | None = Field(None, description="Where it is registered (`group:<id>`, `project:<id>`); None: instance-wide.")
    busy: bool = False
    idle_since: datetime | None = Field(None, description="When it last became idle; None: unknown.")
    draining: bool = Field(False, description="Takes no new job; removed once idle.")
    cpus: float | None = Field(None, description="Reserved CPUs; None: the policy's.")
    memory_mb: int | None = Field(None, description="Reserved MiB; None: the policy's.")
    busy_by: BusyEvidence | None = Field(None, description="How `busy` is known; None: as `busy` says (GitLab's listing).")
    status: RunnerStatus = Field(RunnerStatus.RUNNING, description="The runtime's observed state.")
    status_since: datetime | None = None
    started_at: datetime | None = Field(None, description="When its runner process started; None: unknown.")
    stop_requested_at: datetime | None = Field(None, description="When a graceful stop was asked for; it is then leaving.")
    abort_requested_at: datetime | None = Field(None, description="When the forceful stop (abort) was sent.")
    gitlab_id: int | None = Field(None, description="Its registration id; None: not recorded.")
    registration: RegistrationState | None = Field(None, description="Its registration in GitLab's listing; None: not listed.")
    missing_strikes: int = Field(0, description="Passes in a row GitLab answered 404 for its registration.")
    operator_drain: bool = Field(False, description="An operator asked to drain it.")


class StartRunner(Wire):
    reach: str | None = Field(None, description="Where to register it (`group:<id>`, `project:<id>`); None: the scope's default.")
    kind: RunnerKind
    tags: list[str]
    run_untagged: bool
    platform: str
    gpu: str | None = None
    for_jobs: list[int] = Field(default_factory=list, description="Jobs it is started for.")
    cpus: float
    memory_mb: int


class StopRunner(Wire):
    runner: str
    reason: str


class DrainRunner(Wire):
    runner: str
    reason: str


class AbortRunner(Wire):
    runner: str
    reason: str


class KillRunner(Wire):
    runner: str
    reason: str


class RemoveRunner(Wire):
    """Remove the runner with what its jobs left, then delete its registration."""

    runner: str
    reason: str
    gitlab_id: int | None = None


class DeleteRegistration(Wire):
    gitlab_id: int
    reason: str


class PauseRegistration(Wire):
    """paused=true in GitLab before a graceful stop."""

    runner: str
    gitlab_id: int


class RunnerHold(Wire):
    """Why a runner is left as it is this pass (a deadline runs, or its busy state is unknown)."""

    runner: str
    reason: str = Field(description="stopping (drain deadline runs), aborting (kill deadline runs), busy-unknown.")
    detail: str = ""
    until: datetime | None = Field(None, description="When the hold ends by itself (a deadline); None: when the cause goes.")


class JobWait(Wire):
    job: int
    reason: WaitReason
    detail: str = ""
    missing_tags: list[str] = Field(default_factory=list, description="Tags no runner of this host could ever carry.")


class JobServed(Wire):
    job: int
    runner: str = Field(description="An idle runner's id, or 'start:N' for the N-th start.")


class Plan(Wire):
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


class ComponentHealth(Wire):
    ok: bool | None = Field(None, description="None: not checked yet or not configured.")
    error: str | None = None
    since: datetime | None = Field(None, description="When it last changed between ok and failing.")
    errors_total: int = 0
    problems: list[str] = Field(
        default_factory=list,
        description="What it refuses while it answers (a missing scope or role, a project it hides): one line each; "
        "the rest of the work goes on.",
    )


class ConfigReport(Wire):
    """What the config file last did to the running agent (set at start and by each reload)."""

    loaded_at: datetime = Field(description="When the running config was last read (start or reload).")
    reloads: int = Field(0, description="Reloads applied since the start.")
    applied: list[str] = Field(default_factory=list, description="Keys the last reload changed and applied (dotted, e.g. gitlab.url).")
    restart_needed: list[str] = Field(
        default_factory=list, description="Keys whose file value differs from the running one and that only a restart applies."
    )


class Leadership(Wire):
    """This replica's role in the leader election (ADR-014)."""

    role: LeaderRole = LeaderRole.NOT_ELECTING
    identity: str | None = Field(None, description="This replica's name in the Lease.")
    holder: str | None = Field(None, description="Who holds the Lease as this replica last read it; None: nobody, or not read yet.")
    since: datetime | None = Field(None, description="When this replica took its current role.")
    lease: str | None = Field(None, description="namespace/name of the Lease.")


class ClusterNode(Wire):
    """One node of the cluster as the agent plans for it (runner.runtime: kubernetes, ADR-016)."""

    name: str
    arch: str | None = Field(None, description="kubernetes.io/arch; None: the node does not say.")
    ready: bool = Field(description="Ready and not cordoned: the planner counts its room.")
    gpu_product: str | None = Field(None, description="The GPU model its labels name (GFD, AMD or Intel labeller); None: no GPU or not labelled.")
    gpu_resources: list[str] = Field(default_factory=list, description="Its GPU extended resources, e.g. nvidia.com/gpu, nvidia.com/mig-1g.10gb.")
    gpus_allocatable: int = Field(0, description="GPU units allocatable (all its GPU resources).")
    gpus_used: int = Field(0, description="GPU units its pods that have not ended request.")
    gpus_free: int = Field(0, description="Allocatable minus used.")
    tags: list[str] = Field(default_factory=list, description="The job tags it can serve (its own and its GPUs').")
    problems: list[str] = Field(default_factory=list, description="Labels or quantities that could not be read, one line each.")


class ClusterPod(Wire):
    """One pod of a runner of this agent: its manager pod, or a job pod it made."""

    runner: str
    pod: str
    role: str = Field(description="manager | job")
    phase: str | None = Field(None, description="The pod's phase (Pending, Running, ...); None: not reported yet.")
    node: str | None = Field(None, description="The node it is bound to; None: not scheduled yet.")


class ClusterReport(Wire):
    """The cluster's nodes and this agent's pods, from the watch-based inventory (ADR-016)."""

    known: bool = Field(description="False before the first list, or while listing and watching fail past runner.kubernetes.inventory_stale_after.")
    unknown_reason: str | None = Field(None, description="Why the inventory is unknown (then nothing is planned).")
    node_selector: str = Field("", description="runner.kubernetes.node_selector: the nodes planned for ('' every node).")
    nodes: list[ClusterNode] = Field(default_factory=list)
    runner_pods: list[ClusterPod] = Field(default_factory=list)
    api_requests: dict[str, int] = Field(default_factory=dict, description="API requests of the inventory since start, by verb and path.")
    problems: list[str] = Field(default_factory=list, description="Objects the inventory could not read (left out, one line each).")


class GpuReading(Wire):
    """Live readings of one GPU; None where the backend cannot tell ('unknown' is not zero)."""

    utilization_pct: float | None = None
    memory_used_mb: int | None = None
    temperature_c: float | None = None
    power_w: float | None = None


class RunnerView(Wire):
    """A runner as the agent sees it: the planner's Runner plus its container's facts."""

    runner: Runner
    container: str | None = Field(None, description="Container name.")
    gitlab_id: int | None = Field(None, description="GitLab's runner id.")
    state: str = Field("starting", description="starting | idle | busy | draining | stopping")
    job: int | None = Field(None, description="The job it is running.")
    started_at: datetime | None = None


class Event(Wire):
    seq: int = Field(description="Monotonic sequence number, from 1; use it with ?since=.")
    time: datetime
    type: str = Field(description="Dotted kind, e.g. 'runner.started', 'gpu.removed'.")
    message: str = Field(description="One human line.")
    data: dict[str, Any] = Field(default_factory=dict)


# --- response bodies ---


class Counts(Wire):
    runners: dict[str, int] = Field(
        default_factory=dict, description="Runners by state (starting, idle, busy, draining, stopping)."
    )
    runners_total: int = 0
    pending_jobs: int = Field(0, description="Pending GitLab jobs this host could be asked to serve.")
    waiting_jobs: int = Field(0, description="Pending jobs the latest plan could not serve, with a reason.")
    gpus: int = 0
    gpus_busy: int = Field(0, description="GPUs held by a runner.")
    gpus_drained: int = Field(0, description="GPUs drained by an operator or on loss.")
    gpus_unhealthy: int = 0
    oldest_wait_s: float | None = Field(
        None, description="Seconds the oldest pending job of GitLab's queue (the configured scope: the whole fleet's) has waited; "
        "None: not known yet (or an older agent).",
    )


class StatusResponse(Wire):
    api_version: Literal["v1"] = API_VERSION
    hostname: str
    host: Host | None = Field(None, description="None until the first inventory pass.")
    phase: AgentPhase
    gitlab: ComponentHealth
    docker: ComponentHealth
    counts: Counts
    paused: bool = Field(description="Operator pause: nothing new is started.")
    started_at: datetime
    last_reconcile: datetime | None = Field(None, description="When the latest plan was made.")
    reconcile_count: int = 0
    last_event_seq: int = Field(0, description="Sequence number of the newest event (for ?since=).")
    access: Literal["read", "admin"] | None = Field(None, description="What the caller may do: read, or act (admin).")
    config: ConfigReport | None = Field(None, description="The running config: when read, what the last reload applied, what waits for a restart.")
    leadership: Leadership | None = Field(
        None, description="leader (acts), follower (observes only) or not electing (leader_election off: always acts), and who holds the Lease."
    )
    cluster: ClusterReport | None = Field(
        None, description="runner.runtime kubernetes: the cluster's nodes (GPUs allocatable, used, free), this agent's runner pods, "
        "and whether the inventory is known; None on a host (or from an older agent)."
    )


class GpuView(Wire):
    gpu: Gpu = Field(description="The GPU, with operator drains applied to `drained`.")
    reading: GpuReading | None = Field(None, description="Latest live readings; None: none yet.")
    held_by_runner: str | None = Field(None, description="Id of the runner holding it exclusively.")
    held_by_job: int | None = Field(None, description="The job that runner is running.")
    operator_drained: bool = Field(False, description="Drained through the API (undrain reverses it).")


class GpusResponse(Wire):
    gpus: list[GpuView]


class RunnersResponse(Wire):
    runners: list[RunnerView]


class JobStatus(StrEnum):
    RUNNING = "running"  # a runner of this host reports it as its job
    SERVED = "served"  # the latest plan gives it to an idle runner or a runner being started
    WAITING = "waiting"  # the latest plan could not serve it; see `wait`
    UNPLANNED = "unplanned"  # seen after the latest plan was made


class JobView(Wire):
    job: Job
    status: JobStatus
    runner: str | None = Field(None, description="The serving runner's id, or 'start:N' for a runner being started.")
    wait: JobWait | None = Field(None, description="Why it waits (the planner's reason), when status is 'waiting'.")


class QueueTime(Wire):
    """One tag set's queue time over the last hour (mirror of agent.queuetimes.QueueTimeStats)."""

    tags: str = Field(description="The tag set: sorted tags joined by ',' ('' = untagged).")
    jobs: int = Field(description="Jobs of this host's runners that started within the hour.")
    p50_s: float = Field(description="Median seconds from pending to running (GitLab's queued_duration).")
    p95_s: float = Field(description="95th percentile seconds from pending to running.")
    history: list[float | None] = Field(default_factory=list, description="p95 per 5 minutes, oldest first (None: no job then).")


class JobsResponse(Wire):
    jobs: list[JobView]
    plan_time: datetime | None = Field(None, description="When the plan the reasons come from was made.")
    queue_times: list[QueueTime] = Field(
        default_factory=list, description="Queue time per tag set over the last hour, most jobs first (empty from an older agent)."
    )


class PlanResponse(Wire):
    plan: Plan | None = Field(None, description="None before the first reconcile pass.")
    plan_time: datetime | None = None
    reconcile_count: int = 0


class FleetRunner(Wire):
    id: str = Field(description="Runner name (container name on its host).")
    gitlab_id: int | None = None
    state: str = Field(description="This host: starting | idle | busy | draining | stopping. Others: GitLab's status (online, offline, ...).")
    tags: list[str] = Field(default_factory=list)
    platform: str | None = None
    gpu: str | None = None
    job: int | None = None
    started_at: datetime | None = None


class FleetHost(Wire):
    hostname: str
    last_seen: datetime | None = Field(None, description="When this agent last listed the host's runners in GitLab.")
    runners: list[FleetRunner]
    live: bool | None = Field(None, description="Whether its presence heartbeat is within fleet.membership_ttl; None: fleet off.")
    heartbeat_at: datetime | None = Field(None, description="Its presence's last heartbeat.")
    joined_at: datetime | None = Field(
        None, description="When its membership began (start, or return after a lapse); for 2 × fleet.heartbeat_interval after it, the host ranks last."
    )
    profiles: list[str] = Field(default_factory=list, description="What it serves: native arch, emulated ones, GPU classes, extra tags.")
    room: int | None = Field(None, description="Runners it can still start, as its presence says.")
    owns: list[int] = Field(default_factory=list, description="Pending jobs it owns, as this host computes ownership.")


class FleetResponse(Wire):
    """Runners of every host whose AutoGit agent registers against the same GitLab, found by
    the `autogit:<host>:<name>` description of their registrations; this host's in full detail."""

    hosts: list[FleetHost]
    ownership: list[str] = Field(default_factory=list, description="Why each pending job this host does not plan for is another's.")


class ErrorType(StrEnum):
    BAD_REQUEST = "bad_request"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    TIMEOUT = "timeout"  # the request body did not arrive in time
    PAYLOAD_TOO_LARGE = "payload_too_large"
    HEADERS_TOO_LARGE = "headers_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    CONFLICT = "conflict"  # e.g. a config reload the agent refused
    UNAVAILABLE = "unavailable"  # too many connections, or shutting down
    INTERNAL = "internal"


class ErrorBody(Wire):
    type: ErrorType
    message: str = Field(description="One human line; never holds a secret.")


class ErrorResponse(Wire):
    error: ErrorBody


# Category Cf characters a line may keep: Persian, Indic scripts and emoji sequences need them.
_JOINERS = frozenset("\u200c\u200d")
_HIDDEN_CATEGORIES = {"Cc": "a control character", "Cf": "an invisible format character", "Cs": "a surrogate",
                      "Zl": "a line separator", "Zp": "a paragraph separator"}


def _hidden_character(text: str) -> str | None:
    """What the first character of `text` that cannot be shown as it is, is; None: there is none."""
    for char in text:
        kind = _HIDDEN_CATEGORIES.get(unicodedata.category(char))
        if kind is not None and char not in _JOINERS:
            return f"{kind} (U+{ord(char):04X})"
    return None


class ActionRequest(BaseModel):
    """Optional body of every POST action. Strict: unknown fields are a 400 naming the field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: str | None = Field(
        None,
        max_length=500,
        description="Why, in one line; recorded in the action's event and the logs. Refused (400): control characters "
        "(C0, DEL, C1), line and paragraph separators, surrogates and invisible format characters (Unicode category Cf: "
        "bidi overrides, isolates and marks, zero-width spaces, ...) except the zero-width (non-)joiners U+200C and "
        "U+200D that some scripts and emoji need.",
    )

    @field_validator("reason")
    @classmethod
    def _one_visible_line(cls, value: str | None) -> str | None:
        # It ends up in events, the journal and terminals, where a newline could forge an entry and
        # a bidi override could show an operator text other than what was stored.
        bad = None if value is None else _hidden_character(value)
        if bad is not None:
            raise ValueError(f"must be one visible line: it holds {bad}")
        return value


class ActionResponse(Wire):
    ok: bool = True
    action: str = Field(description="e.g. 'gpu.drain', 'scaling.pause'.")
    target: str | None = Field(None, description="GPU or runner id, where the action has one.")
    message: str
    event_seq: int | None = Field(None, description="Sequence number of the event the action published.")
    changed: bool = Field(True, description="False when the intent was already in place (idempotent).")


# Wire model -> the internal model it mirrors, as "module:Class" of autogit.agent (a unit test
# holds their fields equal, so the server can build one from the other).
WIRE_MIRRORS: dict[type[Wire], str] = {
    Gpu: "model:Gpu",
    Host: "model:Host",
    Job: "model:Job",
    Runner: "model:Runner",
    StartRunner: "model:StartRunner",
    StopRunner: "model:StopRunner",
    DrainRunner: "model:DrainRunner",
    RegistrationState: "model:RegistrationState",
    AbortRunner: "model:AbortRunner",
    KillRunner: "model:KillRunner",
    RemoveRunner: "model:RemoveRunner",
    DeleteRegistration: "model:DeleteRegistration",
    PauseRegistration: "model:PauseRegistration",
    RunnerHold: "model:RunnerHold",
    JobWait: "model:JobWait",
    JobServed: "model:JobServed",
    Plan: "model:Plan",
    ComponentHealth: "state:ComponentHealth",
    ConfigReport: "state:ConfigReport",
    Leadership: "state:Leadership",
    ClusterNode: "state:ClusterNode",
    ClusterPod: "state:ClusterPod",
    ClusterReport: "state:ClusterReport",
    GpuReading: "state:GpuReading",
    RunnerView: "state:RunnerView",
    Event: "events:Event",
}

# Every model the OpenAPI document names under components/schemas.
RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    StatusResponse,
    GpusResponse,
    RunnersResponse,
    JobsResponse,
    PlanResponse,
    FleetResponse,
    ErrorResponse,
    ActionRequest,
    ActionResponse,
    Event,
)
