"""Property: one fleet, one scenario per host (each host as this host, all from the same view),
run as `autogit-agent plan` runs it (parse_scenario, plan_scenario). No job is planned on two
hosts at rank 0, and every job some live host can serve is planned by exactly one host until
its hold_off runs out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from autogit.agent import __version__
from autogit.agent.fleet import build_presence, runners_of
from autogit.agent.model import WaitReason
from autogit.agent.scenario import FleetReport, Scenario, parse_scenario, plan_scenario
from autogit.agent.tags import arch_tags

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HOLD_OFF = 30.0
GPUS = {
    "l4": {"id": "GPU-l4", "vendor": "nvidia", "model": "NVIDIA L4", "memory_mb": 23034},
    "h100": {"id": "GPU-h100", "vendor": "nvidia", "model": "NVIDIA H100 80GB HBM3", "memory_mb": 81559},
}
JOB_TAGS = [[], [], ["amd64"], ["x86_64"], ["arm64"], ["riscv64"], ["gpu"], ["gpu", "h100"], ["gpu", "l4"], ["s390x"], ["gpu", "arm64"]]


@st.composite
def hosts(draw, name: str) -> dict[str, Any]:
    """One host's own part of its scenario: host, policy, runners."""
    arch = draw(st.sampled_from(["amd64", "arm64"]))
    gpus = [{**GPUS[g], "id": f"{GPUS[g]['id']}-{name}"} for g in draw(st.lists(st.sampled_from(sorted(GPUS)), max_size=2, unique=True))]
    runners = [
        {"id": f"{name}-r{i}", "tags": sorted(arch_tags(arch)), "busy": busy, "idle_since": None if busy else "2026-11-27T11:59:00Z"}
        for i, busy in enumerate(draw(st.lists(st.booleans(), max_size=2)))
    ]
    return {
        "host": {"hostname": name, "arch": arch, "emulated": draw(st.lists(st.sampled_from(["amd64", "arm64", "riscv64"]), unique=True)),
                 "cpus": 8, "memory_mb": 16384, "gpus": gpus},
        "policy": {"max_runners": draw(st.integers(0, 3)), "emulation": draw(st.booleans()), "gpus": draw(st.booleans()),
                   "paused": draw(st.sampled_from([False, False, False, True]))},
        "runners": runners,
    }  # fmt: skip


@st.composite
def fleets(draw) -> tuple[list[dict[str, Any]], dict[str, Any] | None, list[dict[str, Any]]]:
    """Live hosts (2 to 4), maybe a dead one, and a queue of jobs pending 0 to 100 s."""
    live = [draw(hosts(f"host-{i}")) for i in range(draw(st.integers(2, 4)))]
    dead = draw(st.one_of(st.none(), hosts("host-dead")))
    ages = st.floats(0, 100).map(lambda s: (NOW - timedelta(seconds=s)).isoformat())
    jobs = draw(
        st.lists(
            st.fixed_dictionaries(
                {"id": st.integers(1, 999), "project_id": st.integers(1, 3), "tags": st.sampled_from(JOB_TAGS), "created_at": ages}
            ),
            max_size=12,
            unique_by=lambda j: j["id"],
        )
    )
    return live, dead, jobs


def published(own: dict[str, Any], heartbeat: datetime) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What the other hosts read of this one: its presence (by field name) and its runners."""
    scenario = Scenario.model_validate({"now": NOW, **own})
    runners = scenario.planner_runners()
    presence = build_presence(scenario.host, runners, scenario.policy, version=__version__, now=heartbeat)
    return presence.model_dump(mode="json"), [r.model_dump(mode="json") for r in runners_of(scenario.host.hostname, runners)]


def run_fleet(live: list[dict[str, Any]], dead: dict[str, Any] | None, jobs: list[dict[str, Any]]) -> dict[str, tuple[Any, FleetReport]]:
    views = {o["host"]["hostname"]: published(o, NOW - timedelta(seconds=5)) for o in live}
    if dead is not None:
        views["host-dead"] = published(dead, NOW - timedelta(seconds=600))
    out = {}
    for own in live:
        me = own["host"]["hostname"]
        fleet = {
            "hold_off": HOLD_OFF,
            "peers": [p for name, (p, _) in views.items() if name != me],
            "peer_runners": [r for name, (_, rs) in views.items() if name != me for r in rs],
        }
        scenario = parse_scenario(json.dumps({"now": NOW.isoformat(), **own, "jobs": jobs, "fleet": fleet}))
        plan, report = plan_scenario(scenario)
        assert report is not None and report.member
        out[me] = (plan, report)
    return out


@settings(max_examples=300, deadline=None)
@given(fleets())
def test_each_job_is_planned_by_one_host(fleet):
    live, dead, jobs = fleet
    results = run_fleet(live, dead, jobs)
    for j in jobs:
        places = {me: next(o for o in report.ownership if o.job == j["id"]) for me, (_, report) in results.items()}
        # Same view, same answer: every host names the same owner and order.
        assert len({(o.owner, tuple(o.ranking)) for o in places.values()}) == 1, places
        # Rank 0 is one host, whatever the job's age.
        assert sum(o.claim == "owner" for o in places.values()) <= 1
        if any(o.claim == "unowned" for o in places.values()):
            assert all(o.claim == "unowned" for o in places.values())  # each host's planner says why it waits
            continue
        planners = [me for me, (_, report) in results.items() if j["id"] in report.planned]
        acting = [
            me for me, (plan, _) in results.items() if j["id"] in {x for s in plan.start for x in s.for_jobs} | {s.job for s in plan.served}
        ]
        assert len(acting) <= len(planners)
        pending_s = (NOW - datetime.fromisoformat(j["created_at"])).total_seconds()
        if pending_s < HOLD_OFF:
            assert len(planners) == 1, (j, places)
            owner = planners[0]
            assert owner == next(iter(places.values())).owner
            # The owner's own planner can carry the job: what the fleet read from its presence is true.
            wait = next((w for w in results[owner][0].waiting if w.job == j["id"]), None)
            assert wait is None or wait.reason not in (WaitReason.NO_MATCHING_HARDWARE, WaitReason.EMULATION_DISABLED), wait
