"""`autogit-agent status`'s fleet section, from the /v1/fleet document: one line per host with
its liveness and heartbeat age, profiles, room, owned jobs and runner count, then the ownership
lines. Pure formatting: the document is built here, the clock is an argument."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from autogit.agent.api.client import fleet_is_on, format_fleet
from autogit.agent.api.schema import FleetHost, FleetResponse, FleetRunner

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _runner(rid: str, state: str = "online") -> FleetRunner:
    return FleetRunner(id=rid, state=state)


def fleet_on() -> FleetResponse:
    return FleetResponse(
        hosts=[
            FleetHost(hostname="gpu-box-1", runners=[_runner("a1", "busy"), _runner("a2", "idle")], live=True, heartbeat_at=NOW - timedelta(seconds=5),
                      profiles=["amd64", "arm64 (emulated)", "1× cuda gpu h100"], room=3, owns=[9010, 9011]),
            FleetHost(hostname="gpu-box-2", runners=[_runner("b1")], live=True, heartbeat_at=NOW - timedelta(seconds=12),
                      joined_at=NOW - timedelta(seconds=40), profiles=["arm64"], room=0, owns=[9018]),
            FleetHost(hostname="gpu-box-3", runners=[_runner("c1", "offline")], live=False, heartbeat_at=NOW - timedelta(minutes=6),
                      profiles=["amd64", "docker"], room=1),
            # Registrations of an agent that runs without the fleet: no presence, no verdict.
            FleetHost(hostname="old-box", runners=[]),
        ],
        ownership=["job 9018 owned by gpu-box-2 (this host rank 1, takes over in 10 s)"],
    )  # fmt: skip


def test_one_line_per_host_with_liveness_profiles_room_and_owned_jobs() -> None:
    lines = format_fleet(fleet_on(), NOW).splitlines()
    assert lines[0] == "fleet: 4 host(s), 2 live"
    assert lines[1] == "  gpu-box-1: live (heartbeat 5 s ago); profiles amd64, arm64 (emulated), 1× cuda gpu h100; room 3; owns 9010, 9011; 2 runners"
    assert lines[2] == "  gpu-box-2: live (heartbeat 12 s ago, joined 40 s ago); profiles arm64; room 0; owns 9018; 1 runner"
    assert lines[3] == "  gpu-box-3: DEAD (heartbeat 6 min ago); profiles amd64, docker; room 1; owns none; 1 runner"
    assert lines[4] == "  old-box: no presence; profiles -; room ?; owns none; 0 runners"


def test_ownership_lines_follow_the_hosts() -> None:
    lines = format_fleet(fleet_on(), NOW).splitlines()
    assert lines[5:] == [
        "  ownership (pending jobs this host leaves to others):",
        "    job 9018 owned by gpu-box-2 (this host rank 1, takes over in 10 s)",
    ]


def test_heartbeat_ages_read_in_the_unit_that_fits() -> None:
    doc = fleet_on()
    hosts = [doc.hosts[0], doc.hosts[1].model_copy(update={"heartbeat_at": None}),
             doc.hosts[2].model_copy(update={"heartbeat_at": NOW - timedelta(hours=3, minutes=10)})]  # fmt: skip
    text = format_fleet(doc.model_copy(update={"hosts": hosts}), NOW)
    assert "gpu-box-3: DEAD (heartbeat 3 h ago)" in text
    assert "gpu-box-2: live (heartbeat no heartbeat" not in text and "gpu-box-2: live (no heartbeat, joined 40 s ago)" in text


def test_fleet_off_is_not_a_section_of_status() -> None:
    off = FleetResponse(hosts=[FleetHost(hostname="gpu-box-1", runners=[_runner("a1")]), FleetHost(hostname="gpu-box-2", runners=[])])
    assert not fleet_is_on(off)
    assert fleet_is_on(fleet_on())
    assert format_fleet(off, NOW) == "fleet: off (fleet.enabled is false); 2 host(s) on this GitLab"
