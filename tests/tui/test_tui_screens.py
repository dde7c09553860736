"""What the console shows beyond the tables' cells: the SVG screenshots' text is the terminal's
text, the header's fields stay apart, Enter opens everything about a row (full names, the
planner's whole reason, the missing tags, the job's link), and every tab says why it is empty."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tui_harness import LONG_RUNNER, MI300, AgentServer, build_app, make_state, socket_dir, svg_text, wait_until

from autogit.agent.events import EventBus
from autogit.agent.model import Host
from autogit.agent.state import AgentPhase, AgentState, ConfigReport
from autogit.tui.screens.detail import DetailScreen
from autogit.tui.widgets.events import EventLog
from autogit.tui.widgets.tables import QueueTable, RunnerTable

SIZES = [(80, 24), (120, 36)]
SIZE_IDS = ["80x24", "120x36"]


@pytest.fixture(scope="module")
def agent_m() -> Iterator[AgentServer]:
    server = AgentServer(make_state(), socket_dir()).start()
    yield server
    server.close()


async def _loaded(pilot, events: int = 6) -> None:
    app = pilot.app
    await wait_until(pilot, lambda: app.connection == "connected" and app.jobs is not None and app.fleet is not None
                     and len(app.screen.query_one("#event-log", EventLog).events) == events, what="the first load")
    await pilot.pause(0.1)


def _detail_text(app) -> str:
    assert isinstance(app.screen, DetailScreen)
    return "\n".join(f"{label} {value}" for label, value in app.screen.rows)


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_the_svg_text_is_the_terminal_text(agent_m, size) -> None:
    app = build_app(agent_m.path)
    async with app.run_test(size=size) as pilot:
        await _loaded(pilot)
        for keys in (["1"], ["2"], ["3"], ["4"], ["5"], ["2", "enter"]):
            await pilot.press(*keys)
            await pilot.pause(0.1)
            terminal = [line.rstrip() for line in app.screen_text().splitlines()]
            assert svg_text(app.export_screenshot()).splitlines() == terminal, keys
            header = "\n".join(terminal[:2])
            # Fields are parted by a mark, so even a reader that drops spaces tells them apart.
            assert "gpu-box-1 · amd64" in header and "Docker ●" in header and "GPUs: 4 (" in header
            if isinstance(app.screen, DetailScreen):
                await pilot.press("escape")


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_enter_shows_all_of_a_runner_and_of_a_waiting_job(agent_m, size) -> None:
    app = build_app(agent_m.path)
    async with app.run_test(size=size) as pilot:
        await _loaded(pilot)
        await pilot.press("2")
        runners = app.screen.query_one(RunnerTable)
        assert runners.selected_key() == LONG_RUNNER  # sorted first
        shown = runners.get_cell(LONG_RUNNER, "id")
        if size == (120, 36):
            assert shown == LONG_RUNNER  # the name column takes what the name needs
        else:
            assert shown.endswith("…") and len(shown) >= 20  # narrow: cut, the detail has it all
        await pilot.press("enter")
        text = _detail_text(app)
        assert f"Runner {LONG_RUNNER}" in text and "Tags gpu, rocm" in text and f"GPU {MI300}" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, DetailScreen)

        await pilot.press("down", "enter")  # gpu-box-1-a1, busy with job 9001 (it has a link)
        text = _detail_text(app)
        assert "Job #9001 build (project 7)" in text and "Link https://gitlab.example.com/infra/agent/-/jobs/9001" in text
        await pilot.press("escape")

        await pilot.press("1", "enter")  # the H100, held by gpu-box-1-g1 for job 9003
        text = _detail_text(app)
        assert "Model NVIDIA H100 80GB HBM3 (nvidia)" in text and "Runner gpu-box-1-g1" in text and "Job #9003 train (project 9)" in text
        await pilot.press("escape", "4", "enter")  # the fleet's first row: this host's first runner
        text = _detail_text(app)
        assert "Host gpu-box-1 (this host)" in text and f"Runner {LONG_RUNNER}" in text
        await pilot.press("escape")

        await pilot.press("3")
        queue = app.screen.query_one(QueueTable)
        queue.move_cursor(row=queue._keys.index("s390x"))
        await pilot.press("enter")
        text = _detail_text(app)
        assert "Missing tags s390x" in text
        assert "no runner here could carry tags ['s390x'] (no QEMU binfmt handler with the F flag for s390x)" in text
        assert "https://gitlab.example.com/legacy/cobol/-/jobs/9014" in text
        assert isinstance(app.screen, DetailScreen)


def _empty_state(phase: AgentPhase) -> AgentState:
    state = AgentState(bus=EventBus())
    state.host = Host(hostname="plain-box", arch="amd64", cpus=4, memory_mb=8192)
    state.set_phase(phase)
    return state


@pytest.mark.parametrize("phase", [AgentPhase.RUNNING, AgentPhase.DETECT_ONLY])
async def test_every_tab_says_why_it_is_empty(phase) -> None:
    server = AgentServer(_empty_state(phase), socket_dir()).start()
    try:
        app = build_app(server.path)
        async with app.run_test(size=(120, 36)) as pilot:
            await _loaded(pilot, events=1)
            notes = {}
            for key, tab in zip("123", ("gpus", "runners", "queue")):
                await pilot.press(key)
                await pilot.pause(0.1)
                note = app.screen.query_one(f"#{tab}-empty")
                assert note.display, tab
                notes[tab] = str(note.render())
            assert "No GPUs on this host" in notes["gpus"] and "autogit-agent detect" in notes["gpus"]
            assert "No runners on this host" in notes["runners"]
            expected = "not connected to GitLab" if phase is AgentPhase.DETECT_ONLY else "GitLab has no job waiting"
            assert expected in notes["queue"]
            await pilot.press("4")
            await pilot.pause(0.1)
            assert "plain-box" in app.screen_text() and "no runners" in app.screen_text()  # this host, a row of its own
    finally:
        server.close()


async def test_the_header_says_when_a_reload_waits_for_a_restart() -> None:
    state = _empty_state(AgentPhase.RUNNING)
    state.config = ConfigReport(loaded_at=state.started_at, reloads=1, applied=[], restart_needed=["api.socket"])
    server = AgentServer(state, socket_dir()).start()
    try:
        for size, words in (((120, 36), "⟳ restart needed"), ((80, 24), "⟳ RESTART")):
            app = build_app(server.path)
            async with app.run_test(size=size) as pilot:
                await _loaded(pilot, events=1)
                assert words in app.screen_text().splitlines()[0]
    finally:
        server.close()


async def test_a_filter_that_hides_every_row_says_so(agent_m) -> None:
    app = build_app(agent_m.path)
    async with app.run_test(size=(120, 36)) as pilot:
        await _loaded(pilot)
        await pilot.press("2", "slash", "z", "z", "q")
        await pilot.pause(0.1)
        note = app.screen.query_one("#runners-empty")
        assert note.display and "No row matches the filter 'zzq'" in str(note.render())
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert not note.display
