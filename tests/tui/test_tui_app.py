"""The console driven with Pilot against the project's real API server on a real unix socket."""

from __future__ import annotations

import os

from ci_policy import needs
from aiohttp import web
from tui_harness import build_app, jobs_started, wait_until
from tui_harness import H100, L4, LONG_RUNNER, NOW, AgentServer, Relay, _runner, gpu_appears, gpu_vanishes, jobs_arrive, make_state, runner_started, socket_dir

from autogit.agent.model import Gpu, GpuVendor, Job
from autogit.agent.state import GpuReading
from autogit.tui.screens.confirm import ConfirmScreen
from autogit.tui.screens.disconnected import DisconnectedScreen
from autogit.tui.screens.help import HelpScreen
from autogit.tui.screens.main import MainScreen
from autogit.tui.widgets.events import EventLog
from autogit.tui.widgets.tables import FleetTable, GpuTable, QueueTable, RunnerTable


def cell_text(table, row_key: str, column: str) -> str:
    value = table.get_cell(row_key, column)
    return getattr(value, "plain", value)


async def connected(pilot) -> None:
    app = pilot.app
    await wait_until(pilot, lambda: app.connection == "connected" and app.jobs is not None, what="the first load")
    await pilot.pause()


async def test_first_load_fills_every_view(agent: AgentServer) -> None:
    app = build_app(agent.path)
    async with app.run_test(size=(120, 36)) as pilot:
        await connected(pilot)
        gpus = app.screen.query_one(GpuTable)
        assert gpus.row_count == 4
        assert cell_text(gpus, H100, "state") == "busy"
        assert cell_text(gpus, "0000:03:00.0", "state") == "UNHEALTHY"
        assert cell_text(gpus, "0000:c1:00.0", "util").strip() == "?"  # unknown is not 0 %
        assert app.screen.query_one(RunnerTable).row_count == 0  # hidden tabs are built when shown
        await pilot.press("2")
        assert app.screen.query_one(RunnerTable).row_count == 6
        await pilot.press("3")
        queue = app.screen.query_one(QueueTable)
        assert cell_text(queue, "s390x", "reason").startswith("no-matching-hardware")
        await pilot.press("4")
        fleet = app.screen.query_one(FleetTable)
        assert fleet.row_count == 6
        log = app.screen.query_one("#event-log", EventLog)
        await wait_until(pilot, lambda: len(log.events) == 6, what="the replayed history")
        assert log.events[-1].type == "gpu.unhealthy"
        await pilot.press("2")
        assert app.screen.active_tab == "runners"
        await pilot.press("3", "4", "5", "1")
        assert app.screen.active_tab == "gpus"


async def test_follows_the_scenario_through_the_event_stream(agent: AgentServer) -> None:
    app = build_app(agent.path)
    async with app.run_test(size=(120, 36)) as pilot:
        await connected(pilot)
        gpus = app.screen.query_one(GpuTable)
        gpus.move_cursor(row=3)  # on the AMD GPU: rows around it change, the cursor stays on it
        assert gpus.selected_key() == "0000:c1:00.0"

        agent.in_loop(gpu_vanishes, agent.state, L4)
        await wait_until(pilot, lambda: gpus.row_count == 3, what="the L4 to vanish")
        assert gpus.selected_key() == "0000:c1:00.0"

        new = Gpu(id="GPU-00aa-new", vendor=GpuVendor.NVIDIA, model="NVIDIA A100", memory_mb=40960, pci_bus_id="0000:00:05.0")
        agent.in_loop(gpu_appears, agent.state, new, GpuReading(utilization_pct=50.0, memory_used_mb=1024))
        await wait_until(pilot, lambda: gpus.row_count == 4, what="the A100 to appear")
        assert gpus.selected_key() == "0000:c1:00.0"
        assert cell_text(gpus, "GPU-00aa-new", "idx") == "0"  # sorted by PCI bus id

        await pilot.press("3")
        jobs = [Job(id=9100 + i, project_id=5, tags=["arm64"], created_at=NOW) for i in range(5)]
        agent.in_loop(jobs_arrive, agent.state, jobs)
        queue = app.screen.query_one(QueueTable)
        await wait_until(pilot, lambda: cell_text(queue, "arm64", "jobs") == "7", what="7 arm64 jobs")

        await pilot.press("2")
        agent.in_loop(runner_started, agent.state, _runner("gpu-box-1-a3", "starting", ["amd64", "docker"]))
        runners = app.screen.query_one(RunnerTable)
        await wait_until(pilot, lambda: runners.row_count == 7, what="the new runner")
        assert app.status is not None and app.status.counts.runners_total == 7


async def test_drain_a_gpu_after_confirmation(agent: AgentServer) -> None:
    app = build_app(agent.path)
    async with app.run_test(size=(120, 36)) as pilot:
        await connected(pilot)
        gpus = app.screen.query_one(GpuTable)
        assert gpus.selected_key() == H100
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # cancel: nothing happens
        assert isinstance(app.screen, MainScreen)
        assert agent.in_loop(lambda: agent.state.intents.drained_gpus) == frozenset()

        await pilot.press("d")
        await pilot.click("#yes")
        await wait_until(pilot, lambda: cell_text(gpus, H100, "state") == "drained", what="the H100 shown drained")
        assert agent.in_loop(lambda: agent.state.intents.drained_gpus) == {H100}

        await pilot.press("u", "y")
        await wait_until(pilot, lambda: cell_text(gpus, H100, "state") == "busy", what="the H100 undrained")

        await pilot.press("2", "d", "y")  # drain the runner under the cursor
        await wait_until(pilot, lambda: agent.in_loop(lambda: agent.state.intents.drained_runners) == {LONG_RUNNER}, what="runner drain")

        await pilot.press("p", "y")
        await wait_until(pilot, lambda: app.status is not None and app.status.paused, what="paused")
        assert "PAUSED" in str(app.screen.query_one("AgentHeader").render())
        await pilot.press("p", "y")
        await wait_until(pilot, lambda: app.status is not None and not app.status.paused, what="resumed")


@needs(os.geteuid() == 0, "needs root to run the relay as another user")
async def test_non_admin_is_refused_politely() -> None:
    # The real server's real auth: the agent's socket group is nogroup (READ for nobody), the
    # admin group root; a relay running as nobody makes the agent see nobody's credentials.
    directory = socket_dir()
    server = AgentServer(make_state(), directory, group="nogroup", admin_group="root").start()
    relay = Relay(server.path, directory)
    try:
        app = build_app(relay.path)
        async with app.run_test(size=(120, 36)) as pilot:
            await connected(pilot)
            assert app.screen.query_one(GpuTable).row_count == 4  # reading works
            # The agent's status says this caller may only read: actions are hidden up front.
            await wait_until(pilot, lambda: app.admin is False, what="access=read from /v1/status")
            assert app.screen.check_action("drain", ()) is False
            await pilot.press("d", "y")
            assert server.in_loop(lambda: server.state.intents.drained_gpus) == frozenset()
            await pilot.press("p")
            assert isinstance(app.screen, MainScreen)
    finally:
        relay.close()
        server.close()


async def test_reconnects_by_itself_after_the_agent_restarts(agent: AgentServer) -> None:
    app = build_app(agent.path)
    async with app.run_test(size=(80, 24)) as pilot:
        await connected(pilot)
        agent.stop()
        await wait_until(pilot, lambda: isinstance(app.screen, DisconnectedScreen), what="the disconnected screen")
        problem = app.screen.problem
        assert problem is not None and problem.kind == "missing"
        assert "systemctl status autogit-agent" in problem.fixes
        assert app.connection == "disconnected"

        agent.in_loop(gpu_vanishes, agent.state, L4)  # the world moves on while we are away
        agent.start()
        await wait_until(pilot, lambda: isinstance(app.screen, MainScreen) and app.connection == "connected", what="reconnection")
        gpus = app.screen.query_one(GpuTable)
        await wait_until(pilot, lambda: gpus.row_count == 3, what="the fresh state")
        log = app.screen.query_one("#event-log", EventLog)
        await wait_until(pilot, lambda: bool(log.events) and log.events[-1].type == "gpu.removed", what="the missed event")


async def test_filter_narrows_the_active_tab(agent: AgentServer) -> None:
    app = build_app(agent.path)
    async with app.run_test(size=(120, 36)) as pilot:
        await connected(pilot)
        await pilot.press("3", "slash", *"gpu")
        queue = app.screen.query_one(QueueTable)
        assert queue.row_count == 3  # gpu,h100 gpu,l4 gpu,rocm
        await pilot.press("enter")
        assert queue.has_focus
        await pilot.press("2")  # the filter belongs to the queue tab
        assert app.screen.query_one(RunnerTable).row_count == 6
        await pilot.press("3")
        assert queue.row_count == 3
        await pilot.press("slash", "escape")
        assert queue.row_count == 8

        await pilot.press("5", "slash", *"docker.")
        log = app.screen.query_one("#event-log", EventLog)
        assert len(log.lines) == 1


async def test_help_lists_every_key(agent: AgentServer) -> None:
    app = build_app(agent.path)
    async with app.run_test(size=(80, 24)) as pilot:
        await connected(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        keys = {key for key, _ in app.screen.rows}
        assert {"1", "2", "3", "4", "5", "/", "Esc", "d", "u", "p", "q", "?", "r"} <= keys
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_an_agent_of_another_api_version_is_named(tmp_path) -> None:
    # Not the project's server: an agent of a future API version, which this server cannot be.
    async def status(request: web.Request) -> web.Response:
        return web.json_response({"api_version": "v2", "hostname": "future"})

    web_app = web.Application()
    web_app.router.add_get("/v1/status", status)
    runner = web.AppRunner(web_app)
    await runner.setup()
    path = str(tmp_path / "v2.sock")
    await web.UnixSite(runner, path).start()
    try:
        app = build_app(path, backoff=(5, 5))
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: isinstance(app.screen, DisconnectedScreen) and app.screen.problem is not None, what="the screen")
            assert app.screen.problem.kind == "incompatible"
            assert app.connection == "incompatible"
            assert "another API version" in app.screen.problem.title
    finally:
        await runner.cleanup()


async def test_the_queue_tab_shows_queue_time_per_tag_set_and_the_header_the_oldest_wait(agent: AgentServer) -> None:
    """The agent's own pass hook (metrics.observe_pass) sees two jobs start on its runners; the
    console shows each tag set's p50/p95 over the hour with a sparkline, and the oldest wait."""
    jobs_started(agent)
    app = build_app(agent.path)
    async with app.run_test(size=(160, 36)) as pilot:
        await connected(pilot)
        header = app.screen.query_one("AgentHeader").render().plain
        assert "Jobs: 12 (6 waiting, oldest 31m)" in header  # the s390x job, queued at NOW - 31 min
        await pilot.press("3")
        queue = app.screen.query_one(QueueTable)
        assert (cell_text(queue, "amd64", "p50"), cell_text(queue, "amd64", "p95")) == ("1m35s", "1m35s")
        assert cell_text(queue, "arm64", "p95") == "20m"
        assert cell_text(queue, "amd64", "history").strip()  # one slice with a sample: a sparkline mark
        assert cell_text(queue, "s390x", "p95") == "–"  # no job of it started here this hour
