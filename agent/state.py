"""The agent's shared state: what the reconciler last observed and decided, the operator's
intents, and the event bus. The reconciler writes observations here; the socket API reads them
and records operator intents (drain a GPU, pause scaling, ...), which the next reconcile pass
reads. Nothing here does I/O, so the API and the reconciler never call each other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import datetime, UTC
from enum import StrEnum

from pydantic import Field

from .events import EventBus
from .model import Frozen, Gpu, Host, Job, Plan, Runner

__all__ = ["AgentPhase", "AgentState", "ClusterNode", "ClusterPod", "ClusterReport", "ComponentHealth", "ConfigReport", "GpuReading", "Intents", "LeaderRole", "Leadership", "RunnerView"]


class AgentPhase(StrEnum):
    STARTING = "starting"  # before the first full observation
    DETECT_ONLY = "detect-only"  # no GitLab configured: hardware and socket only
    RUNNING = "running"
    DEGRADED = "degraded"  # GitLab or Docker failing: keeps what runs, starts nothing new
    STOPPING = "stopping"


class LeaderRole(StrEnum):
    LEADER = "leader"  # holds the Lease and acts
    FOLLOWER = "follower"  # observes and serves status; acts nothing
    NOT_ELECTING = "not electing"  # leader_election off: this agent always acts


class Leadership(Frozen):
    """This replica's role in the leader election (ADR-014)."""

    role: LeaderRole = LeaderRole.NOT_ELECTING
    identity: str | None = Field(None, description="This replica's name in the Lease.")
    holder: str | None = Field(None, description="Who holds the Lease as this replica last read it; None: nobody, or not read yet.")
    since: datetime | None = Field(None, description="When this replica took its current role.")
    lease: str | None = Field(None, description="namespace/name of the Lease.")


class ComponentHealth(Frozen):
    ok: bool | None = Field(None, description="None: not checked yet or not configured.")
    error: str | None = None
    since: datetime | None = Field(None, description="When it last changed between ok and failing.")
    errors_total: int = 0
    problems: list[str] = Field(
        default_factory=list,
        description="What it refuses while it answers (a missing scope or role, a project it hides): one line each; "
        "the rest of the work goes on.",
    )


class GpuReading(Frozen):
    """Live readings of one GPU; None where the backend cannot tell ('unknown' is not zero)."""

    utilization_pct: float | None = None
    memory_used_mb: int | None = None
    temperature_c: float | None = None
    power_w: float | None = None


class RunnerView(Frozen):
    """A runner as the agent sees it: the planner's Runner plus its container's facts."""

    runner: Runner
    container: str | None = Field(None, description="Container name.")
    gitlab_id: int | None = Field(None, description="GitLab's runner id.")
    state: str = Field("starting", description="starting | idle | busy | draining | stopping")
    job: int | None = Field(None, description="The job it is running.")
    started_at: datetime | None = None


class ConfigReport(Frozen):
    """What the config file last did to the running agent (set at start and by each reload)."""

    loaded_at: datetime = Field(description="When the running config was last read (start or reload).")
    reloads: int = Field(0, description="Reloads applied since the start.")
    applied: list[str] = Field(default_factory=list, description="Keys the last reload changed and applied (dotted, e.g. gitlab.url).")
    restart_needed: list[str] = Field(
        default_factory=list, description="Keys whose file value differs from the running one and that only a restart applies."
    )


class ClusterNode(Frozen):
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


class ClusterPod(Frozen):
    """One pod of a runner of this agent: its manager pod, or a job pod it made."""

    runner: str
    pod: str
    role: str = Field(description="manager | job")
    phase: str | None = Field(None, description="The pod's phase (Pending, Running, ...); None: not reported yet.")
    node: str | None = Field(None, description="The node it is bound to; None: not scheduled yet.")


class ClusterReport(Frozen):
    """The cluster's nodes and this agent's pods, from the watch-based inventory (ADR-016)."""

    known: bool = Field(description="False before the first list, or while listing and watching fail past runner.kubernetes.inventory_stale_after.")
    unknown_reason: str | None = Field(None, description="Why the inventory is unknown (then nothing is planned).")
    node_selector: str = Field("", description="runner.kubernetes.node_selector: the nodes planned for ('' every node).")
    nodes: list[ClusterNode] = Field(default_factory=list)
    runner_pods: list[ClusterPod] = Field(default_factory=list)
    api_requests: dict[str, int] = Field(default_factory=dict, description="API requests of the inventory since start, by verb and path.")
    problems: list[str] = Field(default_factory=list, description="Objects the inventory could not read (left out, one line each).")


class Intents(Frozen):
    """What operators asked for through the socket; read by every reconcile pass, and kept
    across restarts by the daemon (agent.statefile, through `AgentState.on_intents`)."""

    paused: bool = False
    drained_gpus: frozenset[str] = frozenset()
    drained_runners: frozenset[str] = frozenset()


class AgentState:
    def __init__(self, bus: EventBus | None = None, clock: Callable[[], datetime] | None = None) -> None:
        self.bus = bus or EventBus()
        self._clock = clock or (lambda: datetime.now(UTC))
        self.phase = AgentPhase.STARTING
        self.started_at = self._clock()
        self.host: Host | None = None
        self.gpu_readings: dict[str, GpuReading] = {}
        self.runners: list[RunnerView] = []
        self.jobs: list[Job] = []
        self.plan: Plan | None = None
        # Other AutoGit hosts' runners on the same GitLab (gitlab.adapter.Registration), from
        # the registration listing of the last full pass; `fleet_seen` is when that was.
        self.fleet: list = []
        self.fleet_seen: datetime | None = None
        # fleet.enabled: the presences read from GitLab, the live hosts, and who owns each pending job
        self.presences: list = []
        self.live_hosts: set[str] = set()
        self.ownership: list = []
        self.plan_time: datetime | None = None
        self.gitlab = ComponentHealth()
        self.docker = ComponentHealth()
        self.intents = Intents()
        # Called with the new intents after each change (the daemon saves them: agent.statefile).
        self.on_intents: Callable[[Intents], object] | None = None
        self.reconcile_count = 0
        # Set whenever something happened that deserves a pass now (webhook, hotplug, action).
        self.wake = asyncio.Event()
        # Called for "re-read the config"; returns None on success or a one-line error.
        self.reload_handler: Callable[[], str | None] | None = None
        self.config: ConfigReport | None = None  # set by the daemon
        self.leadership = Leadership()  # set by the daemon when leader_election is enabled
        self.cluster: ClusterReport | None = None  # runner.runtime kubernetes: set by every pass

    # --- written by the reconciler -------------------------------------------------------
    def set_phase(self, phase: AgentPhase, why: str = "") -> None:
        if phase is not self.phase:
            old, self.phase = self.phase, phase
            self.bus.publish("agent.phase", f"agent {old.value} → {phase.value}" + (f": {why}" if why else ""), phase=phase.value, previous=old.value)

    def set_health(self, component: str, ok: bool, error: str | None = None) -> None:
        current: ComponentHealth = getattr(self, component)
        errors = current.errors_total + (0 if ok else 1)
        changed = current.ok is not ok
        since = self._clock() if changed else current.since
        setattr(self, component, ComponentHealth(ok=ok, error=None if ok else error, since=since, errors_total=errors, problems=current.problems))
        if changed:
            kind = f"{component}.{'ok' if ok else 'failing'}"
            word = ("reachable again" if current.ok is False else "reachable") if ok else f"failing: {error or '?'}"
            self.bus.publish(kind, f"{component} {word}", error=error)

    def start_electing(self, identity: str, lease: str) -> None:
        """leader_election is on: a follower until this replica holds the Lease."""
        self.leadership = Leadership(role=LeaderRole.FOLLOWER, identity=identity, since=self._clock(), lease=lease)

    def set_leadership(self, acting: bool, holder: str | None) -> None:
        """An electing replica's role now: leader while it may act, follower otherwise;
        `leader.acquired` / `leader.lost` once per change."""
        current = self.leadership
        role = LeaderRole.LEADER if acting else LeaderRole.FOLLOWER
        if role is current.role:
            if holder != current.holder:
                self.leadership = current.model_copy(update={"holder": holder})
            return
        self.leadership = current.model_copy(update={"role": role, "holder": holder, "since": self._clock()})
        lease = current.lease or "?"
        if acting:
            self.bus.publish("leader.acquired", f"{current.identity} leads (Lease {lease}): acting", identity=current.identity, lease=lease)
        elif current.role is LeaderRole.LEADER:
            self.bus.publish(
                "leader.lost", f"{current.identity} no longer leads (Lease {lease}; holder as last read: {holder or 'nobody'}): observing only",
                identity=current.identity, holder=holder, lease=lease,
            )  # fmt: skip

    def set_problems(self, component: str, problems: list[str]) -> None:
        """The refusals of a component that still answers; each new one is published once."""
        current: ComponentHealth = getattr(self, component)
        for line in problems:
            if line not in current.problems:
                self.bus.publish(f"{component}.refused", line)
        setattr(self, component, current.model_copy(update={"problems": list(problems)}))

    def gpus(self) -> list[Gpu]:
        """The host's GPUs with operator drains applied."""
        if self.host is None:
            return []
        drained = self.intents.drained_gpus
        return [g.model_copy(update={"drained": True}) if g.id in drained and not g.drained else g for g in self.host.gpus]

    def prune_runners(self, existing: Iterable[str]) -> list[str]:
        """Drop drain intents of runners that are gone (called by each pass that listed the
        containers); returns the names dropped."""
        gone = sorted(self.intents.drained_runners.difference(existing))
        if gone:
            self._set_intents(self.intents.model_copy(update={"drained_runners": self.intents.drained_runners.difference(gone)}))
            self.bus.publish("intents.pruned", f"drain intents dropped for runners that are gone: {', '.join(gone)}", runners=gone)
        return gone

    def _set_intents(self, intents: Intents) -> None:
        self.intents = intents
        if self.on_intents is not None:
            self.on_intents(intents)

    # --- written by operators through the API -----------------------------------------------
    def _intend(self, event: str, message: str, actor: str, **changes: object) -> None:
        self._set_intents(self.intents.model_copy(update=changes))
        self.bus.publish(event, f"{message} (by {actor})", actor=actor)
        self.wake.set()

    def drain_gpu(self, gpu_id: str, actor: str) -> None:
        self._intend("gpu.drained", f"GPU {gpu_id} drained", actor, drained_gpus=self.intents.drained_gpus | {gpu_id})

    def undrain_gpu(self, gpu_id: str, actor: str) -> None:
        self._intend("gpu.undrained", f"GPU {gpu_id} undrained", actor, drained_gpus=self.intents.drained_gpus - {gpu_id})

    def drain_runner(self, runner_id: str, actor: str) -> None:
        self._intend(
            "runner.drain-requested", f"runner {runner_id} drain requested", actor, drained_runners=self.intents.drained_runners | {runner_id}
        )

    def pause(self, actor: str) -> None:
        self._intend("scaling.paused", "scaling paused", actor, paused=True)

    def resume(self, actor: str) -> None:
        self._intend("scaling.resumed", "scaling resumed", actor, paused=False)

    def reload(self, actor: str) -> str | None:
        """Re-read the config now; returns None, or the one-line reason it was refused."""
        if self.reload_handler is None:
            return "reload is not available in this mode"
        error = self.reload_handler()
        if error is not None:
            self.bus.publish("config.rejected", f"new config refused, old one kept: {error}", actor=actor)
            return error
        report = self.config
        applied = report.applied if report else []
        restart = report.restart_needed if report else []
        self.bus.publish("config.reloaded", reload_summary(applied, restart), actor=actor, applied=applied, restart_needed=restart)
        self.wake.set()
        return None


def reload_summary(applied: list[str], restart_needed: list[str]) -> str:
    """One line: what a reload applied and which changed keys wait for a restart."""
    text = "config re-read: " + (f"applied {', '.join(applied)}" if applied else "nothing changed that applies live")
    if restart_needed:
        text += f"; needs a restart to apply: {', '.join(restart_needed)}"
    return text
