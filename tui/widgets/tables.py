"""The console's tables: GPUs, runners, the queue (grouped by tag set) and the fleet. Each one
is a KeyedTable fed through a reactive `data` attribute; rows are sorted by a stable key."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from rich.text import Text
from textual.reactive import reactive

from autogit.agent.api.schema import ClusterReport, GpusResponse, JobsResponse, QueueTime, RunnersResponse

from ..data import FleetHost, ReadingHistory, age, bar, group_queue, seconds_spark, since, spark
from .table import Cell, Col, KeyedTable

__all__ = ["FleetTable", "GpuTable", "NodeTable", "QueueTable", "RunnerTable"]

Clock = Callable[[], datetime]

_STATE_STYLE = {"busy": "green", "idle": "cyan", "starting": "blue", "draining": "yellow", "stopping": "magenta"}


def _state(state: str) -> Text:
    return Text(state, style=_STATE_STYLE.get(state, ""))


def _short(value: str | None, width: int) -> str:
    if not value:
        return "-"
    return value if len(value) <= width else value[: width - 1] + "…"


class _DataTable(KeyedTable):
    data: reactive[Any] = reactive(None, always_update=True)

    def __init__(self, clock: Clock, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.clock = clock

    def watch_data(self) -> None:
        self.refresh_rows()


class GpuTable(_DataTable):
    COLUMNS = (
        Col("idx", "#", 2),
        Col("model", "Model", 13, 20, grow=True),
        Col("vendor", "Vendor", 0, 6),
        Col("util", "Util", 9, 15),
        Col("mem", "Memory", 9, 21),
        Col("hist", "Util history", 0, 20),
        Col("temp", "Temp", 4, 5),
        Col("power", "Power", 0, 5),
        Col("state", "State", 9, 9),
        Col("runner", "Runner", 9, 14, grow=True),
        Col("job", "Job", 6, 8),
    )

    def __init__(self, clock: Clock, history: ReadingHistory, *, id: str | None = None) -> None:
        super().__init__(clock, id=id)
        self.history = history

    def build_rows(self) -> list[tuple[str, dict[str, Cell]]]:
        data: GpusResponse | None = self.data
        if data is None:
            return []
        views = sorted(data.gpus, key=lambda v: (v.gpu.pci_bus_id or "~", v.gpu.id))
        wide = self.wide
        out = []
        for index, view in enumerate(views):
            gpu, reading = view.gpu, view.reading
            util = reading.utilization_pct if reading else None
            used = reading.memory_used_mb if reading else None
            mem_pct = None if used is None or not gpu.memory_mb else used / gpu.memory_mb * 100
            if wide:
                mem_label = f"{used / 1024:5.1f}/{gpu.memory_mb / 1024:.0f}G" if used is not None else ""
                util_bar, mem_bar = bar(util, 10), bar(mem_pct, 10, mem_label if used is not None else None)
            else:
                util_bar, mem_bar = bar(util, 4), bar(mem_pct, 4)
            if not gpu.healthy:
                state = Text("UNHEALTHY", style="bold red")
            elif gpu.drained:
                state = Text("drained" + ("" if view.operator_drained else "*"), style="yellow")
            elif view.held_by_runner:
                state = Text("busy", style="green")
            else:
                state = Text("free", style="cyan")
            temp = reading.temperature_c if reading else None
            power = reading.power_w if reading else None
            out.append((gpu.id, {
                "idx": str(index),
                "model": gpu.model,
                "vendor": gpu.vendor.value,
                "util": util_bar,
                "mem": mem_bar,
                "hist": spark(self.history.utilization(gpu.id), 20),
                "temp": Text("?", style="dim") if temp is None else Text(f"{temp:.0f}°", style="red" if temp >= 85 else ""),
                "power": "?" if power is None else f"{power:.0f}W",
                "state": state,
                "runner": view.held_by_runner or "-",
                "job": "-" if view.held_by_job is None else str(view.held_by_job),
            }))
        return out


    def empty_text(self) -> str | None:
        if self.data is None:
            return None
        return ("No GPUs on this host: the agent's inventory found no NVIDIA, AMD or Intel GPU "
                "(`autogit-agent detect` shows what it sees), so it starts no GPU runner here.")


class RunnerTable(_DataTable):
    COLUMNS = (
        Col("id", "Runner", 14, 22, grow=True),
        Col("state", "State", 8, 9),
        Col("kind", "Kind", 0, 8),
        Col("tags", "Tags", 16, 30),
        Col("platform", "Platform", 0, 14),
        Col("gpu", "GPU", 8, 14, grow=True),
        Col("job", "Job", 7, 8),
        Col("age", "Age", 6, 7),
    )

    def build_rows(self) -> list[tuple[str, dict[str, Cell]]]:
        data: RunnersResponse | None = self.data
        if data is None:
            return []
        now = self.clock()
        wide = self.wide
        out: list[tuple[str, dict[str, Cell]]] = []
        for view in sorted(data.runners, key=lambda v: v.runner.id):
            r = view.runner
            state = "draining" if r.draining and view.state not in ("draining", "stopping") else view.state
            out.append((r.id, {
                "id": r.id,
                "state": _state(state),
                "kind": r.kind.value,
                "tags": _short(",".join(r.tags), 30 if wide else 16),
                "platform": r.platform or "-",
                "gpu": r.gpu or "-",
                "job": "-" if view.job is None else str(view.job),
                "age": since(view.started_at, now),
            }))
        return out


    def empty_text(self) -> str | None:
        if self.data is None:
            return None
        status = getattr(self.app, "status", None)
        if status is not None and status.paused:
            return "No runners on this host, and scaling is paused (p resumes it)."
        return "No runners on this host: the agent starts one when a job it can serve is pending (3 Queue)."


def queue_time_cells(stats: QueueTime | None) -> dict[str, Cell]:
    """p50, p95 and the p95 sparkline of one tag set ('–': no job of it started here this hour)."""
    if stats is None:
        return {"p50": Text("–", style="bright_black"), "p95": Text("–", style="bright_black"), "history": ""}
    return {"p50": age(stats.p50_s), "p95": age(stats.p95_s), "history": seconds_spark(stats.history, 12)}


class QueueTable(_DataTable):
    COLUMNS = (
        Col("tags", "Tag set", 16, 28, grow=True),
        Col("jobs", "Jobs", 5, 5),
        Col("running", "Run", 0, 5),
        Col("served", "Srv", 0, 5),
        Col("waiting", "Wait", 5, 5),
        Col("oldest", "Waited", 6, 7),
        # Queue time of the jobs that started here within the hour (GitLab's queued_duration).
        Col("p50", "p50 1h", 0, 7),
        Col("p95", "p95 1h", 6, 7),
        Col("history", "p95 history (5 min)", 0, 12),
        Col("reason", "Why it waits (planner; Enter: all of it)", 38, 70, fill=True),
    )

    def build_rows(self) -> list[tuple[str, dict[str, Cell]]]:
        data: JobsResponse | None = self.data
        if data is None:
            return []
        now = self.clock()
        out: list[tuple[str, dict[str, Cell]]] = []
        times = {(t.tags or "(untagged)"): t for t in data.queue_times}
        for group in group_queue(data.jobs):
            waiting = Text(str(group.waiting), style="yellow" if group.waiting else "")
            out.append((group.key, queue_time_cells(times.pop(group.key, None)) | {
                "tags": group.key,
                "jobs": str(group.jobs),
                "running": str(group.running),
                "served": str(group.served),
                "waiting": waiting,
                "oldest": since(group.oldest, now),
                "reason": Text(group.reason, style="yellow") if group.reason else Text("served", style="green") if not group.unplanned else "not planned yet",
            }))
        # Tag sets with no job pending now still show how long their jobs waited this hour.
        for key, stats in sorted(times.items()):
            out.append((key, queue_time_cells(stats) | {"tags": key, "jobs": "0", "running": "", "served": "", "waiting": "0", "oldest": "",
                                                         "reason": Text("none pending", style="bright_black")}))  # fmt: skip
        return out


    def empty_text(self) -> str | None:
        if self.data is None:
            return None
        status = getattr(self.app, "status", None)
        if status is not None and status.phase.value == "detect-only":
            return "No pending jobs: the agent is not connected to GitLab (detect-only: set gitlab.url and the token)."
        return "No pending jobs: GitLab has no job waiting that this host's runners could be asked to run."


class FleetTable(_DataTable):
    COLUMNS = (
        Col("host", "Host", 14, 20),
        Col("runner", "Runner", 14, 22, grow=True),
        Col("state", "State", 8, 9),
        Col("tags", "Tags", 16, 30),
        Col("platform", "Platform", 0, 14),
        Col("gpu", "GPU", 0, 14),
        Col("job", "Job", 7, 8),
        Col("age", "Age", 6, 7),
    )
    # While the fleet is on (fleet.enabled; any host's live is not None): each host's liveness,
    # room, owned jobs and profiles on its first row. Platform and GPU make room for them: other
    # hosts' runners never carry those (GitLab's listing has tags only), and this host's are on
    # the Runners tab and behind Enter. With the fleet off the tab is as before.
    FLEET_COLUMNS = (
        Col("host", "Host", 14, 20),
        Col("live", "Live", 10),
        Col("room", "Room", 4),
        Col("owns", "Owns", 10, 14),
        Col("profiles", "Profiles", 0, 12, fill=True),
        Col("runner", "Runner", 14, 22, grow=True),
        Col("state", "State", 8, 9),
        Col("tags", "Tags", 16, 20),
        Col("job", "Job", 7, 8),
        Col("age", "Age", 6, 7),
    )

    def __init__(self, clock: Clock, *, id: str | None = None) -> None:
        super().__init__(clock, id=id)
        self._fleet_on = False

    def _columns_for(self, wide: bool) -> list[Col]:
        return [c for c in (self.FLEET_COLUMNS if self._fleet_on else self.COLUMNS) if c.width_for(wide) > 0]

    def watch_data(self) -> None:
        fleet_on = any(h.live is not None for h in self.data or ())
        if fleet_on != self._fleet_on:
            self._fleet_on = fleet_on
            if self.is_mounted:
                self._set_columns()  # the column set changes: rebuild it before the rows
        self.refresh_rows()

    def _member_cells(self, host: FleetHost, now: datetime) -> dict[str, Cell]:
        """The host's fleet columns, on its first row: liveness, room, owned jobs, profiles."""
        if host.live is None:
            return {}
        return {
            "live": Text(host.liveness(now), style="green" if host.live else "bold red"),
            "room": "?" if host.room is None else str(host.room),
            "owns": _short(",".join(str(j) for j in host.owns), 14 if self.wide else 10),
            "profiles": ", ".join(host.profiles) or "-",  # a fill column: cut to the room there is
        }

    def build_rows(self) -> list[tuple[str, dict[str, Cell]]]:
        hosts: list[FleetHost] | None = self.data
        if not hosts:
            return []
        now = self.clock()
        wide = self.wide
        out: list[tuple[str, dict[str, Cell]]] = []
        for host in hosts:
            label = Text(_short(host.hostname, 20 if wide else 14), style="bold")
            if host.this_host:
                label.append(" *", style="cyan")
            member = self._member_cells(host, now)
            if not host.runners:
                out.append((f"{host.hostname}/", {"host": label, **member, "runner": Text("no runners", style="dim")}))
            for i, r in enumerate(host.runners):
                out.append((f"{host.hostname}/{r.id}", {
                    "host": label if i == 0 else Text(f"  {len(host.runners)} runners" if i == 1 else "", style="dim"),
                    **(member if i == 0 else {}),
                    "runner": r.id,
                    "state": _state(r.state),
                    "tags": _short(",".join(r.tags), (20 if self._fleet_on else 30) if wide else 16),
                    "platform": r.platform or "-",
                    "gpu": _short(r.gpu, 14),
                    "job": "-" if r.job is None else str(r.job),
                    "age": since(r.started_at, now),
                }))
        return out

    def empty_text(self) -> str | None:
        if self.data is None:
            return None
        return "No runners on any host of this GitLab."


class NodeTable(_DataTable):
    """The cluster's nodes (runner.runtime kubernetes, ADR-016): hardware, GPUs allocatable, used
    and free, and this agent's runner pods on each; pods not scheduled yet in a row of their own."""

    COLUMNS = (
        Col("node", "Node", 14, 24, grow=True),
        Col("arch", "Arch", 5, 6),
        Col("ready", "Ready", 5, 5),
        Col("gpu", "GPU", 12, 24, grow=True),
        Col("alloc", "GPUs", 4, 4),
        Col("used", "Used", 4, 4),
        Col("free", "Free", 4, 4),
        Col("pods", "Runner pods (runner: role phase)", 20, 40, fill=True),
    )

    def build_rows(self) -> list[tuple[str, dict[str, Cell]]]:
        data: ClusterReport | None = self.data
        if data is None or not data.known:
            return []
        pods: dict[str | None, list[str]] = {}
        for pod in data.runner_pods:
            pods.setdefault(pod.node, []).append(f"{pod.runner}: {pod.role} {pod.phase or '?'}")
        out: list[tuple[str, dict[str, Cell]]] = []
        for node in data.nodes:
            free = Text(str(node.gpus_free), style="green" if node.gpus_free else "") if node.gpus_allocatable else ""
            out.append((node.name, {
                "node": node.name,
                "arch": node.arch or "?",
                "ready": Text("yes", style="green") if node.ready else Text("NO", style="red"),
                "gpu": node.gpu_product or (", ".join(node.gpu_resources) or "-"),
                "alloc": str(node.gpus_allocatable) if node.gpus_allocatable else "",
                "used": str(node.gpus_used) if node.gpus_allocatable else "",
                "free": free,
                "pods": "; ".join(pods.pop(node.name, [])),
            }))
        for where, lines in sorted(pods.items(), key=lambda item: item[0] or ""):
            key = where or "(not scheduled)"
            out.append((f"~{key}", {"node": Text(key, style="bright_black"), "arch": "", "ready": "", "gpu": "", "alloc": "", "used": "",
                                    "free": "", "pods": "; ".join(lines)}))  # fmt: skip
        return out

    def empty_text(self) -> str | None:
        data: ClusterReport | None = self.data
        if data is None:
            return None
        if not data.known:
            return f"Cluster inventory UNKNOWN: {data.unknown_reason or '?'}. Nothing is planned until the nodes are listed."
        selector = f" matching {data.node_selector}" if data.node_selector else ""
        return f"No nodes{selector}: the agent plans for the nodes runner.kubernetes.node_selector selects."
