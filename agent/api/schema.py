"""The socket API's wire schema (v1), shared by the server, the client, the CLI and the TUI.

Every response body is one of these models; the OpenAPI document is generated from their JSON
schemas, so the docs, the server and the TUI cannot drift apart. The TUI imports this module and
`client.py` only, never agent internals: the domain models it needs are re-exported here.

Compatibility rule for v1: fields may be added (clients ignore what they do not know, so the
response models below accept extra fields when *parsing*), never renamed or removed. Request
bodies are strict (extra=forbid): a typo in an action body is an error, not a silent no-op.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..events import Event
from ..model import Gpu, Host, Job, JobWait, Plan, Runner, WaitReason
from ..state import AgentPhase, ComponentHealth, GpuReading, RunnerView

__all__ = [
    "API_VERSION",
    "ActionRequest",
    "ActionResponse",
    "AgentPhase",
    "ComponentHealth",
    "Counts",
    "ErrorBody",
    "ErrorResponse",
    "ErrorType",
    "Event",
    "FleetHost",
    "FleetResponse",
    "FleetRunner",
    "Gpu",
    "GpuReading",
    "GpuView",
    "GpusResponse",
    "Host",
    "Job",
    "JobStatus",
    "JobView",
    "JobWait",
    "JobsResponse",
    "Plan",
    "PlanResponse",
    "Runner",
    "RunnerView",
    "RunnersResponse",
    "StatusResponse",
    "WaitReason",
    "RESPONSE_MODELS",
]

API_VERSION = "v1"


class Wire(BaseModel):
    """Base of response bodies: immutable; unknown fields are ignored so an older client keeps
    working against a newer agent that added fields."""

    model_config = ConfigDict(frozen=True, extra="ignore")


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


class JobsResponse(Wire):
    jobs: list[JobView]
    plan_time: datetime | None = Field(None, description="When the plan the reasons come from was made.")


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


class FleetResponse(Wire):
    """Runners of every host whose AutoGit agent registers against the same GitLab, found by
    the `autogit:<host>:<name>` description of their registrations; this host's in full detail."""

    hosts: list[FleetHost]


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


class ActionRequest(BaseModel):
    """Optional body of every POST action. Strict: unknown fields are a 400 naming the field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # One printable line: it ends up in events and the journal, where a newline could forge entries.
    reason: str | None = Field(
        None,
        max_length=500,
        pattern=r"^[^\x00-\x1f\x7f]*$",
        description="Why, in one line; recorded in the action's event and the logs.",
    )


class ActionResponse(Wire):
    ok: bool = True
    action: str = Field(description="e.g. 'gpu.drain', 'scaling.pause'.")
    target: str | None = Field(None, description="GPU or runner id, where the action has one.")
    message: str
    event_seq: int | None = Field(None, description="Sequence number of the event the action published.")
    changed: bool = Field(True, description="False when the intent was already in place (idempotent).")


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
