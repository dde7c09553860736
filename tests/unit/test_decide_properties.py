"""Property tests of `decide` and of the fleet's view (ISSUE 19):

- a runner that is busy, or whose busy state is unknown, is never stopped, aborted or killed
  before its deadline;
- one bad row never hides the others: the lifecycle of each runner is decided from its own row,
  and a job nobody here can serve changes nothing for the other jobs;
- every host of a fleet computes the same ownership from the same GitLab listing, each building
  the runner list itself (in its own read order), its own runners included (5c).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, UTC

from hypothesis import given, settings
from hypothesis import strategies as st

from autogit.agent.fleet import Claim, FleetRegistration, fleet_runners, fleet_share
from autogit.agent.model import (
    BusyEvidence,
    Host,
    Job,
    Lifecycle,
    Observation,
    Policy,
    QueueRead,
    RegistrationState,
    Runner,
    RunnerStatus,
    UnreadProject,
)
from autogit.agent.planner import decide

from test_fleet_properties import HOLD_OFF, HOSTS, job_lists, memberships, tag_sets

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HOST = Host(hostname="h", arch="amd64", emulated=["arm64"], cpus=16, memory_mb=65536)
LIFE = Lifecycle(drain_timeout=600, force_timeout=30, kill_grace=10)
REACHES = [None, "project:1", "project:2", "group:9"]


def moment(max_s: float) -> st.SearchStrategy[datetime | None]:
    return st.one_of(st.none(), st.floats(0, max_s).map(lambda s: NOW - timedelta(seconds=s)))


@st.composite
def runner_rows(draw, index: int) -> Runner:
    busy = draw(st.booleans())
    gitlab_id = draw(st.one_of(st.none(), st.integers(1, 50)))
    registration = None
    if gitlab_id is not None and draw(st.booleans()):
        registration = RegistrationState(
            id=gitlab_id, paused=draw(st.booleans()), status=draw(st.sampled_from(["online", "offline", "never_contacted", "paused", None]))
        )
    return Runner(
        id=f"r{index}",
        tags=draw(st.sampled_from([["amd64", "x86_64"], ["arm64"], ["amd64", "x86_64", "docker"]])),
        run_untagged=draw(st.booleans()),
        reach=draw(st.sampled_from(REACHES)),
        busy=busy,
        busy_by=draw(st.sampled_from([None, BusyEvidence.UNKNOWN, BusyEvidence.LOCAL] if not busy else [BusyEvidence.GITLAB, BusyEvidence.LOCAL])),
        idle_since=None if busy else draw(moment(5000)),
        draining=draw(st.booleans()),
        status=draw(st.sampled_from(list(RunnerStatus))),
        started_at=draw(moment(5000)),
        stop_requested_at=draw(moment(1200)),
        abort_requested_at=draw(moment(100)),
        gitlab_id=gitlab_id,
        registration=registration,
        missing_strikes=draw(st.integers(0, 3)),
        operator_drain=draw(st.booleans()),
        gpu=draw(st.sampled_from([None, None, "GPU-gone"])),
    )


@st.composite
def observations(draw) -> Observation:
    n = draw(st.integers(0, 8))
    runners = [draw(runner_rows(i)) for i in range(n)]
    jobs = [
        Job(id=i, project_id=draw(st.integers(1, 3)), tags=draw(tag_sets), created_at=NOW - timedelta(seconds=draw(st.integers(0, 900))),
            reach=draw(st.sampled_from([[], ["project:1"], ["project:2"]])))
        for i in range(draw(st.integers(0, 8)))
    ]  # fmt: skip
    unread = draw(st.lists(st.builds(UnreadProject, project_id=st.integers(1, 3), reach=st.sampled_from(REACHES)), max_size=2))
    queue = QueueRead(complete=not unread, unread=unread, fresh=draw(st.booleans()))
    policy = Policy(max_runners=draw(st.integers(0, 6)), idle_timeout=draw(st.sampled_from([0, 60, 600])), pickup_timeout=60,
                    warm_pool=draw(st.integers(0, 2)), runner_cpus=1, runner_memory_mb=1024, reserved_cpus=0, reserved_memory_mb=0)  # fmt: skip
    return Observation(host=HOST, runners=runners, jobs=jobs, policy=policy, now=NOW, queue=queue, lifecycle=LIFE)


def _busy_or_unknown(runner: Runner, queue: QueueRead) -> bool:
    if runner.busy or runner.busy_by is BusyEvidence.UNKNOWN:
        return True
    return any(runner.reach is None or u.reach is None or runner.reach == u.reach for u in queue.unread)


@settings(max_examples=300, deadline=None)
@given(observations())
def test_a_busy_or_unknown_runner_is_never_stopped_aborted_or_killed_before_its_deadline(obs: Observation):
    p = decide(obs)
    by_id = {r.id: r for r in obs.runners}
    removed = {r.runner for r in p.remove}
    for stop in p.stop:
        runner = by_id[stop.runner]
        assert not _busy_or_unknown(runner, obs.queue), (stop, runner)
        assert runner.stop_requested_at is None  # never asked twice
    for abort in p.abort:
        runner = by_id[abort.runner]
        assert runner.stop_requested_at is not None and NOW - runner.stop_requested_at > timedelta(seconds=LIFE.drain_timeout)
    for kill in p.kill:
        runner = by_id[kill.runner]
        assert runner.abort_requested_at is not None
        assert NOW - runner.abort_requested_at > timedelta(seconds=LIFE.force_timeout + LIFE.kill_grace)
    # A removal takes only what has ended or is not running (a running orphan needs two strikes).
    for name in removed:
        runner = by_id[name]
        assert runner.status is RunnerStatus.EXITED or runner.status is not RunnerStatus.RUNNING or runner.missing_strikes >= 2
        assert runner.status is not RunnerStatus.UNKNOWN or runner.gitlab_id is not None
    # Every action names a runner that exists, once.
    acted = [a.runner for a in (*p.stop, *p.drain, *p.abort, *p.kill, *p.remove)]
    assert set(acted) <= set(by_id)
    assert len([a.runner for a in (*p.stop, *p.drain)]) == len({a.runner for a in (*p.stop, *p.drain)})


@settings(max_examples=200, deadline=None)
@given(observations())
def test_one_runner_row_never_changes_another_runners_lifecycle(obs: Observation):
    whole = decide(obs)
    for runner in obs.runners:
        alone = decide(obs.model_copy(update={"runners": [runner]}))
        for field in ("remove", "abort", "kill"):
            mine = [a for a in getattr(whole, field) if a.runner == runner.id]
            assert mine == getattr(alone, field), (field, runner)


@settings(max_examples=200, deadline=None)
@given(observations(), st.sampled_from([["s390x"], ["gpu", "h100"], ["arm64", "gpu"]]))
def test_a_job_nobody_here_can_serve_hides_none_of_the_others(obs: Observation, impossible: list[str]):
    # A project of its own: in a project shared with others, the bad job takes that project's turn
    # in the fair order (round-robin over projects) and may reorder equals; it never hides them.
    bad = Job(id=10_000, project_id=99_999, tags=impossible, created_at=NOW - timedelta(seconds=1))
    before = decide(obs)
    after = decide(obs.model_copy(update={"jobs": [*obs.jobs, bad]}))
    # Visited in fair order, the bad job may move others in the lists: compare per job.
    assert {w.job: w for w in after.waiting if w.job != bad.id} == {w.job: w for w in before.waiting}
    assert {s.job: s for s in after.served} == {s.job: s for s in before.served}
    assert sorted(map(repr, after.start)) == sorted(map(repr, before.start)) and after.stop == before.stop
    assert any(w.job == bad.id for w in after.waiting)


listings = st.lists(
    st.builds(
        FleetRegistration,
        id=st.integers(1, 500),
        host=st.sampled_from(HOSTS),
        status=st.sampled_from(["online", "offline", "stale", "never_contacted", "paused", None]),
        busy=st.booleans(),
        online=st.sampled_from([True, False, None]),
        paused=st.booleans(),
        tags=tag_sets,
        run_untagged=st.booleans(),
        reach=st.sampled_from([None, "project:1", "project:2"]),
    ),
    max_size=12,
    unique_by=lambda r: r.id,
)


@settings(max_examples=200, deadline=None)
@given(memberships(), job_lists(120), listings, st.randoms(use_true_random=False))
def test_every_host_computes_the_same_ownership_from_the_same_listing(live, pending, listing, rnd: random.Random):
    """Each host reads the listing itself (in its own order) and builds every host's runners, its
    own included, with the one function; they agree on every job's owner, and at most one host
    starts for a job at rank 0."""
    shares = {}
    for presence in live:
        view = list(listing)
        rnd.shuffle(view)
        shares[presence.hostname] = fleet_share(
            presence.hostname, pending, live, fleet_runners(view), NOW, hold_off=HOLD_OFF, membership_ttl=90
        )
    for job in pending:
        owned = {h: next(o for o in share.ownership if o.job == job.id) for h, share in shares.items()}
        assert len({(o.owner, o.claim if o.claim in (Claim.IDLE_RUNNER, Claim.UNOWNED) else None) for o in owned.values()}) == 1, owned
        starters = [h for h, o in owned.items() if o.mine and o.claim is Claim.OWNER]
        assert len(starters) <= 1, (job, starters)
