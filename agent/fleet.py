"""A fleet without a server: who starts for which job when several hosts share one GitLab.

Pure: no I/O and no clock (`now` is an argument), like the planner. ADR-009 explains the design
and docs/runners/fleet.md the operator's view. In short:

1. **Presence.** Every agent keeps one registration in GitLab that never serves a job (paused,
   `run_untagged: false`, tag `autogit-presence`), described `autogit-presence:<host>`. Its
   `maintenance_note` carries a compact, versioned `Presence`: what the host can serve (native
   and emulated architectures, GPU classes, extra tags), its room, and a heartbeat time. A
   presence is *live* while its heartbeat (the later of the note's and GitLab's `contacted_at`)
   is within `membership_ttl` of now.
2. **Ownership.** Every host computes, from the same view (pending jobs, live presences, idle
   runners), the same answer: for each pending job, the live hosts whose profiles can serve it
   (GitLab's rule: job tags ⊆ runner tags; untagged jobs only on `run_untagged` runners, i.e.
   native ones) ranked by rendezvous hashing of (job id, hostname); hosts whose room cannot take
   the job are skipped, and room is spent job by job in the planner's fair order. Rank 0 starts
   at once; rank r only once the job has been pending r × hold_off. An idle matching runner of a
   live host anywhere in the fleet serves the job, and then nobody starts.
3. **Bound.** Ranks are distinct, so after k × hold_off at most k + 1 hosts start for one job
   (k = 0: exactly one), whatever the number of hosts; with hold_off above the time a started
   runner needs to show up in GitLab's runner listing, a live owner's start is seen before the
   next rank's turn comes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from hashlib import blake2b
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, ValidationError, field_serializer

from .model import Frozen, Host, Job, Policy, Runner, RunnerKind, TagSet, UtcDatetime, _as_utc
from .matching import capacity_of, serves, split_gpus
from .planner import fair_order
from .tags import arch_tags, compute_capability_tags, gpu_tags, memory_tags

__all__ = [
    "NOTE_LIMIT",
    "NOTE_PREFIX",
    "PRESENCE_DESCRIPTION_PREFIX",
    "PRESENCE_TAG",
    "Claim",
    "FleetShare",
    "GpuClass",
    "JobOwnership",
    "FleetRegistration",
    "Leftover",
    "PeerRunner",
    "Presence",
    "PresenceTooLarge",
    "Room",
    "assign_jobs",
    "build_presence",
    "decode_presence",
    "encode_presence",
    "fleet_runners",
    "fleet_share",
    "is_live",
    "join_settle",
    "live_presences",
    "membership_start",
    "owners",
    "presence_description",
    "presence_hostname",
    "presence_registration",
    "runners_of",
    "should_start",
    "to_forget",
]

# GitLab's Ci::Runner validates `maintenance_note` to at most 1024 characters (the simulator
# holds to it: "maintenance_note is too long (maximum is 1024 characters)").
NOTE_LIMIT = 1024
# The format's version is in the prefix: a reader skips a note whose prefix it does not know
# (another major version), and ignores fields it does not know (a newer minor one).
NOTE_PREFIX = "autogit-presence/1 "
# Not `autogit:<host>:`, the prefix of the host's job runners: leak clean-up never matches it.
PRESENCE_DESCRIPTION_PREFIX = "autogit-presence:"
# The one tag of a presence registration: no job asks for it, and the registration is paused.
PRESENCE_TAG = "autogit-presence"


class PresenceTooLarge(ValueError):
    """Even with every droppable detail left out, the presence does not fit the note (e.g. a
    very long list of extra tags): a configuration problem, raised rather than truncated into
    a presence that would misstate what the host can serve."""


class _Wire(BaseModel):
    """What peers publish: immutable, unknown fields ignored (a newer agent may add some), read
    from the compact keys of the note or from the field names."""

    model_config = ConfigDict(frozen=True, extra="ignore", validate_by_name=True, validate_by_alias=True)


_VRAM_CLASS = re.compile(r"^vram-(\d+)g$")
_CC_EXACT = re.compile(r"^cc-(\d+\.\d+)$")


def _implied(tags: Iterable[str]) -> frozenset[str]:
    """The floor tags that an exact memory class or compute capability stands for (tags.py)."""
    out: set[str] = set()
    for tag in tags:
        if (m := _VRAM_CLASS.match(tag)) is not None:
            out |= memory_tags(int(m.group(1)) * 1024) - {tag}
        elif (m := _CC_EXACT.match(tag)) is not None:
            out |= compute_capability_tags(m.group(1)) - {tag}
    return frozenset(out)


class GpuClass(_Wire):
    """Identical GPUs of one host: their tags (floors left implied), how many, how many are free."""

    tags: TagSet = Field(alias="t", description="gpu_tags() of each GPU, without the floors `vram-<N>g` and `cc-X.Y` imply.")
    literal: bool = Field(False, alias="l", description="The tags are complete as written: imply no floors.")
    count: PositiveInt = Field(alias="n")
    free: NonNegativeInt = Field(alias="f", description="Usable and not held by a runner: a GPU runner could start now.")
    ids: list[str] = Field(default_factory=list, alias="i", description="GPU ids; the first detail dropped when the note is full.")

    def profile_tags(self) -> frozenset[str]:
        """Every tag a runner on one of these GPUs carries, native tags aside."""
        tags = frozenset(self.tags)
        return tags if self.literal else tags | _implied(tags)

    @classmethod
    def of(cls, tags: frozenset[str], ids: list[str], free: int) -> GpuClass:
        compact = tags - _implied(tags)
        exact = compact | _implied(compact) == tags
        return cls(tags=sorted(compact if exact else tags), literal=not exact, count=len(ids), free=free, ids=sorted(ids))


class Room(_Wire):
    """How many more runners the host can start now (every cap of its policy applied)."""

    slots: NonNegativeInt = Field(alias="s", description="New runners of any kind: max_runners, CPU and memory budgets; 0 when paused.")
    per_arch: dict[str, NonNegativeInt] = Field(
        default_factory=dict, alias="p", description="Tighter caps by architecture (max_per_arch); absent: `slots`."
    )


class Presence(_Wire):
    """What one agent publishes about itself, and what its peers read."""

    hostname: str = Field(alias="h", min_length=1, max_length=253)
    version: str = Field(alias="v", max_length=64, description="The agent's version.")
    arch: str = Field(alias="a", description="Native Docker architecture: its runners take untagged jobs.")
    emulated: list[str] = Field(default_factory=list, alias="e", description="Foreign architectures it serves through QEMU.")
    extra_tags: TagSet = Field(default_factory=list, alias="x", description="The policy's extra_tags: on every runner of the host.")
    gpus: list[GpuClass] = Field(default_factory=list, alias="g")
    room: Room = Field(alias="r")
    heartbeat_at: UtcDatetime = Field(alias="b", description="When the agent last refreshed it (the note: Unix seconds).")
    joined_at: UtcDatetime | None = Field(
        None, alias="j", description="When this membership began (start, or return after a lapse); None: long settled (older agents)."
    )
    truncated: bool = Field(False, alias="z", description="GPU classes were left out to fit the note.")

    @field_serializer("heartbeat_at", "joined_at", when_used="json")
    def _unix_seconds(self, moment: datetime | None) -> int | None:
        return None if moment is None else math.floor(moment.timestamp())

    def joining(self, now: datetime, settle: float) -> bool:
        """Joined less than `settle` ago: its peers may not have read it yet (join_settle)."""
        return self.joined_at is not None and (_as_utc(now) - self.joined_at).total_seconds() < settle

    def native_tags(self) -> frozenset[str]:
        return arch_tags(self.arch) | frozenset(self.extra_tags)


class PeerRunner(Frozen):
    """A runner of some AutoGit host of the fleet (this one included), as GitLab lists it."""

    host: str
    tags: TagSet = Field(default_factory=list)
    run_untagged: bool = False
    idle: bool = Field(True, description="Registered and not running a job (starting ones included): it will take a job.")
    reach: str | None = Field(None, description="Where it is registered (`group:<id>`, `project:<id>`); None: instance-wide.")


class Claim(StrEnum):
    """Why a pending job is this host's to plan for, or why it is not."""

    OWNER = "owner"  # mine: the first host in the job's order with room for it
    TAKEOVER = "takeover"  # mine: rank r ≥ 1, pending r × hold_off, still unserved
    IDLE_RUNNER = "idle-runner"  # an idle runner serves it: mine if the runner is mine; nobody starts
    UNOWNED = "unowned"  # mine: no live host's published profiles serve it; the planner says why it waits
    OWNED = "owned"  # another host's turn
    NOT_A_MEMBER = "not-a-member"  # this host is not live in the view: it plans for nothing


class JobOwnership(Frozen):
    """One pending job's place in the fleet, as this host computes it (and every host alike)."""

    job: int
    mine: bool = Field(description="This host plans for it this round.")
    claim: Claim
    owner: str | None = Field(description="The host that starts for it, or whose idle runner serves it; None: no live host can.")
    ranking: list[str] = Field(default_factory=list, description="The hosts in takeover order; ranks are positions here.")
    rank: int | None = Field(None, description="This host's rank; None: not in the ranking.")
    takeover_in_s: float | None = Field(
        None, description="Seconds until this host's rank is due if the job is still pending; None: due, or never."
    )

    def describe(self) -> str:
        """One line for `status`: 'job 12 owned by host-b (this host rank 1, takes over in 25 s)'."""
        if self.claim is Claim.IDLE_RUNNER:
            return f"job {self.job} served by an idle runner of {self.owner}"
        if self.claim is Claim.NOT_A_MEMBER:
            return f"job {self.job} not planned: this host is not a live fleet member yet"
        if self.claim is Claim.UNOWNED:
            return f"job {self.job} no live host's profiles serve it"
        if self.claim is Claim.OWNER:
            return f"job {self.job} owned by this host"
        if self.claim is Claim.TAKEOVER:
            return f"job {self.job} taken over from {self.ranking[0]} (this host rank {self.rank})"
        line = f"job {self.job} owned by {self.owner}"
        if self.rank is not None and self.takeover_in_s is not None:
            line += f" (this host rank {self.rank}, takes over in {math.ceil(self.takeover_in_s)} s)"
        return line


# --- presence: build, encode, decode, liveness ------------------------------------------------


def presence_description(hostname: str) -> str:
    return PRESENCE_DESCRIPTION_PREFIX + hostname


def presence_hostname(description: str) -> str | None:
    """The host of a presence registration's description, or None for any other registration."""
    if not description.startswith(PRESENCE_DESCRIPTION_PREFIX):
        return None
    return description[len(PRESENCE_DESCRIPTION_PREFIX) :] or None


def presence_registration(presence: Presence) -> dict[str, Any]:
    """The body of `POST /user/runners` (and of `PUT /runners/:id` on refresh) for the host's
    presence registration: paused, never untagged, one tag nobody uses."""
    return {
        "description": presence_description(presence.hostname),
        "paused": True,
        "run_untagged": False,
        "tag_list": [PRESENCE_TAG],
        "locked": True,
        "maintenance_note": encode_presence(presence),
    }


def join_settle(heartbeat_interval: float) -> float:
    """How long a (re)joined host ranks after the settled ones: every peer reads the presences
    once per heartbeat_interval, so after two of them each has read the newcomer's (a margin of
    one for a slow pass). Until then its view and theirs differ in exactly that host, and a
    newcomer ranked last owns nothing its peers could also think theirs: no duplicate start."""
    return 2 * heartbeat_interval


def build_presence(
    host: Host, runners: Sequence[Runner], policy: Policy, *, version: str, now: datetime, joined_at: datetime | None = None
) -> Presence:
    """This host's presence from what the planner sees: its profiles (tags.py's notions: native,
    each emulated architecture when emulation is on, each GPU when GPU scheduling is on) and the
    room its runners leave under the policy's caps."""
    held = {r.gpu for r in runners if r.gpu is not None}
    # Held, or sharing silicon with a held one: a held instance's parent, a held parent's instances.
    taken = held | {g.mig_parent for g in host.gpus if g.id in held and g.mig_parent} | {g.id for g in host.gpus if g.mig_parent in held}
    split = split_gpus(host.gpus)
    classes: dict[frozenset[str], tuple[list[str], int]] = {}
    if policy.gpus:
        for gpu in host.gpus:
            ids, free = classes.get(gpu_tags(gpu), ([], 0))
            usable = gpu.healthy and not gpu.drained and gpu.id not in split and gpu.id not in taken
            classes[gpu_tags(gpu)] = ([*ids, gpu.id], free + usable)
    capacity = capacity_of(host, runners, policy)
    slots = 0 if policy.paused else capacity.slots()
    per_arch = capacity.arch_slots()
    return Presence(
        hostname=host.hostname,
        version=version,
        arch=host.arch,
        emulated=sorted(set(host.emulated) - {host.arch}) if policy.emulation else [],
        extra_tags=list(policy.extra_tags),
        gpus=[GpuClass.of(tags, ids, free) for tags, (ids, free) in sorted(classes.items(), key=lambda kv: sorted(kv[0]))],
        room=Room(slots=slots, per_arch={a: n for a, n in per_arch.items() if n < slots}),
        heartbeat_at=now,
        joined_at=joined_at,
    )


def _dump(presence: Presence) -> str:
    body = presence.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    return NOTE_PREFIX + json.dumps(body, separators=(",", ":"), sort_keys=True)


def encode_presence(presence: Presence, limit: int = NOTE_LIMIT) -> str:
    """The note: NOTE_PREFIX and compact JSON, ASCII only (characters = bytes), at most `limit`
    characters. When it does not fit, GPU ids are dropped first, then GPU classes (those with no
    free GPU first, then from the end; `z` then says so); a presence that cannot fit even so is
    refused (PresenceTooLarge), never cut into invalid JSON."""
    note = _dump(presence)
    if len(note) <= limit:
        return note
    classes = [c.model_copy(update={"ids": []}) for c in presence.gpus]
    note = _dump(presence.model_copy(update={"gpus": classes}))
    drop = sorted(range(len(classes)), key=lambda i: (classes[i].free > 0, -i))
    while len(note) > limit and drop:
        gone = drop.pop(0)
        classes = [c for i, c in enumerate(classes) if i != gone]
        drop = [i - (i > gone) for i in drop]
        note = _dump(presence.model_copy(update={"gpus": classes, "truncated": True}))
    if len(note) > limit:
        raise PresenceTooLarge(f"the presence of {presence.hostname} takes {len(note)} characters without GPUs; the note holds {limit}")
    return note


def decode_presence(note: str | None, *, contacted_at: datetime | None = None) -> Presence | None:
    """A peer's presence from its note, or None when the note is not one this version reads
    (absent, another format version, not JSON, missing fields). GitLab's `contacted_at` of the
    registration, when given, counts as a heartbeat too: the later of the two wins."""
    if not note or not note.startswith(NOTE_PREFIX):
        return None
    try:
        presence = Presence.model_validate(json.loads(note[len(NOTE_PREFIX) :]))
    except (ValueError, ValidationError):
        return None
    if contacted_at is not None and _as_utc(contacted_at) > presence.heartbeat_at:
        presence = presence.model_copy(update={"heartbeat_at": _as_utc(contacted_at)})
    return presence


def is_live(presence: Presence, now: datetime, membership_ttl: float) -> bool:
    """Heartbeat within membership_ttl seconds of now, either side (a clock that runs ahead by
    more than the TTL must not keep a dead host a member)."""
    return abs((_as_utc(now) - presence.heartbeat_at).total_seconds()) <= membership_ttl


def live_presences(presences: Iterable[Presence], now: datetime, membership_ttl: float) -> list[Presence]:
    """The live members, one per hostname (the latest heartbeat wins), sorted by hostname."""
    latest: dict[str, Presence] = {}
    for p in presences:
        if is_live(p, now, membership_ttl):
            seen = latest.get(p.hostname)
            if seen is None or (p.heartbeat_at, _dump(p)) > (seen.heartbeat_at, _dump(seen)):
                latest[p.hostname] = p
    return [latest[h] for h in sorted(latest)]


# --- ownership ---------------------------------------------------------------------------------


def _score(job_id: int, hostname: str) -> int:
    # A stable hash (not Python's hash(), which is salted per process): every host agrees.
    return int.from_bytes(blake2b(f"{job_id}\x00{hostname}".encode(), digest_size=8).digest(), "big")


class _Profiles:
    """One presence's profiles, the tag sets computed once per round."""

    def __init__(self, presence: Presence) -> None:
        self.arch = presence.arch
        self.native = presence.native_tags()
        extra = frozenset(presence.extra_tags)
        self.emulated = [(arch, arch_tags(arch) | extra) for arch in sorted(set(presence.emulated) - {presence.arch})]
        self.gpus = [c.profile_tags() | self.native for c in presence.gpus]

    def fit(self, tags: frozenset[str]) -> tuple[RunnerKind, str, list[int]] | None:
        """Which runner of the host would take a job with these tags (the planner's order:
        native, emulated, GPU) and, for a GPU job, the indexes of the GPU classes that match;
        None: none would."""
        if tags <= self.native:
            return RunnerKind.NATIVE, self.arch, []
        for arch, profile in self.emulated:
            if tags <= profile:
                return RunnerKind.EMULATED, arch, []
        classes = [i for i, profile in enumerate(self.gpus) if tags <= profile]
        return (RunnerKind.GPU, self.arch, classes) if classes else None


def rendezvous_order(job_id: int, hosts: Iterable[str]) -> list[str]:
    """The hosts in the job's rendezvous order (highest score first; every host agrees)."""
    return sorted(hosts, key=lambda h: (-_score(job_id, h), h))


def owners(job: Job, live: Sequence[Presence]) -> list[str]:
    """The live hosts whose profiles can serve the job, in the job's rendezvous order (room
    not considered: see assign_jobs)."""
    tags = frozenset(job.tags)
    return rendezvous_order(job.id, {p.hostname for p in live if _Profiles(p).fit(tags) is not None})


class _RoomLeft:
    """A host's room while one round spends it, job by job."""

    def __init__(self, presence: Presence) -> None:
        self.slots = presence.room.slots
        self.per_arch = dict(presence.room.per_arch)
        self.gpus = [c.free for c in presence.gpus]

    def _gpu(self, kind: RunnerKind, classes: list[int]) -> int | None:
        """The GPU class a runner would take (-1: it needs none), or None when none is free."""
        return next((i for i in classes if self.gpus[i] > 0), None) if kind is RunnerKind.GPU else -1

    def fits(self, kind: RunnerKind, arch: str, classes: list[int]) -> bool:
        return self.slots > 0 and self.per_arch.get(arch, 1) > 0 and self._gpu(kind, classes) is not None

    def take(self, kind: RunnerKind, arch: str, classes: list[int]) -> bool:
        """Spend room for one runner if there is some; False (nothing spent) if not."""
        if self.slots <= 0 or self.per_arch.get(arch, 1) <= 0:
            return False
        free = self._gpu(kind, classes)
        if free is None:
            return False
        self.slots -= 1
        if arch in self.per_arch:
            self.per_arch[arch] -= 1
        if free >= 0:
            self.gpus[free] -= 1
        return True


def _idle_match(job: Job, tags: frozenset[str], runner: PeerRunner) -> bool:
    # GitLab's rule, and the job's reach: a runner registered elsewhere is never given it.
    return serves(tags, job.reach, frozenset(runner.tags), runner.run_untagged, runner.reach)


def assign_jobs(
    me: str,
    pending: Sequence[Job],
    live: Sequence[Presence],
    runners: Sequence[PeerRunner],
    now: datetime,
    hold_off: float,
    first_seen: Mapping[int, datetime] | None = None,
    settle: float = 0.0,
) -> list[JobOwnership]:
    """Every pending job's place in the fleet, as `me` sees it, in the planner's fair order.

    `live`: the live presences (live_presences), this host's own *as published* among them, so
    that every host computes from the same view. `runners`: the fleet's runners (this host's
    too); an idle one serves at most one job, and only if its host is live. A job's pending time
    runs from the later of its created_at and `first_seen[job.id]` (when this host first saw it
    pending: a later stage's job is created long before it is pending). Hosts that joined less
    than `settle` ago (join_settle) rank after every settled one, in their own rendezvous order.
    """
    if hold_off <= 0:
        raise ValueError("hold_off must be positive: with 0 every capable host would start at once")
    now = _as_utc(now)
    seen = first_seen or {}
    members = {p.hostname: p for p in live}
    jobs = fair_order(pending)
    if me not in members:
        return [JobOwnership(job=j.id, mine=False, claim=Claim.NOT_A_MEMBER, owner=None) for j in jobs]
    rooms = {h: _RoomLeft(p) for h, p in members.items()}
    joining = {h for h, p in members.items() if p.joining(now, settle)}
    profiles = [(h, _Profiles(p)) for h, p in members.items()]
    fit_cache: dict[frozenset[str], dict[str, tuple[RunnerKind, str, list[int]]]] = {}
    idle = _IdleRunners(runners, members)
    out: list[JobOwnership] = []
    for job in jobs:
        tags = frozenset(job.tags)
        host = idle.take(job, tags)
        if host is not None:
            out.append(JobOwnership(job=job.id, mine=host == me, claim=Claim.IDLE_RUNNER, owner=host))
            continue
        fits = fit_cache.get(tags)
        if fits is None:
            fits = fit_cache[tags] = {h: fit for h, prof in profiles if (fit := prof.fit(tags)) is not None}
        if not fits:
            out.append(JobOwnership(job=job.id, mine=True, claim=Claim.UNOWNED, owner=None))
            continue
        ranking = _ranking(job.id, fits, joining, rooms)
        since = max(_as_utc(job.created_at), _as_utc(seen.get(job.id, job.created_at)))
        out.append(_claim(me, job.id, ranking, (now - since).total_seconds(), hold_off))
    return out


class _IdleRunners:
    """The fleet's idle runners of live hosts, most specific first (the planner's rule: versatile
    ones stay for others); each serves one job at most."""

    def __init__(self, runners: Sequence[PeerRunner], members: Mapping[str, Presence]) -> None:
        self.idle = sorted(
            (r for r in runners if r.idle and r.host in members),
            key=lambda r: (len(r.tags), r.host, r.tags, r.run_untagged, r.reach or ""),
        )
        self.claimed = [False] * len(self.idle)

    def take(self, job: Job, tags: frozenset[str]) -> str | None:
        """The host of the idle runner GitLab would give the job to, now claimed; None: none."""
        hit = next((i for i, r in enumerate(self.idle) if not self.claimed[i] and _idle_match(job, tags, r)), None)
        if hit is None:
            return None
        self.claimed[hit] = True
        return self.idle[hit].host


def _ranking(job_id: int, fits: Mapping[str, tuple[RunnerKind, str, list[int]]], joining: set[str], rooms: Mapping[str, _RoomLeft]) -> list[str]:
    """The job's takeover order. Settled hosts before joining ones, each in rendezvous order; hosts
    without room for it step aside: the first with room is the owner and spends it; the others
    with room left follow in the order, then the full ones. If none has room, the order stands
    and the owner waits for capacity."""
    order = rendezvous_order(job_id, [h for h in fits if h not in joining]) + rendezvous_order(job_id, [h for h in fits if h in joining])
    owner = next((h for h in order if rooms[h].take(*fits[h])), None)
    if owner is None:
        return order
    rest = [h for h in order if h != owner]
    return [owner, *(h for h in rest if rooms[h].fits(*fits[h])), *(h for h in rest if not rooms[h].fits(*fits[h]))]


def _claim(me: str, job_id: int, ranking: list[str], elapsed: float, hold_off: float) -> JobOwnership:
    """`me`'s claim on a job pending `elapsed` seconds: rank r is due after r × hold_off."""
    due = max(0, math.floor(elapsed / hold_off))
    rank = ranking.index(me) if me in ranking else None
    if rank is not None and rank <= due:
        claim = Claim.OWNER if rank == 0 else Claim.TAKEOVER
        return JobOwnership(job=job_id, mine=True, claim=claim, owner=ranking[0], ranking=ranking, rank=rank)
    wait = None if rank is None else rank * hold_off - elapsed
    return JobOwnership(job=job_id, mine=False, claim=Claim.OWNED, owner=ranking[0], ranking=ranking, rank=rank, takeover_in_s=wait)


def should_start(
    job: Job,
    me: str,
    live: Sequence[Presence],
    now: datetime,
    first_seen: datetime | None,
    hold_off: float,
    runners: Sequence[PeerRunner] = (),
) -> bool:
    """Whether `me` starts a runner for this one job now: it is this host's as owner or by
    takeover, and no idle runner of the fleet serves it. The single-job view of assign_jobs
    (there, room is also spent across the round's jobs)."""
    seen = {job.id: first_seen} if first_seen is not None else None
    (only,) = assign_jobs(me, [job], live, runners, now, hold_off, seen)
    return only.mine and only.claim in (Claim.OWNER, Claim.TAKEOVER)


@dataclass(frozen=True, slots=True)
class FleetShare:
    """One host's round in the fleet: the live members, every pending job's place (empty when
    it plans alone), and the pending jobs it plans for (hand them to plan())."""

    live: list[Presence]
    ownership: list[JobOwnership]
    jobs: list[Job]
    member: bool = True  # live in the view; if not, it planned as a backstop (or alone)


def runners_of(host: str, runners: Iterable[Runner]) -> list[PeerRunner]:
    """A host's own runners as the fleet counts them: a busy or draining one takes no new job."""
    return [
        PeerRunner(host=host, tags=r.tags, run_untagged=r.run_untagged, idle=not r.busy and not r.draining, reach=r.reach) for r in runners
    ]


def fleet_share(
    me: str,
    pending: Sequence[Job],
    presences: Iterable[Presence],
    runners: Iterable[PeerRunner],
    now: datetime,
    *,
    hold_off: float,
    membership_ttl: float,
    first_seen: Mapping[int, datetime] | None = None,
    settle: float = 0.0,
    own: Presence | None = None,
) -> FleetShare:
    """The agent's fleet step, whole: the live members among the presences read (this host's
    own as published among them), then assign_jobs over the live hosts' runners.

    A host that is not live in that view (its presence refused, failing to refresh, or lapsed
    during a network cut) is a **backstop**: given `own` (the presence it would publish), it
    ranks after every live peer, as a newcomer does, so it starts only for what they leave
    pending past their hold-offs, and at once where no live peer can serve a job. Without
    `own` it plans alone, for every job (ADR-009)."""
    live = live_presences(presences, now, membership_ttl)
    hosts = {p.hostname for p in live}
    members = live
    if me not in hosts:
        if own is None:
            return FleetShare(live=live, ownership=[], jobs=list(pending), member=False)
        # Joined "now" with a positive settle: joining, hence ranked last, whatever settle is.
        members = [*live, own.model_copy(update={"hostname": me, "heartbeat_at": now, "joined_at": now})]
        settle = max(settle, 1.0)
    # A dead host's registrations serve nobody: its runners went with it.
    serving = [r for r in runners if r.host in hosts or r.host == me]
    ownership = assign_jobs(me, pending, members, serving, now, hold_off, first_seen, settle)
    planned = {o.job for o in ownership if o.mine}
    return FleetShare(live=live, ownership=ownership, jobs=[j for j in pending if j.id in planned], member=me in hosts)


# --- forgetting a host that is gone for good ----------------------------------------------------


class FleetRegistration(Frozen):
    """A job-runner registration of some AutoGit host (this one included), as GitLab lists it this round."""

    id: int
    host: str
    status: str | None = Field(
        None, description="GitLab's REST status: online, offline, stale, never_contacted, or `paused` for a paused one, online or not."
    )
    busy: bool = Field(description="GitLab's running-job view lists a job running on it.")
    online: bool | None = Field(None, description="GitLab's `online`; None: not said (then `status` alone is read).")
    paused: bool = False
    contacted_at: UtcDatetime | None = Field(None, description="GitLab's contacted_at, where read; None: not read.")
    tags: TagSet = Field(default_factory=list)
    run_untagged: bool = False
    reach: str | None = None

    def takes_jobs(self) -> bool:
        """Whether its runner asks GitLab for jobs (a starting one included): not paused, and not
        offline or stale in GitLab's words."""
        return not self.paused and self.status not in ("paused", "offline", "stale")

    def may_be_alive(self, now: datetime, window: float) -> bool:
        """GitLab shows it online, or busy, or it contacted GitLab within `window` seconds, or its
        status says nothing certain: a registration that may still run a job is never deleted."""
        if self.busy or self.online is True or self.status == "online":
            return True
        if self.contacted_at is not None and (_as_utc(now) - self.contacted_at).total_seconds() < window:
            return True
        # GitLab says `paused` for a paused runner whether it is online or not (deprecated_rest_status):
        # without `online`, that says nothing about whether it still runs.
        return self.status == "paused" and self.online is None


# The name to_forget's callers used before the fleet read registrations whole.
Leftover = FleetRegistration


def fleet_runners(listing: Iterable[FleetRegistration]) -> list[PeerRunner]:
    """Every AutoGit host's runners as the fleet counts them, this host's own included, built the
    same way from GitLab's listing on every host (ISSUE 19, 5c): one that GitLab shows running a
    job, paused, offline or stale takes no new job; its tags and reach are GitLab's."""
    return [
        PeerRunner(host=r.host, tags=r.tags, run_untagged=r.run_untagged, idle=not r.busy and r.takes_jobs(), reach=r.reach)
        for r in sorted(listing, key=lambda r: r.id)
    ]


def membership_start(joined_at: datetime | None, own_read: Presence | None, now: datetime, membership_ttl: float) -> datetime:
    """When this host's current membership began: now at a start, or on a return after its peers saw
    it lapse (its presence was not read, or not live, e.g. after a network cut); it then ranks last
    until they have read it again (join_settle)."""
    if joined_at is None or own_read is None or not is_live(own_read, now, membership_ttl):
        return _as_utc(now)
    return joined_at


def to_forget(
    me: str,
    leftovers: Iterable[Leftover],
    presences: Iterable[Presence],
    presence_ids: Mapping[str, int],
    live_hosts: Iterable[str],
    now: datetime,
    forget_after: float,
) -> list[int]:
    """The registrations this host deletes for peers that are gone for good: a host whose
    presence has been silent `forget_after` or longer leaves job-runner registrations that GitLab
    shows running no job and not `online` (its runner asked for no job within GitLab's online
    window: nothing of it is left to run one), then, once none is left, its presence.

    Only a live member deletes, and of the live members only the one ranked first for the
    registration id, so one DELETE is sent per leftover, not one per host. A host that never
    published a presence (fleet off, or not AutoGit's fleet) is never touched."""
    live = sorted(set(live_hosts))
    if me not in live:
        return []
    now = _as_utc(now)
    silent = {
        p.hostname
        for p in presences
        if p.hostname != me and p.hostname not in live and (now - p.heartbeat_at).total_seconds() >= forget_after
    }
    out: list[int] = []
    remaining: set[str] = set()
    for reg in leftovers:
        if reg.host not in silent:
            continue
        if reg.may_be_alive(now, forget_after):
            remaining.add(reg.host)  # it may still run a job: GitLab's view decides, not ours
        elif rendezvous_order(reg.id, live)[0] == me:
            out.append(reg.id)
            remaining.add(reg.host)  # its presence goes in a later round, once the listing is empty
        else:
            remaining.add(reg.host)
    for host in sorted(silent - remaining):
        pid = presence_ids.get(host)
        if pid is not None and rendezvous_order(pid, live)[0] == me:
            out.append(pid)
    return out
