"""The operator's view of the fleet (fleet.enabled): the console's fleet tab and `autogit-agent
status`, against the project's real API server fed by the fleet scenario (tui_harness.py:
gpu-box-1 and gpu-box-2 live, gpu-box-3 gone), and `status` against an older agent that has no
GET /v1/fleet."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from tui_harness import AgentServer, build_app, make_fleet_state, make_state, socket_dir, wait_until

from autogit.agent.api import views
from autogit.tui.widgets.tables import FleetTable


@pytest.fixture
def fleet_agent() -> Iterator[AgentServer]:
    server = AgentServer(make_fleet_state(), socket_dir()).start()
    yield server
    server.close()


def cell_text(table: FleetTable, row_key: str, column: str) -> str:
    value = table.get_cell(row_key, column)
    return getattr(value, "plain", value)


def columns(table: FleetTable) -> list[str]:
    return [str(key.value) for key in table.columns]


async def test_fleet_tab_shows_each_hosts_membership(fleet_agent: AgentServer) -> None:
    app = build_app(fleet_agent.path)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(pilot, lambda: app.connection == "connected" and app.fleet is not None, what="the first load")
        await pilot.press("4")
        table = app.screen.query_one(FleetTable)
        await wait_until(pilot, lambda: table.row_count == 9, what="the fleet's rows")
        assert columns(table)[:4] == ["host", "live", "room", "owns"] and "platform" not in columns(table)
        box2, box3 = "gpu-box-2/autogit-gpu-box-2-gpu-8d0e4a1c55", "gpu-box-3/autogit-gpu-box-3-native-0b9a7c6d4e"
        assert [cell_text(table, box2, c) for c in ("live", "room", "owns", "state")] == ["live 12s", "2", "9016,9018", "online"]
        assert [cell_text(table, box3, c) for c in ("live", "room", "owns", "state")] == ["gone 6m00s", "0", "-", "offline"]
        # Host-level cells only on a host's first row.
        assert cell_text(table, "gpu-box-2/autogit-gpu-box-2-native-3c1f9e0a2b", "live") == ""

        # The fleet is turned off: the next read has no verdicts, and the tab is as without the fleet.
        def fleet_off(state) -> None:
            state.presences, state.live_hosts, state.ownership = [], set(), []
            state.bus.publish("runner.removed", "runner gone", runner="x")

        fleet_agent.in_loop(fleet_off, fleet_agent.state)
        await wait_until(pilot, lambda: "live" not in columns(table), what="the fleet columns to go")
        assert columns(table) == ["host", "runner", "state", "tags", "job", "age"] and table.row_count == 9


def agent_cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("autogit-agent", path=str(Path(sys.executable).parent))
    assert exe, "autogit-agent console script is not installed in this environment"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)


def test_status_has_a_fleet_section_when_the_fleet_is_on(fleet_agent: AgentServer) -> None:
    proc = agent_cli("status", "--socket", fleet_agent.path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("gpu-box-1: amd64") and "\nfleet: 3 host(s), 2 live\n" in out
    lines = {line.split(":", 1)[0].strip(): line for line in out.splitlines() if line.startswith("  gpu-box-")}
    assert lines["gpu-box-2"].startswith("  gpu-box-2: live (heartbeat ")
    assert "profiles arm64, amd64 (emulated), 2× cuda gpu l4; room 2; owns 9016, 9018; 2 runners" in lines["gpu-box-2"]
    assert lines["gpu-box-3"].startswith("  gpu-box-3: DEAD (heartbeat ") and "room 0; owns none; 1 runner" in lines["gpu-box-3"]
    assert "    job 9018 owned by gpu-box-2 (this host rank 1, takes over in 10 s)" in out


def test_status_json_stays_the_status_document_and_fleet_json_is_the_fleet(fleet_agent: AgentServer) -> None:
    status = agent_cli("status", "--json", "--socket", fleet_agent.path)
    assert status.returncode == 0 and json.loads(status.stdout)["hostname"] == "gpu-box-1" and "hosts" not in json.loads(status.stdout)
    fleet = agent_cli("status", "--fleet", "--json", "--socket", fleet_agent.path)
    assert fleet.returncode == 0, fleet.stderr
    hosts = {h["hostname"]: h for h in json.loads(fleet.stdout)["hosts"]}
    assert (hosts["gpu-box-2"]["live"], hosts["gpu-box-3"]["live"], hosts["gpu-box-2"]["owns"]) == (True, False, [9016, 9018])
    text = agent_cli("status", "--fleet", "--socket", fleet_agent.path)
    assert text.returncode == 0 and text.stdout.startswith("fleet: 3 host(s), 2 live\n")


def test_status_without_the_fleet_has_no_fleet_section() -> None:
    server = AgentServer(make_state(), socket_dir()).start()
    try:
        proc = agent_cli("status", "--socket", server.path)
        assert proc.returncode == 0, proc.stderr
        assert "fleet" not in proc.stdout and proc.stdout.startswith("gpu-box-1: amd64")
        off = agent_cli("status", "--fleet", "--socket", server.path)
        assert off.stdout == "fleet: off (fleet.enabled is false); 1 host(s) on this GitLab\n"
    finally:
        server.close()


class OlderAgent:
    """An agent from before GET /v1/fleet: its status, and 404 for everything else."""

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "old.sock")
        status = views.status_view(make_state(), "gpu-box-1").model_dump_json()
        missing = json.dumps({"error": {"type": "not_found", "message": "no such resource"}})

        async def answer_status(_: web.Request) -> web.Response:
            return web.Response(text=status, content_type="application/json")

        async def not_found(_: web.Request) -> web.Response:
            return web.Response(status=404, text=missing, content_type="application/json")

        app = web.Application()
        app.router.add_get("/v1/status", answer_status)
        app.router.add_route("*", "/{tail:.*}", not_found)
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        await self.runner.setup()
        await web.UnixSite(self.runner, self.path).start()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_status_survives_an_agent_without_the_fleet_endpoint() -> None:
    old = OlderAgent(socket_dir())
    try:
        proc = agent_cli("status", "--socket", old.path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("gpu-box-1: amd64")
        assert proc.stdout.splitlines()[-1] == "fleet: unavailable (404 not_found: no such resource)"
        fleet = agent_cli("status", "--fleet", "--socket", old.path)
        assert fleet.returncode == 69 and fleet.stderr.strip() == "autogit-agent: 404 not_found: no such resource"
    finally:
        old.close()

