"""autogit-tui: the Textual console over the agent's unix socket.

Data flow (STYLE rule 13): the app receives its client by injection (`AutoGitApp(client)`);
workers do all the I/O and post messages up; message handlers only assign reactive
attributes; watchers push the data down into the widgets, which render it.

- `_session` (one worker): GET every resource once, then follow `/v1/events?since=N`. When the
  stream breaks it shows why (DisconnectedScreen) and reconnects with backoff, by itself.
- `_refresher` (one worker per connection): the stream says *that* something changed; this
  worker re-reads the resources an event names, coalescing bursts (at most one read of each
  per `coalesce` seconds). GPU readings are not events, so /v1/gpus is also re-read every
  `readings_interval` seconds for the utilisation history (sparklines).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
from collections.abc import Callable
from datetime import datetime, UTC
from typing import Any

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.segment import Segment
from textual import work
from textual.app import App
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.timer import Timer
from textual.widgets import TabbedContent

from autogit.agent.api.client import DEFAULT_SOCKET, AgentApiError, AgentClient, AgentUnavailable
from autogit.agent.api.schema import API_VERSION, ClusterReport, Event, GpusResponse, JobsResponse, RunnersResponse, StatusResponse

from .data import RESOURCES, FleetHost, Problem, ReadingHistory, diagnose, fleet_from_payload, fleet_from_runners, resources_for_event
from .screens.confirm import ConfirmScreen
from .screens.disconnected import DisconnectedScreen
from .screens.help import HelpScreen, help_rows
from .screens.main import MainScreen
from .widgets.events import EventLog
from .widgets.header import AgentHeader
from .widgets.tables import FleetTable, GpuTable, NodeTable, QueueTable, RunnerTable

__all__ = ["AutoGitApp", "main"]

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --- messages (workers -> app) ---------------------------------------------------------------------


class Fetched(Message):
    def __init__(self, name: str, data: Any) -> None:
        super().__init__()
        self.name = name
        self.data = data


class EventArrived(Message):
    def __init__(self, event: Event, live: bool) -> None:
        super().__init__()
        self.event = event
        self.live = live  # False: replayed history (shown in the log, re-reads nothing)


class ConnectionChanged(Message):
    def __init__(self, state: str, problem: Problem | None = None, attempt: int = 0, retry_in: float = 0.0) -> None:
        super().__init__()
        self.state = state
        self.problem = problem
        self.attempt = attempt
        self.retry_in = retry_in


_ACTIONS: dict[str, tuple[str, str, str]] = {
    # kind: (question, explanation, confirm label)
    "drain_gpu": ("Drain GPU {target}?", "No new runner gets this GPU; a runner holding it finishes its job first.", "Drain"),
    "undrain_gpu": ("Undrain GPU {target}?", "The GPU becomes schedulable again.", "Undrain"),
    "drain_runner": ("Drain runner {target}?", "It takes no new job and is removed once idle; a running job is never killed.", "Drain"),
    "pause": ("Pause scaling?", "The agent starts no new runner; running jobs go on and idle runners are still reaped.", "Pause"),
    "resume": ("Resume scaling?", "The agent starts runners for the queue again.", "Resume"),
}


class AutoGitApp(App[None]):
    TITLE = "AutoGit"
    BINDINGS = [
        Binding("q", "quit", "Quit", tooltip="quit"),
        Binding("question_mark", "help", "Help", tooltip="this help: every key"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]

    status: reactive[StatusResponse | None] = reactive(None, always_update=True)
    gpus: reactive[GpusResponse | None] = reactive(None, always_update=True)
    runners: reactive[RunnersResponse | None] = reactive(None, always_update=True)
    jobs: reactive[JobsResponse | None] = reactive(None, always_update=True)
    fleet: reactive[list[FleetHost] | None] = reactive(None, always_update=True)
    connection: reactive[str] = reactive("connecting")
    admin: reactive[bool | None] = reactive(None)  # None: unknown until the agent says (403)

    def __init__(
        self,
        client: Any,
        *,
        socket_path: str | None = None,
        clock: Clock | None = None,
        readings_interval: float | None = 2.0,
        coalesce: float = 2.0,
        backoff: tuple[float, float] = (0.5, 10.0),
        replay: int = 200,
        ansi: bool = False,
        tick: float | None = 5.0,
        owns_client: bool = False,
        log_interval: float = 1.0,
    ) -> None:
        super().__init__()
        self.client = client
        self.socket_path = socket_path or str(getattr(client, "socket_path", "") or DEFAULT_SOCKET)
        self.clock: Clock = clock or _utcnow
        self.readings_interval = readings_interval
        self.coalesce = coalesce
        self.backoff = backoff
        self.replay = replay
        self.tick = tick
        self.owns_client = owns_client
        self.history = ReadingHistory()
        self.main_screen: MainScreen | None = None
        self.disconnected: DisconnectedScreen | None = None
        self.first_frame = asyncio.Event()  # set once the first answer (or failure) is shown
        self._dirty: set[str] = set()
        self._dirty_flag = asyncio.Event()
        self._retry_flag = asyncio.Event()
        self._last_seq = 0
        self._log_batch: list[Event] = []
        self._fleet_note = ""
        self._nodes_note = ""
        self.on_cluster = False  # the agent reports a cluster (runner.runtime kubernetes): the Nodes tab shows
        self._paused_shown: bool | None = None
        self._log_timer: Timer | None = None
        self.log_interval = log_interval
        if ansi:
            self.theme = "ansi-dark"

    # --- screenshots: text that matches the terminal ------------------------------------------------
    def _frame_console(self, frame: RenderableType | None) -> Console:
        width, height = self.size
        console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, color_system="truecolor",
                          record=True, legacy_windows=False, safe_box=False)
        if frame is not None:
            console.print(frame)
        return console

    def export_screenshot(self, *, title: str | None = None, simplify: bool = False) -> str:
        """Textual's SVG export, except that runs of spaces stay text: Rich writes a segment of
        spaces only as a background, so the SVG's text (copied, searched, read aloud) ran the
        cells on both sides together ("gpu-box-1amd64"). As no-break spaces they are written."""
        frame = self.screen._compositor.render_update(full=True, screen_stack=self._background_screens, simplify=simplify)
        return self._frame_console(_SpacesAsText(frame)).export_svg(title=title or self.title)

    def screen_text(self) -> str:
        """The current frame as plain text, line by line, as the terminal shows it."""
        frame = self.screen._compositor.render_update(full=True, screen_stack=self._background_screens)
        return self._frame_console(frame).export_text()

    # --- lifecycle ---------------------------------------------------------------------------------
    def on_mount(self) -> None:
        self.main_screen = MainScreen()
        self.push_screen(self.main_screen)  # its on_mount calls push_down()
        if self.tick:
            self.set_interval(self.tick, self._tick)
        self._session()

    async def on_unmount(self) -> None:
        if self.owns_client:
            await self.client.close()

    def _tick(self) -> None:
        # Ages ("waited 5m") move with the clock; unchanged cells are not touched.
        if self.main_screen is not None and self.connection == "connected":
            for table in self.main_screen.query("RunnerTable, QueueTable, FleetTable"):
                table.refresh_rows()  # type: ignore[attr-defined]

    def retry_now(self) -> None:
        self._retry_flag.set()

    # --- workers: all the I/O ------------------------------------------------------------------------
    @work(exclusive=True, group="session", exit_on_error=False)
    async def _session(self) -> None:
        attempt = 0
        while True:
            try:
                status = await self.client.status()
                if getattr(status, "api_version", API_VERSION) != API_VERSION:
                    raise AgentApiError(200, "bad_response", f"API version {status.api_version}")
                self.post_message(Fetched("status", status))
                for name in RESOURCES[1:]:
                    self.post_message(Fetched(name, await getattr(self.client, name)()))
                await self._fetch_fleet(status.hostname)
                attempt = 0
                self.post_message(ConnectionChanged("connected"))
                head = status.last_event_seq
                since = self._last_seq if 0 < self._last_seq <= head else max(0, head - self.replay)
                self._dirty.clear()
                self._refresher()
                async for event in self.client.events(since=since):
                    self._last_seq = event.seq
                    self.post_message(EventArrived(event, live=event.seq > head))
                # The stream ended (dropped as too slow, or the agent is closing): read it all again.
                await asyncio.sleep(0.2)
            except (AgentUnavailable, AgentApiError) as exc:
                self.workers.cancel_group(self, "refresh")
                attempt += 1
                problem = diagnose(exc, self.socket_path)
                delay = min(self.backoff[1], self.backoff[0] * 2 ** (attempt - 1))
                if problem.kind == "incompatible":
                    delay = self.backoff[1]
                state = "incompatible" if problem.kind == "incompatible" else "disconnected"
                self.post_message(ConnectionChanged(state, problem, attempt, delay))
                self._retry_flag.clear()
                try:
                    await asyncio.wait_for(self._retry_flag.wait(), timeout=delay)
                except TimeoutError:
                    pass

    @work(exclusive=True, group="refresh", exit_on_error=False)
    async def _refresher(self) -> None:
        try:
            while True:
                try:
                    await asyncio.wait_for(self._dirty_flag.wait(), timeout=self.readings_interval)
                except TimeoutError:
                    if self.gpus is not None and self.gpus.gpus:
                        self._dirty.add("gpus")  # readings are not events: sample them
                if not self._dirty:
                    self._dirty_flag.clear()
                    continue
                await asyncio.sleep(self.coalesce)  # let a burst of events collapse into one read
                dirty, self._dirty = self._dirty, set()
                self._dirty_flag.clear()
                fresh = {name: await getattr(self.client, name)() for name in RESOURCES if name in dirty}
                if dirty & {"runners", "status"}:
                    fleet = await self._read_fleet()
                    if fleet is not None:
                        fresh["fleet"] = fleet
                self.post_message(Fetched("many", fresh))  # one message: one repaint
        except (AgentUnavailable, AgentApiError):
            return  # the session worker sees the broken stream and takes over

    async def _read_fleet(self, hostname: str | None = None) -> list[FleetHost] | None:
        fetch = getattr(self.client, "fleet", None)
        if fetch is None:
            return None  # derived from /v1/runners instead (see _derive_fleet)
        # A /v1/fleet endpoint: runners of every host on this GitLab, by host.
        payload = await fetch()
        raw = payload.model_dump(mode="json") if hasattr(payload, "model_dump") else payload
        # The status message may not be applied yet: take this host's name from the caller.
        return fleet_from_payload(raw, hostname or (self.status.hostname if self.status else None))

    async def _fetch_fleet(self, hostname: str | None = None) -> None:
        fleet = await self._read_fleet(hostname)
        if fleet is not None:
            self.post_message(Fetched("fleet", fleet))

    @work(group="actions", exit_on_error=False)
    async def _act(self, kind: str, target: str | None) -> None:
        method = getattr(self.client, kind)
        try:
            answer = await (method(target) if target is not None else method())
        except AgentApiError as exc:
            if exc.status == 403:
                self.admin = False
                self.notify(
                    f"{exc.message}.\nActions need root or the group 'autogit-admin': "
                    "sudo usermod -aG autogit-admin $USER (then log in again). Reading stays available.",
                    title="Not allowed", severity="error", timeout=12,
                )
            else:
                self.notify(exc.message, title=f"Refused ({exc.status})", severity="error", timeout=8)
            return
        except AgentUnavailable as exc:
            self.notify(str(exc), title="Agent unreachable", severity="error", timeout=8)
            return
        self.admin = True
        self.notify(answer.message, title="Done" if answer.changed else "Nothing to do", timeout=5)
        self._mark_dirty(resources_for_event(answer.action))

    # --- messages from the workers: assign state, nothing else ------------------------------------------
    def on_fetched(self, message: Fetched) -> None:
        fresh = message.data if message.name == "many" else {message.name: message.data}
        for name, data in fresh.items():
            if name == "gpus":
                self.history.record(data.gpus)
            setattr(self, name, data)
        if message.name == "many" and self._log_batch:
            self._flush_log()  # the same repaint

    def on_event_arrived(self, message: EventArrived) -> None:
        # The log is written in batches: one repaint per `log_interval`, not one per event.
        if not self._log_batch:
            self._log_timer = self.set_timer(self.log_interval, self._flush_log)
        self._log_batch.append(message.event)
        if message.live:
            self._mark_dirty(resources_for_event(message.event.type))

    def _flush_log(self) -> None:
        if self._log_timer is not None:
            self._log_timer.stop()
            self._log_timer = None
        batch, self._log_batch = self._log_batch, []
        if self.main_screen is not None and batch:
            for log in self.main_screen.query(EventLog):
                log.add_many(batch)
            self.main_screen.query_one("#events-empty").display = False

    def _mark_dirty(self, resources: frozenset[str]) -> None:
        if resources:
            self._dirty |= resources
            self._dirty_flag.set()

    def on_connection_changed(self, message: ConnectionChanged) -> None:
        self.connection = message.state
        if message.state == "connected":
            if self.disconnected is not None:
                while self.disconnected in self.screen_stack:  # also closes a modal opened above it
                    self.pop_screen()
                self.disconnected = None
        else:
            if self.disconnected is None:
                self.disconnected = DisconnectedScreen(self.socket_path)
                self.push_screen(self.disconnected)
            self.disconnected.next_try_s = round(message.retry_in, 1)
            self.disconnected.problem = message.problem
            self.disconnected.attempt = message.attempt
        self.first_frame.set()

    # --- watchers: push data down into the widgets ---------------------------------------------------
    def push_down(self) -> None:
        """Give a freshly mounted main screen everything known so far."""
        main = self._main()
        if main is None:
            return
        main.query_one(AgentHeader).socket_path = self.socket_path
        self.watch_connection(self.connection)
        self.watch_status(self.status)
        self.watch_gpus(self.gpus)
        self.watch_runners(self.runners)
        self.watch_jobs(self.jobs)
        self.watch_fleet(self.fleet)

    def _main(self) -> MainScreen | None:
        return self.main_screen if self.main_screen is not None and self.main_screen.is_mounted else None

    def watch_connection(self, state: str) -> None:
        if (main := self._main()) is not None:
            main.query_one(AgentHeader).connection = state

    def watch_status(self, status: StatusResponse | None) -> None:
        if status is not None and getattr(status, "access", None) in ("read", "admin"):
            self.admin = status.access == "admin"
        if (main := self._main()) is not None:
            main.query_one(AgentHeader).status = status
            self._show_cluster(main, status.cluster if status is not None else None)
            paused = status.paused if status is not None else None
            if paused != self._paused_shown:  # the footer re-lays itself out: only on a change
                self._paused_shown = paused
                main.refresh_bindings()
        self._derive_fleet()

    def watch_gpus(self, gpus: GpusResponse | None) -> None:
        if (main := self._main()) is not None:
            main.query_one(GpuTable).data = gpus
            self._label("gpus", "GPUs", len(gpus.gpus) if gpus else None)

    def watch_runners(self, runners: RunnersResponse | None) -> None:
        if (main := self._main()) is not None:
            main.query_one(RunnerTable).data = runners
            self._label("runners", "Runners", len(runners.runners) if runners else None)
        self._derive_fleet()

    def watch_jobs(self, jobs: JobsResponse | None) -> None:
        if (main := self._main()) is not None:
            main.query_one(QueueTable).data = jobs
            self._label("queue", "Queue", len(jobs.jobs) if jobs else None)

    def watch_fleet(self, fleet: list[FleetHost] | None) -> None:
        if (main := self._main()) is not None:
            main.query_one(FleetTable).data = fleet
            hosts = fleet or []
            if hosts and hosts[0].source == "agent":
                text = "This host only: the agent has no fleet endpoint yet (GET /v1/fleet) to list the other hosts' runners from GitLab."
            else:
                text = f"{len(hosts)} host{'' if len(hosts) == 1 else 's'} on this GitLab, grouped by host (* this host)."
                if any(h.live is not None for h in hosts):  # fleet.enabled: say how many count as members
                    live = sum(1 for h in hosts if h.live)
                    text += f" Fleet: {live} of {len(hosts)} live (Live: heartbeat age); Enter: a host's profiles and jobs."
            if text != self._fleet_note:  # an auto-height widget: updating it costs a layout pass
                self._fleet_note = text
                main.query_one("#fleet-note").update(text)  # type: ignore[attr-defined]

    def _show_cluster(self, main: MainScreen, cluster: ClusterReport | None) -> None:
        """The Nodes tab: shown once the agent reports a cluster; its note sums the GPUs."""
        if cluster is not None and not self.on_cluster:
            self.on_cluster = True
            main.query_one("#tabs", TabbedContent).show_tab("nodes")
        main.query_one(NodeTable).data = cluster
        if cluster is None:
            return
        self._label("nodes", "Nodes", len(cluster.nodes) if cluster.known else None)
        if cluster.known:
            n = cluster.nodes
            text = (f"{len(n)} node{'' if len(n) == 1 else 's'}" + (f" matching {cluster.node_selector}" if cluster.node_selector else "")
                    + f", {sum(1 for x in n if x.ready)} ready; GPUs {sum(x.gpus_allocatable for x in n)} allocatable, "
                    f"{sum(x.gpus_used for x in n)} used, {sum(x.gpus_free for x in n)} free (from the agent's watches).")  # fmt: skip
        else:
            text = "Cluster inventory unknown: nothing is planned until the nodes are listed."
        if text != self._nodes_note:
            self._nodes_note = text
            main.query_one("#nodes-note").update(text)  # type: ignore[attr-defined]

    def watch_admin(self) -> None:
        if (main := self._main()) is not None:
            main.refresh_bindings()

    def _derive_fleet(self) -> None:
        if getattr(self.client, "fleet", None) is None:
            self.fleet = fleet_from_runners(self.status, self.runners)

    def _label(self, tab: str, name: str, count: int | None) -> None:
        main = self._main()
        if main is None:
            return
        index = ("gpus", "runners", "queue", "fleet", "events", "nodes").index(tab) + 1
        label = f"{index} {name}" + (f" ({count})" if count is not None else "")
        tabs = main.query_one("#tabs")
        tab_widget = tabs.get_tab(tab)  # type: ignore[attr-defined]
        if str(tab_widget.label) != label:
            tab_widget.label = label

    # --- user actions --------------------------------------------------------------------------------
    def request_action(self, kind: str, target: str | None) -> None:
        if self.admin is False:
            self.notify("This user may only read. Actions need root or the group 'autogit-admin'.", title="Not allowed", severity="warning")
            return
        question, body, confirm = _ACTIONS[kind]

        def answered(yes: bool | None) -> None:
            if yes:
                self._act(kind, target)

        self.push_screen(ConfirmScreen(question.format(target=target), body, confirm), answered)

    def action_help(self) -> None:
        main_bindings = MainScreen.BINDINGS if self.main_screen is not None else []
        self.push_screen(HelpScreen(help_rows(self.BINDINGS, main_bindings, DisconnectedScreen.BINDINGS)))


# --- the command ---------------------------------------------------------------------------------------


def _size(raw: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in raw.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 120x40, not {raw!r}") from None
    if w < 20 or h < 8:
        raise argparse.ArgumentTypeError("size must be at least 20x8")
    return w, h


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autogit-tui", description="Console of the AutoGit agent: GPUs, runners, queue, fleet and events.")
    p.add_argument("--socket", default=os.environ.get("AUTOGIT_SOCKET", str(DEFAULT_SOCKET)),
                   help="the agent's socket (default: $AUTOGIT_SOCKET or %(default)s)")
    p.add_argument("--screenshot", metavar="FILE.svg", help="render one full frame to an SVG file and exit")
    p.add_argument("--size", type=_size, default=(120, 36), metavar="WxH", help="terminal size for --screenshot (default 120x36)")
    p.add_argument("--tab", choices=("gpus", "runners", "queue", "fleet", "events"), default="gpus", help="tab to open on")
    p.add_argument("--now", type=datetime.fromisoformat, metavar="ISO-TIME",
                   help="freeze the console's clock (reproducible screenshots)")
    p.add_argument("--ansi", action="store_true", help="16-colour theme (chosen by itself when the terminal lacks 256 colours)")
    p.add_argument("--version", action="version", version=f"autogit-tui (API {API_VERSION})")
    return p


class _SpacesAsText:
    """A renderable that passes another's segments on, with runs of plain spaces as no-break
    spaces (same width, same look, but Rich's SVG export writes them as text)."""

    def __init__(self, inner: RenderableType | None) -> None:
        self.inner = inner

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.inner is None:
            return
        for segment in console.render(self.inner, options):
            text = segment.text
            if text and not segment.control and text == " " * len(text):
                yield Segment("\u00a0" * len(text), segment.style)
            else:
                yield segment


def _low_colour() -> bool:
    term = os.environ.get("TERM", "")
    return os.environ.get("COLORTERM", "") not in ("truecolor", "24bit") and "256" not in term and term not in ("xterm-kitty", "")


async def _screenshot(app: AutoGitApp, pilot: Any, path: str, tab: str, wait_s: float = 10.0) -> None:
    try:
        await asyncio.wait_for(app.first_frame.wait(), wait_s)
    except TimeoutError:
        pass
    await pilot.pause(0.2)
    if app.main_screen is not None and app.screen is app.main_screen:
        app.main_screen.action_tab(tab)
    await pilot.pause(0.2)  # let the batched event log and the frame settle
    await pilot.wait_for_scheduled_animations()
    directory, name = os.path.split(os.path.abspath(path))
    app.save_screenshot(filename=name, path=directory)
    app.exit()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    client = AgentClient(args.socket)
    frozen = args.now.replace(tzinfo=args.now.tzinfo or UTC) if args.now else None
    app = AutoGitApp(client, socket_path=args.socket, ansi=args.ansi or (not args.screenshot and _low_colour()), owns_client=True,
                     clock=(lambda: frozen) if frozen else None)
    if args.screenshot:
        app.readings_interval = None
        app.log_interval = 0.05

        async def pilot(p: Any) -> None:
            await _screenshot(app, p, args.screenshot, args.tab)

        app.run(headless=True, size=args.size, auto_pilot=pilot)
        print(args.screenshot)
    else:
        if args.tab != "gpus":
            app.call_later(lambda: app.main_screen.action_tab(args.tab) if app.main_screen else None)
        app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
