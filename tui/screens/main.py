"""The main screen: header, tabs (GPUs, runners, queue, fleet, events), a filter line and, on
wide terminals, an activity column with the live event stream."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Label, Static, TabbedContent, TabPane

from ..data import Detail, fleet_detail, gpu_detail, group_queue, node_detail, queue_detail, runner_detail

from ..widgets.events import EventLog
from ..widgets.header import AgentHeader
from ..widgets.table import KeyedTable
from ..widgets.tables import FleetTable, GpuTable, NodeTable, QueueTable, RunnerTable
from .detail import DetailScreen

if TYPE_CHECKING:
    from ..app import AutoGitApp

__all__ = ["MainScreen", "TABS"]

TABS = ("gpus", "runners", "queue", "fleet", "events", "nodes")
EMPTY_EVENTS = "No events yet: the agent publishes one for each change it sees or makes (inventory, queue, plan, runners, faults)."
WIDE_TABLES = 150  # columns at which tables show every column
WIDE_LAYOUT = 190  # columns at which the activity column appears


class MainScreen(Screen):
    CSS_PATH = "main.tcss"
    BINDINGS = [
        Binding("1", "tab('gpus')", "GPUs", show=False, tooltip="GPUs: use, memory, history, health, holder"),
        Binding("2", "tab('runners')", "Runners", show=False, tooltip="runners of this host"),
        Binding("3", "tab('queue')", "Queue", show=False, tooltip="pending jobs by tag set, and why they wait"),
        Binding("4", "tab('fleet')", "Fleet", show=False, tooltip="runners of every host, by host"),
        Binding("5", "tab('events')", "Events", show=False, tooltip="the agent's event log"),
        Binding("6", "tab('nodes')", "Nodes", show=False, tooltip="the cluster's nodes and the runner pods on each (Kubernetes only)"),
        Binding("enter", "details", "Details", tooltip="everything about the row under the cursor (full names, reasons, links)"),
        Binding("slash", "filter", "Filter", tooltip="filter this tab's rows (Enter keeps it)"),
        Binding("escape", "clear_filter", "Clear filter", show=False, tooltip="clear the filter"),
        Binding("d", "drain", "Drain", tooltip="drain the GPU / runner under the cursor (admin)"),
        Binding("u", "undrain", "Undrain GPU", tooltip="undrain the GPU under the cursor (admin)"),
        Binding("p", "pause", "Pause/resume scaling", tooltip="pause or resume scaling (admin)"),
    ]

    app: AutoGitApp

    def __init__(self) -> None:
        super().__init__()
        self.filters: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        app = self.app
        yield AgentHeader(id="header")
        with Horizontal(id="main-body"):
            with TabbedContent(initial="gpus", id="tabs"):
                with TabPane("1 GPUs", id="gpus"):
                    yield Static(id="gpus-empty", classes="empty-note")
                    yield GpuTable(app.clock, app.history, id="gpu-table")
                with TabPane("2 Runners", id="runners"):
                    yield Static(id="runners-empty", classes="empty-note")
                    yield RunnerTable(app.clock, id="runner-table")
                with TabPane("3 Queue", id="queue"):
                    yield Static(id="queue-empty", classes="empty-note")
                    yield QueueTable(app.clock, id="queue-table")
                with TabPane("4 Fleet", id="fleet"):
                    yield Static(id="fleet-note")
                    yield Static(id="fleet-empty", classes="empty-note")
                    yield FleetTable(app.clock, id="fleet-table")
                with TabPane("5 Events", id="events"):
                    yield Static(EMPTY_EVENTS, id="events-empty", classes="empty-note")
                    yield EventLog(id="event-log")
                with TabPane("6 Nodes", id="nodes"):  # shown only when the agent runs on Kubernetes
                    yield Static(id="nodes-note")
                    yield Static(id="nodes-empty", classes="empty-note")
                    yield NodeTable(app.clock, id="node-table")
            with Vertical(id="activity"):
                yield Label("Activity", id="activity-title")
                yield EventLog(keep=200, compact=True, id="activity-log")
        yield Input(placeholder="filter this tab (type, then Enter; Esc clears)", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#tabs", TabbedContent).hide_tab("nodes")
        for tab in ("gpus", "runners", "queue", "fleet", "nodes"):
            self.query_one(f"#{tab}", TabPane).query_one(KeyedTable).empty_note = self.query_one(f"#{tab}-empty", Static)
        self.query_one("#events-empty", Static).display = not self.query_one("#event-log", EventLog).events
        self.apply_size(self.app.size.width)
        self.app.push_down()

    # --- layout by size ---
    def on_resize(self, event: Resize) -> None:
        self.apply_size(event.size.width)

    def apply_size(self, width: int) -> None:
        self.set_class(width >= WIDE_LAYOUT, "-wide")
        wide = width >= WIDE_TABLES
        self.query_one(AgentHeader).compact = width < 110
        for table in self.query("#tabs KeyedTable"):
            table.wide = wide  # type: ignore[attr-defined]

    # --- tabs ---
    @property
    def active_tab(self) -> str:
        return self.query_one("#tabs", TabbedContent).active or "gpus"

    def action_tab(self, tab: str) -> None:
        tabs = self.query_one("#tabs", TabbedContent)
        if tab == "nodes" and not self.app.on_cluster:
            return  # a host agent has no nodes tab
        tabs.active = tab

    @on(TabbedContent.TabActivated)
    def _tab_changed(self) -> None:
        box = self.query_one("#filter", Input)
        value = self.filters.get(self.active_tab, "")
        with box.prevent(Input.Changed):
            box.value = value
        box.set_class(bool(value), "-shown")
        widget = self._filterable(self.active_tab)
        if isinstance(widget, KeyedTable):
            widget.show()
        self.refresh_bindings()
        self._focus_active()

    def _focus_active(self) -> None:
        pane = self.query_one(f"#{self.active_tab}", TabPane)
        for widget in pane.query("KeyedTable, EventLog"):
            widget.focus()
            break

    def _filterable(self, tab: str) -> EventLog | GpuTable | RunnerTable | QueueTable | FleetTable | NodeTable:
        return self.query_one(f"#{tab}", TabPane).query("KeyedTable, EventLog").first()  # type: ignore[return-value]

    # --- filter ---
    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("-shown")
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.remove_class("-shown")
        self._focus_active()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        tab = self.active_tab
        self.filters[tab] = event.value
        self._filterable(tab).filter_text = event.value

    @on(Input.Submitted, "#filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        if not event.value:
            event.input.remove_class("-shown")
        self._focus_active()

    # --- actions (the app asks for confirmation and talks to the agent) ---
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("drain", "undrain", "pause"):
            if self.app.admin is False:
                return False  # hidden: this user may not act (learned from a 403 or the status)
            if action == "drain":
                return self.active_tab in ("gpus", "runners")
            if action == "undrain":
                return self.active_tab == "gpus"
        return True

    def action_drain(self) -> None:
        tab = self.active_tab
        if tab == "gpus":
            key = self.query_one(GpuTable).selected_key()
            if key:
                self.app.request_action("drain_gpu", key)
        elif tab == "runners":
            key = self.query_one(RunnerTable).selected_key()
            if key:
                self.app.request_action("drain_runner", key)

    def action_undrain(self) -> None:
        key = self.query_one(GpuTable).selected_key()
        if key:
            self.app.request_action("undrain_gpu", key)

    def action_pause(self) -> None:
        status = self.app.status
        self.app.request_action("resume" if status is not None and status.paused else "pause", None)

    # --- details (Enter) ---
    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_details()

    def action_details(self) -> None:
        tab = self.active_tab
        widget = self._filterable(tab)
        if not isinstance(widget, KeyedTable):
            return
        key = widget.selected_key()
        found = self.detail_for(tab, key) if key is not None else None
        if found is not None:
            self.app.push_screen(DetailScreen(*found))

    def detail_for(self, tab: str, key: str) -> tuple[str, Detail] | None:
        app = self.app
        now = app.clock()
        if tab == "gpus" and app.gpus is not None:
            gpu = next((v for v in app.gpus.gpus if v.gpu.id == key), None)
            return (f"GPU {key}", gpu_detail(gpu, app.jobs)) if gpu else None
        if tab == "runners" and app.runners is not None:
            runner = next((v for v in app.runners.runners if v.runner.id == key), None)
            return (f"Runner {key}", runner_detail(runner, app.jobs, now)) if runner else None
        if tab == "queue" and app.jobs is not None:
            group = next((g for g in group_queue(app.jobs.jobs) if g.key == key), None)
            return (f"Pending jobs tagged {key}", queue_detail(group, app.jobs, now)) if group else None
        if tab == "fleet" and app.fleet is not None:
            hostname, _, runner_id = key.partition("/")
            host = next((h for h in app.fleet if h.hostname == hostname), None)
            if host is None:
                return None
            member = next((r for r in host.runners if r.id == runner_id), None)
            return (f"{hostname}: {runner_id or 'no runners'}", fleet_detail(host, member, now))
        cluster = app.status.cluster if app.status is not None else None
        if tab == "nodes" and cluster is not None:
            node = next((n for n in cluster.nodes if n.name == key), None)
            return (f"Node {key}", node_detail(node, cluster.runner_pods)) if node else None
        return None
