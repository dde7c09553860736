"""Property tests of the fleet's choice (agent/fleet.py): for any live membership, queue, idle
runners and room, every host computes the same owners, and no job is started for twice."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, UTC

from hypothesis import given, settings
from hypothesis import strategies as st

from autogit.agent.fleet import (
    Claim, GpuClass, JobOwnership, Leftover, PeerRunner, Presence, Room, assign_jobs, fleet_share, join_settle, owners, should_start,
    to_forget,
)  # fmt: skip
from autogit.agent.model import Job

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HOLD_OFF = 30.0
HOSTS = [f"host-{c}" for c in "abcdef"]
TAG_POOL = ["amd64", "x86_64", "arm64", "riscv64", "gpu", "cuda", "nvidia", "h100", "l4", "vram-ge-24g", "docker", "big"]
GPU_CLASSES = [
    ["cc-9.0", "cuda", "gpu", "h100", "nvidia", "vram-80g"],
    ["cc-8.9", "cuda", "gpu", "l4", "nvidia", "vram-24g"],
    ["gfx942", "gpu", "amd", "rocm", "vram-192g"],
]

tag_sets = st.lists(st.sampled_from(TAG_POOL), max_size=3, unique=True)
rooms = st.builds(Room, slots=st.integers(0, 4), per_arch=st.dictionaries(st.sampled_from(["amd64", "arm64", "riscv64"]), st.integers(0, 2), max_size=1))


@st.composite
def gpu_classes(draw) -> list[GpuClass]:
    out = []
    for tags in draw(st.lists(st.sampled_from(GPU_CLASSES), max_size=2, unique_by=tuple)):
        count = draw(st.integers(1, 3))
        out.append(GpuClass(tags=tags, count=count, free=draw(st.integers(0, count))))
    return out


@st.composite
def memberships(draw, ample: bool = False) -> list[Presence]:
    names = draw(st.lists(st.sampled_from(HOSTS), min_size=1, max_size=len(HOSTS), unique=True))
    out = []
    for name in names:
        gpus = draw(gpu_classes())
        if ample:  # room for every job of the round: room never changes who owns what
            gpus = [g.model_copy(update={"count": 99, "free": 99}) for g in gpus]
        out.append(
            Presence(
                hostname=name,
                version="1.0",
                arch=draw(st.sampled_from(["amd64", "arm64"])),
                emulated=draw(st.lists(st.sampled_from(["arm64", "riscv64"]), unique=True)),
                extra_tags=draw(st.lists(st.sampled_from(["docker", "big"]), max_size=1)),
                gpus=gpus,
                room=Room(slots=99) if ample else draw(rooms),
                heartbeat_at=NOW,
            )
        )
    return out


def job_lists(max_age_s: float) -> st.SearchStrategy[list[Job]]:
    return st.lists(
        st.builds(
            Job,
            id=st.integers(1, 10_000),
            project_id=st.integers(1, 3),
            tags=tag_sets,
            created_at=st.floats(0, max_age_s).map(lambda s: NOW - timedelta(seconds=s)),
            reach=st.sampled_from([[], ["project:1", "group:9"], ["project:2"]]),
        ),
        max_size=20,
        unique_by=lambda j: j.id,
    )


peer_runners = st.lists(
    st.builds(PeerRunner, host=st.sampled_from([*HOSTS, "host-gone"]), tags=tag_sets, run_untagged=st.booleans(), idle=st.booleans(),
              reach=st.sampled_from([None, None, "project:1", "group:9"])),
    max_size=5,
)


def _views(live, jobs, runners, now=NOW) -> dict[str, dict[int, JobOwnership]]:
    return {p.hostname: {o.job: o for o in assign_jobs(p.hostname, jobs, live, runners, now, HOLD_OFF)} for p in live}


def _starters(views: dict[str, dict[int, JobOwnership]], job: int) -> list[str]:
    return [h for h, v in views.items() if v[job].mine and v[job].claim in (Claim.OWNER, Claim.TAKEOVER)]


@settings(max_examples=300, deadline=None)
@given(memberships(), job_lists(HOLD_OFF - 0.001), peer_runners)
def test_one_round_starts_each_job_on_exactly_one_host(live, jobs, runners):
    """Everyone evaluates the same view at the same now, every job pending < hold_off."""
    views = _views(live, jobs, runners)
    hosts = {p.hostname for p in live}
    for job in jobs:
        seen = [v[job.id] for v in views.values()]
        # Every host reaches the same verdict; only `mine`, `rank` and the wait differ.
        assert len({(o.claim if o.claim not in (Claim.OWNER, Claim.OWNED) else "ranked", o.owner, tuple(o.ranking)) for o in seen}) == 1
        starters = _starters(views, job.id)
        capable = owners(job, live)
        if seen[0].claim is Claim.IDLE_RUNNER:
            # Served by an idle runner of a live host: it plans for the job (its runner takes it), nobody starts.
            assert starters == [] and seen[0].owner in hosts
            assert [h for h, v in views.items() if v[job.id].mine] == [seen[0].owner]
            assert not any(should_start(job, h, live, NOW, None, HOLD_OFF, runners) for h in hosts)
        elif capable:
            # Servable: owned by exactly one live host that can serve it, which starts at once.
            assert starters == [seen[0].owner] and seen[0].owner in capable
            assert views[seen[0].owner][job.id].claim is Claim.OWNER
        else:
            # Nobody's profiles serve it: every planner sees it (and says why it waits), nobody starts.
            assert starters == [] and all(o.mine and o.claim is Claim.UNOWNED for o in seen)


@settings(max_examples=200, deadline=None)
@given(memberships(), job_lists(HOLD_OFF - 0.001), peer_runners)
def test_single_job_should_start_agrees_with_the_round(live, jobs, runners):
    # A round with one job is should_start's view: exactly one host starts unless an idle runner serves it.
    for job in jobs[:5]:
        starting = [p.hostname for p in live if should_start(job, p.hostname, live, NOW, None, HOLD_OFF, runners)]
        (alone,) = assign_jobs(live[0].hostname, [job], live, runners, NOW, HOLD_OFF)
        expected = 1 if alone.claim in (Claim.OWNER, Claim.OWNED) else 0
        assert len(starting) == expected


@settings(max_examples=200, deadline=None)
@given(memberships(), job_lists(600), peer_runners, st.randoms(use_true_random=False))
def test_ownership_is_stable_while_membership_is(live, jobs, runners, rnd: random.Random):
    views = _views(live, jobs, runners)
    # Reordered inputs: the same answer, host by host and job by job.
    shuffled = [list(x) for x in (live, jobs, runners)]
    for x in shuffled:
        rnd.shuffle(x)
    assert _views(*shuffled) == views
    # A job nobody's profiles serve changes nothing for the others.
    stranger = Job(id=99_999, project_id=1, tags=["no-such-hardware"], created_at=NOW)
    again = _views(live, [*jobs, stranger], runners)
    assert {h: {j: o for j, o in v.items() if j != stranger.id} for h, v in again.items()} == views


@settings(max_examples=200, deadline=None)
@given(memberships(ample=True), job_lists(600), st.builds(Job, id=st.integers(10_001, 20_000), project_id=st.integers(1, 3), tags=tag_sets, created_at=st.just(NOW)))
def test_with_room_to_spare_an_added_job_moves_no_other(live, jobs, extra):
    views = _views(live, jobs, [])
    again = _views(live, [*jobs, extra], [])
    assert {h: {j: o for j, o in v.items() if j != extra.id} for h, v in again.items()} == views
    # ... and the owner is simply the first host of the job's rendezvous order.
    for job in jobs:
        capable = owners(job, live)
        assert views[live[0].hostname][job.id].owner == (capable[0] if capable else None)


@settings(max_examples=300, deadline=None)
@given(memberships(), job_lists(HOLD_OFF - 0.001))
def test_removing_the_owner_hands_the_job_to_the_next_ranked_host(live, jobs):
    """Whatever the room: full hosts stand behind those with room, in both views."""
    for job in jobs:
        (before,) = assign_jobs(live[0].hostname, [job], live, [], NOW, HOLD_OFF)
        if before.owner is None:
            continue
        rest = [p for p in live if p.hostname != before.owner]
        if not rest:
            continue
        (after,) = assign_jobs(rest[0].hostname, [job], rest, [], NOW, HOLD_OFF)
        assert after.owner == (before.ranking[1] if len(before.ranking) > 1 else None)
        assert after.ranking == before.ranking[1:]
        # The new owner starts at once, whatever the job's age: it is rank 0 now.
        assert should_start(job, after.owner, rest, NOW, None, HOLD_OFF) if after.owner else True


@settings(max_examples=200, deadline=None)
@given(memberships(), job_lists(3600), st.sampled_from(HOSTS), peer_runners)
def test_a_job_only_one_host_can_serve_is_owned_by_it(live, jobs, only, runners):
    live = [p if p.hostname != only else p.model_copy(update={"extra_tags": [*p.extra_tags, "only-here"]}) for p in live]
    if only not in {p.hostname for p in live}:
        return
    special = Job(id=77_777, project_id=1, tags=["only-here"], created_at=NOW - timedelta(seconds=5 * HOLD_OFF))
    runners = [r for r in runners if "only-here" not in r.tags]
    for p in live:
        (o,) = [o for o in assign_jobs(p.hostname, [*jobs, special], live, runners, NOW, HOLD_OFF) if o.job == special.id]
        assert o.owner == only and o.ranking == [only]
        assert o.mine == (p.hostname == only)
    assert [p.hostname for p in live if should_start(special, p.hostname, live, NOW, None, HOLD_OFF)] == [only]


@settings(max_examples=200, deadline=None)
@given(memberships(), job_lists(0), st.integers(0, 7), st.floats(0, 0.999), peer_runners)
def test_after_k_hold_offs_at_most_k_plus_one_hosts_start(live, jobs, k, frac, runners):
    """The bound on duplicates while owners are unresponsive: ranks are distinct, rank r waits r × hold_off."""
    now = NOW + timedelta(seconds=(k + frac) * HOLD_OFF)
    views = _views(live, jobs, runners, now)
    for job in jobs:
        starters = _starters(views, job.id)
        assert len(starters) <= k + 1
        sample = next(iter(views.values()))[job.id]
        if sample.claim not in (Claim.IDLE_RUNNER, Claim.UNOWNED):
            # Exactly the first k + 1 of the takeover order, and the owner among them: every
            # servable job is owned by a live host that can serve it.
            assert sorted(starters) == sorted(sample.ranking[: k + 1])
            assert sample.owner in starters and sample.owner in owners(job, live)


@settings(max_examples=300, deadline=None)
@given(memberships(ample=True), job_lists(HOLD_OFF - 0.001), peer_runners, st.floats(0, 59.9))
def test_a_rejoining_host_starts_nothing_its_peers_start_while_they_cannot_see_it(live, jobs, runners, ago):
    """A host back from a network cut (or just started) sees itself and its peers; they do not
    see it yet (they read presences once per heartbeat). While it is settling, no job is started
    for by it and by a peer in the same round; once settled, it takes its share as before.
    (Peers with room: one without room owns a job only to wait for capacity, and a newcomer with
    room taking that job is the hand-over the design wants.)"""
    settle = join_settle(30.0)
    newcomer = Presence(hostname="host-new", version="1.0", arch="amd64", room=Room(slots=4), heartbeat_at=NOW,
                        joined_at=NOW - timedelta(seconds=ago))  # fmt: skip
    theirs = {p.hostname: {o.job: o for o in assign_jobs(p.hostname, jobs, live, runners, NOW, HOLD_OFF, settle=settle)} for p in live}
    its = {o.job: o for o in assign_jobs("host-new", jobs, [*live, newcomer], runners, NOW, HOLD_OFF, settle=settle)}
    for job in jobs:
        peer_starts = _starters(theirs, job.id)
        it_starts = its[job.id].mine and its[job.id].claim in (Claim.OWNER, Claim.TAKEOVER)
        assert not (it_starts and peer_starts), (job, peer_starts, its[job.id])
    if ago >= settle:  # settled: it ranks by hash again; some untagged job (it serves those) may go to it
        untagged = [j for j in jobs if not j.tags and not j.reach]
        assert all(its[j.id].ranking for j in untagged)


@settings(max_examples=200, deadline=None)
@given(memberships(ample=True), job_lists(HOLD_OFF - 0.001), peer_runners)
def test_a_host_its_peers_cannot_see_is_a_backstop_never_a_duplicate(live, jobs, runners):
    """Its presence refused, failing or lapsed: it ranks after every live peer, so within the
    first hold_off it starts for no job a live peer can serve; alone, it serves every job."""
    me = Presence(hostname="host-unseen", version="1.0", arch="amd64", room=Room(slots=4), heartbeat_at=NOW - timedelta(hours=1))
    share = fleet_share("host-unseen", jobs, [*live, me], runners, NOW, hold_off=HOLD_OFF, membership_ttl=90, own=me)
    assert not share.member
    peers = {p.hostname: {o.job: o for o in assign_jobs(p.hostname, jobs, live, runners, NOW, HOLD_OFF)} for p in live}
    for o in share.ownership:
        if o.mine and o.claim in (Claim.OWNER, Claim.TAKEOVER):
            assert _starters(peers, o.job) == [], o
    alone = fleet_share("host-unseen", jobs, [me], [], NOW, hold_off=HOLD_OFF, membership_ttl=90, own=me)
    servable = [j.id for j in jobs if owners(j, [me.model_copy(update={"heartbeat_at": NOW})])]
    assert set(servable) <= {j.id for j in alone.jobs}


leftover_lists = st.lists(
    st.builds(
        Leftover, id=st.integers(1, 500), host= st.sampled_from([*HOSTS, "host-gone", "not-in-fleet"]),
        status=st.sampled_from(["online", "offline", "stale", "never_contacted", "paused", None]), busy=st.booleans(),
        online=st.sampled_from([True, False, None]), paused=st.booleans(),
    ),
    max_size=12, unique_by=lambda r: r.id,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(memberships(), leftover_lists, st.floats(0, 3 * 3600), st.integers(1000, 2000))
def test_what_a_gone_host_left_is_deleted_once_and_never_while_it_may_run_a_job(live, leftovers, silent_s, presence_id):
    """Every live host computes to_forget from the same listing: each leftover is deleted by one
    host at most; never one GitLab shows busy or online, nor one of a host silent for less than
    forget_after or that published no presence; the presence goes last."""
    forget_after = 7200.0
    gone = Presence(hostname="host-gone", version="1.0", arch="amd64", room=Room(slots=1), heartbeat_at=NOW - timedelta(seconds=silent_s))
    presences = [*live, gone]
    ids = {"host-gone": presence_id}
    hosts = [p.hostname for p in live]
    deleted = [rid for h in hosts for rid in to_forget(h, leftovers, presences, ids, hosts, NOW, forget_after)]
    assert len(deleted) == len(set(deleted)), "a leftover deleted by two hosts"
    by_id = {r.id: r for r in leftovers}
    for rid in deleted:
        if rid == presence_id:
            assert not any(r.host == "host-gone" for r in leftovers), "the presence went before the host's registrations"
            continue
        reg = by_id[rid]
        # Never one GitLab shows busy or online (`online`, or a status that says so; `paused` alone says nothing).
        assert reg.host == "host-gone" and not reg.busy and reg.online is not True and reg.status != "online" and silent_s >= forget_after
        assert not (reg.status == "paused" and reg.online is None)
    if silent_s >= forget_after:
        assert {rid for rid in deleted if rid != presence_id} == {
            r.id for r in leftovers if r.host == "host-gone" and not r.may_be_alive(NOW, forget_after)
        }
    # a host that is not a live member itself deletes nothing
    assert to_forget("host-outsider", leftovers, presences, ids, hosts, NOW, forget_after) == []
