"""The console's pure parts: diagnosis of connection failures, queue grouping, renderers."""

from __future__ import annotations

import errno
import socket

import aiohttp
import pytest
from tui_harness import NOW, make_fleet_state, make_state

from autogit.agent.api import views
from autogit.agent.api.client import AgentApiError, AgentClient, AgentUnavailable
from autogit.tui.data import age, bar, diagnose, fleet_detail, fleet_from_payload, group_queue, resources_for_event, spark


async def test_missing_socket_is_diagnosed(tmp_path) -> None:
    path = str(tmp_path / "nope.sock")
    async with AgentClient(path) as client:
        with pytest.raises(AgentUnavailable) as info:
            await client.status()
    problem = diagnose(info.value, path)
    assert problem.kind == "missing" and "systemctl status autogit-agent" in problem.fixes


async def test_stale_socket_is_diagnosed(tmp_path) -> None:
    path = str(tmp_path / "stale.sock")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.close()  # the file stays; nobody listens
    async with AgentClient(path) as client:
        with pytest.raises(AgentUnavailable) as info:
            await client.status()
    assert diagnose(info.value, path).kind == "refused"


def test_permission_denied_names_the_group() -> None:
    # What the client raises for EACCES on connect() (as root we cannot provoke a real one).
    os_error = PermissionError(errno.EACCES, "Permission denied")
    key = aiohttp.client_reqrep.ConnectionKey("autogit", 80, False, True, None, None, None)
    cause = aiohttp.ClientConnectorError(key, os_error)
    try:
        raise AgentUnavailable("agent at /run/autogit/agent.sock: permission denied") from cause
    except AgentUnavailable as exc:
        problem = diagnose(exc, "/run/autogit/agent.sock")
    assert problem.kind == "permission"
    assert any("usermod -aG autogit $USER" in fix for fix in problem.fixes)


def test_other_api_version() -> None:
    problem = diagnose(AgentApiError(200, "bad_response", "unexpected answer to /v1/status"), "/x.sock")
    assert problem.kind == "incompatible"


def test_queue_groups_are_sorted_and_carry_the_planners_reason() -> None:
    groups = group_queue(views.jobs_view(make_state()).jobs)
    assert [g.key for g in groups] == sorted(g.key for g in groups)
    s390x = next(g for g in groups if g.key == "s390x")
    assert s390x.waiting == 1 and s390x.reason.startswith("no-matching-hardware")
    assert sum(g.jobs for g in groups) == 12


def test_event_kinds_map_to_resources() -> None:
    assert resources_for_event("gpu.drained") == {"gpus", "status"}
    assert "jobs" in resources_for_event("runner.started")
    assert resources_for_event("api.refused") == frozenset()
    assert resources_for_event("something.new") >= {"status", "gpus", "runners", "jobs"}


def test_renderers() -> None:
    assert bar(50, 4).plain == "██░░  50%"
    assert bar(None, 4).plain.strip() == "?"
    assert spark([0, 50, 100, None], 6).plain == "  ▁▅█·"
    assert [age(s) for s in (5, 65, 700, 3700, 90000)] == ["5s", "1m05s", "11m", "1h01m", "1d01h"]


def test_fleet_payload_groups_hosts_this_host_first() -> None:
    payload = {"hosts": [
        {"hostname": "b-host", "runners": [{"id": "b-2", "state": "idle"}, {"id": "b-1", "state": "busy", "job": 4}]},
        {"hostname": "a-host", "runners": []},
        {"hostname": "me", "runners": [{"id": "m-1", "state": "idle", "tags": ["amd64"]}]},
    ]}
    hosts = fleet_from_payload(payload, "me")
    assert [h.hostname for h in hosts] == ["me", "a-host", "b-host"]
    assert [r.id for r in hosts[2].runners] == ["b-1", "b-2"]


def test_fleet_payload_carries_each_hosts_membership() -> None:
    # The agent's own /v1/fleet view of the fleet scenario, through the wire as the app reads it.
    payload = views.fleet_view(make_fleet_state(), "gpu-box-1").model_dump(mode="json")
    hosts = {h.hostname: h for h in fleet_from_payload(payload, "gpu-box-1")}
    me, box2, box3 = hosts["gpu-box-1"], hosts["gpu-box-2"], hosts["gpu-box-3"]
    assert (me.this_host, me.live, box2.live, box3.live) == (True, True, True, False)
    assert me.liveness(NOW) == "live 5s" and box2.liveness(NOW) == "live 12s" and box3.liveness(NOW) == "gone 6m00s"
    assert box2.profiles == ("arm64", "amd64 (emulated)", "2× cuda gpu l4") and box3.profiles == ("amd64", "docker")
    assert (me.room, box2.room, box3.room) == (2, 2, 0)
    assert box2.owns == (9016, 9018) and box3.owns == () and 9003 in me.owns
    assert [r.id for r in box3.runners] == ["autogit-gpu-box-3-native-0b9a7c6d4e"] and box3.runners[0].state == "offline"


def test_fleet_payload_without_the_fleet_reads_as_before() -> None:
    # fleet.enabled off (live null), an older agent (no such keys) and a newer one (keys unknown here).
    payload = {"hosts": [
        {"hostname": "me", "runners": [], "live": None, "profiles": [], "room": None, "owns": []},
        {"hostname": "old", "runners": [{"id": "o-1", "state": "online"}]},
        {"hostname": "new", "runners": [], "live": True, "heartbeat_at": "2026-11-27T11:59:30Z", "uptime": 3, "profiles": ["amd64"], "room": 1},
    ]}
    me, new, old = fleet_from_payload(payload, "me")
    assert (me.live, me.profiles, me.room, me.owns, me.liveness(NOW)) == (None, (), None, (), "")
    assert (old.live, old.heartbeat_at, [r.id for r in old.runners]) == (None, None, ["o-1"])
    assert (new.live, new.liveness(NOW), new.profiles, new.room, new.owns) == (True, "live 30s", ("amd64",), 1, ())


def test_fleet_detail_names_liveness_profiles_room_and_owned_jobs() -> None:
    payload = views.fleet_view(make_fleet_state(), "gpu-box-1").model_dump(mode="json")
    hosts = {h.hostname: h for h in fleet_from_payload(payload, "gpu-box-1")}
    gone = dict(fleet_detail(hosts["gpu-box-3"], None, NOW))
    assert gone["Fleet"] == "gone (presence older than fleet.membership_ttl), last heartbeat 6m00s ago"
    assert (gone["Profiles"], gone["Room"], gone["Owns"]) == ("amd64, docker", "0 more runner(s)", "no pending job")
    live = dict(fleet_detail(hosts["gpu-box-2"], hosts["gpu-box-2"].runners[0], NOW))
    assert live["Fleet"] == "live, heartbeat 12s ago" and live["Owns"] == "#9016, #9018" and live["Runner"].startswith("autogit-gpu-box-2-")
    off = dict(fleet_detail(fleet_from_payload({"hosts": [{"hostname": "me", "runners": []}]}, "me")[0], None, NOW))
    assert "Fleet" not in off and "Owns" not in off


def test_a_newcomer_shows_when_it_joined() -> None:
    payload = {"hosts": [{"hostname": "new", "runners": [], "live": True, "heartbeat_at": "2026-11-27T11:59:30Z",
                          "joined_at": "2026-11-27T11:59:20Z", "profiles": ["amd64"], "room": 2}]}  # fmt: skip
    (new,) = fleet_from_payload(payload, "me")
    detail = dict(fleet_detail(new, None, NOW))
    assert detail["Joined"] == "40s ago (a newcomer ranks last for 2 × fleet.heartbeat_interval)"
    assert "Joined" not in dict(fleet_detail(fleet_from_payload({"hosts": [{**payload["hosts"][0], "joined_at": None}]}, "me")[0], None, NOW))
