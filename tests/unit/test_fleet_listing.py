"""The fleet reads GitLab's listing whole (ISSUE 19, 5c and 5d).

5c: every host builds every host's runners, its own included, from the one listing with one
function: a paused (draining), offline or stale registration takes no new job. Before, a host took
its own runners from its containers and its peers' from registrations read as idle whatever their
state, so with a draining runner on each of two hosts each thought the other's served the job and
nobody started for it.

5d: GitLab's REST `status` is `paused` for a paused runner, online or not
(app/models/ci/runner.rb deprecated_rest_status); reading `status` alone, a host deleted a live
peer's paused registrations. `online` and `contacted_at` are read; one GitLab shows online, or that
contacted GitLab within forget_after, is never deleted.
"""

from __future__ import annotations

from datetime import timedelta

from autogit.agent.fleet import Claim, FleetRegistration, Presence, Room, fleet_runners, fleet_share, to_forget
from autogit.agent.model import Job

from test_fleet import NOW, presence


def draining(reg_id: int, host: str) -> FleetRegistration:
    # A runner its host stopped: paused in GitLab first (the planner's pause phase), job done.
    return FleetRegistration(id=reg_id, host=host, status="paused", online=True, paused=True, busy=False, tags=["amd64", "x86_64"], run_untagged=True)


def test_a_draining_runner_serves_no_job_on_any_host_so_its_owner_starts():
    hosts = [presence("host-a"), presence("host-b")]
    listing = [draining(1, "host-a"), draining(2, "host-b")]
    job = Job(id=42, project_id=1, tags=[], created_at=NOW)
    claims = {}
    for me in ("host-a", "host-b"):
        share = fleet_share(me, [job], hosts, fleet_runners(listing), NOW, hold_off=30, membership_ttl=90)
        (claims[me],) = share.ownership
    assert all(o.claim is not Claim.IDLE_RUNNER for o in claims.values()), claims
    assert [h for h, o in claims.items() if o.mine] == [claims["host-a"].owner]  # exactly one starts, at once


def test_the_listing_gives_each_registration_its_own_tags_reach_and_state():
    listing = [
        FleetRegistration(id=1, host="a", status="online", online=True, busy=False, tags=["gpu"], reach="project:1"),
        FleetRegistration(id=2, host="a", status="online", online=True, busy=True, tags=["gpu"]),
        FleetRegistration(id=3, host="b", status="offline", online=False, busy=False),
        FleetRegistration(id=4, host="b", status="never_contacted", online=False, busy=False),  # starting
    ]
    assert [(r.host, r.idle, r.reach) for r in fleet_runners(listing)] == [("a", True, "project:1"), ("a", False, None), ("b", False, None), ("b", True, None)]


def test_a_paused_registration_gitlab_shows_online_is_never_forgotten():
    forget_after = 7200.0
    gone = Presence(hostname="host-gone", version="1.0", arch="amd64", room=Room(slots=1), heartbeat_at=NOW - timedelta(seconds=3 * forget_after))
    live = [presence("host-a")]
    args = (live + [gone], {"host-gone": 900}, ["host-a"], NOW, forget_after)
    online_paused = FleetRegistration(id=10, host="host-gone", status="paused", online=True, paused=True, busy=False)
    unknown_paused = FleetRegistration(id=11, host="host-gone", status="paused", paused=True, busy=False)
    recent = FleetRegistration(id=12, host="host-gone", status="offline", online=False, busy=False, contacted_at=NOW - timedelta(seconds=60))
    assert to_forget("host-a", [online_paused, unknown_paused, recent], *args) == []
    offline_paused = online_paused.model_copy(update={"online": False})
    assert to_forget("host-a", [offline_paused], *args) == [10]
