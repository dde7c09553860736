"""Scenario files for `autogit-agent plan`: a whole observation (host, policy, runners, jobs, now;
optionally the queue read's completeness, this host's registrations, the stop deadlines and the
running backoffs) in one JSON document, so the planner can be run, tested and benchmarked with no I/O. An optional
`fleet` section adds the peers this host shares GitLab with (docs/cli/scenario.md): the plan then
covers only this host's share of the jobs, computed as the agent computes it (fleet.fleet_share)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydantic import ConfigDict, Field, NonNegativeInt, PositiveFloat, ValidationError

from . import __version__
from .config import FleetConfig
from .fleet import FleetShare, GpuClass, JobOwnership, PeerRunner, Presence, Room, build_presence, fleet_share, is_live, join_settle, runners_of
from .model import (
    Backoff,
    BusyEvidence,
    Frozen,
    Host,
    HostRegistration,
    Job,
    Lifecycle,
    Observation,
    Plan,
    Policy,
    QueueRead,
    RegistrationState,
    Runner,
    RunnerKind,
    RunnerStatus,
    Tag,
    UtcDatetime,
)
from .planner import decide
from .tags import host_profiles, platform_for_arch, arch_of_tag

__all__ = [
    "FleetHost",
    "FleetReport",
    "Scenario",
    "ScenarioError",
    "ScenarioFleet",
    "ScenarioPeer",
    "ScenarioRunner",
    "load_scenario",
    "parse_scenario",
    "plan_scenario",
]


class ScenarioError(ValueError):
    """A scenario that cannot be used; str() is one line naming the field."""


class ScenarioRunner(Frozen):
    """A runner as a scenario gives it: kind, platform and run_untagged may be left out, and so may
    everything the lifecycle reads (status, stop and abort times, registration, busy evidence)."""

    id: str
    tags: list[Tag] = Field(default_factory=list)
    busy: bool = False
    idle_since: UtcDatetime | None = None
    gpu: str | None = None
    run_untagged: bool | None = None
    kind: RunnerKind | None = None
    platform: str | None = None
    draining: bool = False
    reach: str | None = None
    busy_by: BusyEvidence | None = None
    status: RunnerStatus = RunnerStatus.RUNNING
    status_since: UtcDatetime | None = None
    started_at: UtcDatetime | None = None
    stop_requested_at: UtcDatetime | None = None
    abort_requested_at: UtcDatetime | None = None
    gitlab_id: int | None = None
    registration: RegistrationState | None = None
    missing_strikes: NonNegativeInt = 0
    operator_drain: bool = False


# Peers are written by hand: by field name (not the note's one-letter keys), and a typo is an
# error, where the wire format ignores fields it does not know (a newer agent's).
_BY_NAME = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=False)


class ScenarioGpuClass(GpuClass):
    model_config = _BY_NAME


class ScenarioRoom(Room):
    model_config = _BY_NAME


class ScenarioPeer(Presence):
    """A peer's presence as a scenario writes it: Presence's fields by name, version optional."""

    model_config = _BY_NAME

    version: str = Field("scenario", max_length=64)
    gpus: list[ScenarioGpuClass] = Field(default_factory=list)  # type: ignore[assignment]
    room: ScenarioRoom

    def presence(self) -> Presence:
        """The plain wire model, as the agent would have decoded it from the peer's note."""
        return Presence.model_validate(self.model_dump())


_FLEET_DEFAULTS = FleetConfig.model_fields


class ScenarioFleet(Frozen):
    """The fleet around this host: its peers as they publish themselves, and their runners."""

    hostname: str | None = Field(None, min_length=1, description="This host's name in the fleet; default: host.hostname.")
    hold_off: PositiveFloat = _FLEET_DEFAULTS["hold_off"].default
    membership_ttl: PositiveFloat = _FLEET_DEFAULTS["membership_ttl"].default
    heartbeat_interval: PositiveFloat = _FLEET_DEFAULTS["heartbeat_interval"].default
    joined_at: UtcDatetime | None = Field(
        None, description="When this host (re)joined; within 2 × heartbeat_interval of now it ranks last. Default: long settled."
    )
    peers: list[ScenarioPeer] = Field(default_factory=list)
    peer_runners: list[PeerRunner] = Field(default_factory=list, description="The peers' runners; this host's are `runners`.")
    first_seen: dict[int, UtcDatetime] = Field(
        default_factory=dict, description="Job id: when this host first saw it pending; default: its created_at."
    )


class Scenario(Frozen):
    now: UtcDatetime
    host: Host
    policy: Policy = Field(default_factory=Policy)
    runners: list[ScenarioRunner] = Field(default_factory=list)
    jobs: list[Job] = Field(default_factory=list)
    fleet: ScenarioFleet | None = None
    queue: QueueRead = Field(default_factory=QueueRead, description="How complete the queue read was (default: complete, fresh).")
    registrations: list[HostRegistration] = Field(default_factory=list, description="This host's registrations GitLab lists.")
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)
    backoff: list[Backoff] = Field(default_factory=list)

    def me(self) -> str:
        """This host's name in the fleet."""
        return self.fleet.hostname if self.fleet is not None and self.fleet.hostname else self.host.hostname

    def utc_now(self) -> datetime:
        return self.now.astimezone(UTC)

    def fleet_share(self, runners: list[Runner] | None = None) -> FleetShare | None:
        """This host's share of the jobs, as the agent computes it: its presence built from host,
        runners and policy with a heartbeat of now (so it is live), the peers' as written. None
        without a fleet section: the host plans for every job."""
        if self.fleet is None:
            return None
        me = self.me()
        runners = self.planner_runners() if runners is None else runners
        now = self.utc_now()
        own = build_presence(
            self.host.model_copy(update={"hostname": me}), runners, self.policy, version=__version__, now=now, joined_at=self.fleet.joined_at
        )
        return fleet_share(
            me,
            self.jobs,
            [own, *(p.presence() for p in self.fleet.peers)],
            [*self.fleet.peer_runners, *runners_of(me, runners)],
            now,
            hold_off=self.fleet.hold_off,
            membership_ttl=self.fleet.membership_ttl,
            first_seen=self.fleet.first_seen,
            settle=join_settle(self.fleet.heartbeat_interval),
        )

    def planner_runners(self) -> list[Runner]:
        """Fill what the scenario left out the way the agent itself would have registered it."""
        native = host_profiles(self.host, self.policy)[0]
        out = []
        for r in self.runners:
            tags = frozenset(r.tags)
            if r.kind is not None:
                kind = r.kind
            elif r.gpu is not None:
                kind = RunnerKind.GPU
            elif tags <= native.tags:
                kind = RunnerKind.NATIVE
            else:
                kind = RunnerKind.EMULATED
            arch = self.host.arch
            if kind is RunnerKind.EMULATED:
                arch = next((a for t in sorted(tags) if (a := arch_of_tag(t)) and a != self.host.arch), arch)
            given = r.model_dump(exclude={"kind", "run_untagged", "platform"}, exclude_unset=True)
            out.append(
                Runner(
                    **given,
                    kind=kind,
                    run_untagged=kind is RunnerKind.NATIVE if r.run_untagged is None else r.run_untagged,
                    platform=r.platform or platform_for_arch(arch),
                )
            )
        return out


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(root)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {err['msg']}{more}"


def _fleet_problem(scenario: Scenario) -> str | None:
    """What pydantic cannot see in the fleet section: names that clash or point nowhere (a typo
    here would silently change the answer), as `field: message`."""
    fleet = scenario.fleet
    if fleet is None:
        return None
    me = scenario.me()
    named = {me}
    for i, peer in enumerate(fleet.peers):
        if peer.hostname in named:
            what = "this host's name" if peer.hostname == me else "named by an earlier peer"
            return f"fleet.peers.{i}.hostname: {peer.hostname!r} is {what}"
        named.add(peer.hostname)
    for i, runner in enumerate(fleet.peer_runners):
        if runner.host == me:
            return f"fleet.peer_runners.{i}.host: {me!r} is this host; its runners are `runners`"
        if runner.host not in named:
            return f"fleet.peer_runners.{i}.host: no peer is named {runner.host!r}"
    jobs = {j.id for j in scenario.jobs}
    for job_id in fleet.first_seen:
        if job_id not in jobs:
            return f"fleet.first_seen.{job_id}: no such job in `jobs`"
    return None


def parse_scenario(text: str | bytes, source: str = "scenario") -> Scenario:
    try:
        scenario = Scenario.model_validate_json(text)
    except ValidationError as exc:
        raise ScenarioError(f"{source}: {_first_error(exc)}") from None
    if (problem := _fleet_problem(scenario)) is not None:
        raise ScenarioError(f"{source}: {problem}")
    return scenario


def load_scenario(path: Path) -> Scenario:
    return parse_scenario(path.read_bytes(), str(path))


# --- `plan` with a fleet section ----------------------------------------------------------------


class FleetHost(Frozen):
    """One host of the scenario's fleet as this host sees it."""

    hostname: str
    this_host: bool
    live: bool = Field(description="Heartbeat within membership_ttl of now: a member, its runners and room count.")
    heartbeat_age_s: float = Field(description="now - heartbeat_at; negative: the heartbeat is ahead of now.")
    owns: list[int] = Field(description="Pending jobs it starts for (rank 0) or whose idle runner serves them.")


class FleetReport(Frozen):
    """The `fleet` object of `plan --json` (present only when the scenario has a fleet section)."""

    hostname: str = Field(description="This host.")
    hold_off: float
    membership_ttl: float
    member: bool = Field(description="This host is live; if not, it plans alone, for every job (the agent's rule).")
    hosts: list[FleetHost] = Field(description="This host first, then its peers in the scenario's order.")
    ownership: list[JobOwnership] = Field(description="Each pending job's place, in the planner's fair order.")
    planned: list[int] = Field(description="The pending jobs this host's plan covers: its share.")

    @classmethod
    def of(cls, scenario: Scenario, share: FleetShare, now: datetime) -> FleetReport:
        assert scenario.fleet is not None
        fleet = scenario.fleet
        me = scenario.me()
        owns: dict[str, list[int]] = {}
        for o in share.ownership:
            if o.owner is not None:
                owns.setdefault(o.owner, []).append(o.job)
        member = share.member
        hosts = [FleetHost(hostname=me, this_host=True, live=member, heartbeat_age_s=0.0, owns=owns.get(me, []))]
        for peer in fleet.peers:
            age = (now - peer.heartbeat_at).total_seconds()
            live = is_live(peer, now, fleet.membership_ttl)
            hosts.append(
                FleetHost(hostname=peer.hostname, this_host=False, live=live, heartbeat_age_s=age, owns=owns.get(peer.hostname, []))
            )
        return cls(
            hostname=me,
            hold_off=fleet.hold_off,
            membership_ttl=fleet.membership_ttl,
            member=member,
            hosts=hosts,
            ownership=share.ownership,
            planned=[j.id for j in share.jobs],
        )


def plan_scenario(scenario: Scenario) -> tuple[Plan, FleetReport | None]:
    """What `autogit-agent plan` computes: the plan for this host's jobs (its fleet share when the
    scenario has a fleet section, else every job) and, with a fleet, the ownership report."""
    now = scenario.utc_now()
    runners = scenario.planner_runners()
    share = scenario.fleet_share(runners)
    jobs = scenario.jobs if share is None else share.jobs
    observation = Observation(
        host=scenario.host, runners=runners, jobs=jobs, policy=scenario.policy, now=now, queue=scenario.queue,
        registrations=scenario.registrations, lifecycle=scenario.lifecycle, backoff=scenario.backoff,
    )  # fmt: skip
    return decide(observation), None if share is None else FleetReport.of(scenario, share, now)
