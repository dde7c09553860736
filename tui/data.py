"""What the console shows, computed from the wire schema: pure functions, no Textual, no I/O.

The widgets turn these into cells; the tests and the benchmark can call them directly. Every
function that depends on the time takes `now` (the app's injectable clock), so a frozen clock
gives byte-identical frames.
"""

from __future__ import annotations

import errno
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from rich.text import Text

from autogit.agent.api.client import AgentApiError, AgentUnavailable
from autogit.agent.api.schema import (
    API_VERSION, ClusterNode, ClusterPod, Event, GpuView, JobsResponse, JobStatus, JobView, RunnersResponse, RunnerView, StatusResponse,
)  # fmt: skip

__all__ = [
    "RESOURCES",
    "Detail",
    "FleetHost",
    "FleetRunner",
    "Problem",
    "QueueGroup",
    "ReadingHistory",
    "age",
    "bar",
    "diagnose",
    "event_style",
    "fleet_detail",
    "node_detail",
    "fleet_from_runners",
    "gpu_detail",
    "group_queue",
    "job_detail",
    "queue_detail",
    "resources_for_event",
    "runner_detail",
    "spark",
]

# What the app fetches, in the order of the first full load. (/v1/plan is not read: /v1/jobs
# already carries the plan's reason for each waiting job.)
RESOURCES = ("status", "gpus", "runners", "jobs")

# Event type prefix -> resources whose GET answer it may change. The stream says *that*
# something changed; the app then re-reads what changed (level-triggered, like the agent).
_BY_PREFIX: dict[str, frozenset[str]] = {
    "gpu": frozenset({"gpus", "status"}),
    "inventory": frozenset({"gpus", "status"}),
    "host": frozenset({"gpus", "status"}),
    "runner": frozenset({"runners", "gpus", "jobs", "status"}),
    "container": frozenset({"runners", "status"}),
    "job": frozenset({"jobs", "status"}),
    "jobs": frozenset({"jobs", "status"}),
    "queue": frozenset({"jobs", "status"}),
    "plan": frozenset({"jobs", "status"}),
    "reconcile": frozenset({"jobs", "status"}),
    "scaling": frozenset({"status", "jobs"}),
    "agent": frozenset({"status"}),
    "gitlab": frozenset({"status"}),
    "docker": frozenset({"status"}),
    "config": frozenset({"status"}),
    "api": frozenset(),  # refusals change nothing the console shows
    "stream": frozenset(),
}


def resources_for_event(event_type: str) -> frozenset[str]:
    """Which resources to re-read after an event; an unknown kind re-reads everything (safe)."""
    return _BY_PREFIX.get(event_type.split(".", 1)[0], frozenset(RESOURCES))


# --- small renderers ---------------------------------------------------------------------------

_SPARK = "▁▂▃▄▅▆▇█"


def level_style(pct: float) -> str:
    # Named ANSI colours: they survive a 16-colour terminal unchanged.
    return "green" if pct < 60 else "yellow" if pct < 85 else "red"


def bar(pct: float | None, width: int, label: str | None = None) -> Text:
    """A horizontal bar with its figure, e.g. '█████░░░  62%'; unknown is a dim '?' (not zero)."""
    if pct is None:
        return Text("?".rjust(width + 1 + len(label or " 62%") - 1), style="dim")
    pct = max(0.0, min(100.0, pct))
    filled = round(pct / 100 * width)
    text = Text()
    text.append("█" * filled, style=level_style(pct))
    text.append("░" * (width - filled), style="bright_black")
    text.append(" " + (label if label is not None else f"{pct:3.0f}%"))
    return text


def spark(values: Iterable[float | None], width: int) -> Text:
    """The newest `width` samples as a sparkline, 0-100 %; a gap for unknown samples."""
    recent = list(values)[-width:]
    text = Text(" " * (width - len(recent)))
    for v in recent:
        if v is None:
            text.append("·", style="bright_black")
        else:
            v = max(0.0, min(100.0, v))
            text.append(_SPARK[min(7, int(v / 100 * 8))], style=level_style(v))
    return text


def seconds_spark(values: Iterable[float | None], width: int) -> Text:
    """Durations as a sparkline scaled to their own maximum (a queue's history: its shape matters,
    the p50/p95 columns give the figures); a gap for slices without a sample."""
    recent = list(values)[-width:]
    top = max((v for v in recent if v is not None), default=0.0)
    return spark([None if v is None else (100.0 * v / top if top > 0 else 0.0) for v in recent], width)


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s < 600 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def since(moment: datetime | None, now: datetime) -> str:
    return age(None if moment is None else (now - moment).total_seconds())


def event_style(event_type: str) -> str:
    if event_type.endswith(("failing", "refused", "dropped", "rejected", "removed", "lost", "failed", "error")):
        return "red"
    if "drain" in event_type or event_type.startswith(("scaling.", "config.")) or event_type.endswith("paused"):
        return "yellow"
    if event_type.endswith(("ok", "added", "started", "resumed", "undrained")):
        return "green"
    return ""


# --- GPU reading history (sparklines) ----------------------------------------------------------


class ReadingHistory:
    """The last `size` utilisation samples per GPU, one per fetch of /v1/gpus."""

    def __init__(self, size: int = 120) -> None:
        self.size = size
        self._util: dict[str, deque[float | None]] = {}

    def record(self, gpus: Iterable[GpuView]) -> None:
        seen = set()
        for view in gpus:
            seen.add(view.gpu.id)
            samples = self._util.setdefault(view.gpu.id, deque(maxlen=self.size))
            samples.append(view.reading.utilization_pct if view.reading else None)
        for gone in set(self._util) - seen:  # a vanished GPU's history goes with it
            del self._util[gone]

    def utilization(self, gpu_id: str) -> list[float | None]:
        return list(self._util.get(gpu_id, ()))


# --- the queue, grouped by tag set ---------------------------------------------------------------


@dataclass
class QueueGroup:
    tags: tuple[str, ...]
    jobs: int = 0
    running: int = 0
    served: int = 0
    waiting: int = 0
    unplanned: int = 0
    oldest: datetime | None = None
    reasons: Counter[str] = field(default_factory=Counter)
    detail: str = ""
    missing: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return ",".join(self.tags) or "(untagged)"

    @property
    def reason(self) -> str:
        """The planner's most common reason in this group, with its first detail."""
        if not self.reasons:
            return ""
        top = self.reasons.most_common(1)[0][0]
        more = f" (+{len(self.reasons) - 1} more)" if len(self.reasons) > 1 else ""
        detail = f": {self.detail}" if self.detail else ""
        missing = f" [missing {', '.join(self.missing)}]" if self.missing else ""
        return f"{top}{detail}{missing}{more}"


def group_queue(jobs: Iterable[JobView]) -> list[QueueGroup]:
    """Pending jobs grouped by tag set, sorted by tag set (a stable order: rows never jump)."""
    groups: dict[tuple[str, ...], QueueGroup] = {}
    for view in jobs:
        tags = tuple(view.job.tags)
        group = groups.get(tags)
        if group is None:
            group = groups[tags] = QueueGroup(tags)
        group.jobs += 1
        created = view.job.created_at
        if group.oldest is None or created < group.oldest:
            group.oldest = created
        status = view.status
        if status is JobStatus.RUNNING:
            group.running += 1
        elif status is JobStatus.SERVED:
            group.served += 1
        elif status is JobStatus.WAITING:
            group.waiting += 1
            if view.wait is not None:
                reason = view.wait.reason.value
                if not group.reasons:
                    group.detail = view.wait.detail
                    group.missing = tuple(view.wait.missing_tags)
                group.reasons[reason] += 1
        else:
            group.unplanned += 1
    return [groups[k] for k in sorted(groups, key=lambda t: (",".join(t), len(t)))]


# --- the fleet: runners of every host, grouped by host ---------------------------------------------


@dataclass(frozen=True)
class FleetRunner:
    id: str
    state: str
    tags: tuple[str, ...]
    platform: str | None
    gpu: str | None
    job: int | None
    started_at: datetime | None


@dataclass(frozen=True)
class FleetHost:
    hostname: str
    this_host: bool
    runners: tuple[FleetRunner, ...]
    source: str  # "agent" (this host's own view) or "gitlab" (a /v1/fleet answer)
    last_seen: datetime | None = None
    # The fleet's view of the host (fleet.enabled): None when the fleet is off, and then the
    # rest stays empty too. `room` is what its presence says; `owns` as this host computes it.
    live: bool | None = None
    heartbeat_at: datetime | None = None
    joined_at: datetime | None = None  # its membership began (start, or return after a lapse)
    profiles: tuple[str, ...] = ()
    room: int | None = None
    owns: tuple[int, ...] = ()

    def liveness(self, now: datetime) -> str:
        """'live 12s' or 'gone 6m' (the heartbeat's age); '' when the fleet is off."""
        if self.live is None:
            return ""
        return f"{'live' if self.live else 'gone'} {since(self.heartbeat_at, now)}"


def _fleet_runner(view: RunnerView) -> FleetRunner:
    r = view.runner
    return FleetRunner(r.id, view.state, tuple(r.tags), r.platform, r.gpu, view.job, view.started_at)


def fleet_from_runners(status: StatusResponse | None, runners: RunnersResponse | None) -> list[FleetHost]:
    """The fleet as far as this host can tell without a fleet endpoint: itself only."""
    if status is None or runners is None:
        return []
    rows = tuple(sorted((_fleet_runner(v) for v in runners.runners), key=lambda r: r.id))
    return [FleetHost(status.hostname, True, rows, "agent")]


def fleet_from_payload(payload: dict, this_host: str | None) -> list[FleetHost]:
    """Parse the GET /v1/fleet shape this console asks the API for (see docs/cli/autogit-tui.md):
    {"hosts": [{"hostname", "last_seen", "runners": [{"id", "state", "tags", "platform",
    "gpu", "job", "started_at"}], "live", "heartbeat_at", "joined_at", "profiles", "room", "owns"}]}.
    Fields it does not know are ignored and missing ones left empty (an older or newer agent)."""
    hosts = [_fleet_host(h, this_host) for h in payload.get("hosts", [])]
    return sorted(hosts, key=lambda h: (not h.this_host, h.hostname))


def _fleet_host(h: dict, this_host: str | None) -> FleetHost:
    runners = tuple(
        sorted(
            (
                FleetRunner(
                    str(r["id"]), str(r.get("state", "?")), tuple(r.get("tags", ())), r.get("platform"), r.get("gpu"),
                    r.get("job"), _parse_time(r.get("started_at")),
                )
                for r in h.get("runners", [])
            ),
            key=lambda r: r.id,
        )
    )
    live = h.get("live")
    return FleetHost(
        h["hostname"], h["hostname"] == this_host, runners, "gitlab", _parse_time(h.get("last_seen")),
        live=None if live is None else bool(live), heartbeat_at=_parse_time(h.get("heartbeat_at")),
        joined_at=_parse_time(h.get("joined_at")), profiles=tuple(str(p) for p in h.get("profiles") or ()), room=h.get("room"),
        owns=tuple(sorted(int(j) for j in h.get("owns") or ())),
    )  # fmt: skip


def _parse_time(raw: str | None) -> datetime | None:
    return datetime.fromisoformat(raw) if raw else None


# --- why the agent cannot be reached -----------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    kind: str  # missing | refused | permission | timeout | incompatible | error
    title: str
    detail: str
    fixes: tuple[str, ...]


def _os_error(exc: BaseException) -> OSError | None:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        inner = getattr(cur, "os_error", None)  # aiohttp.ClientConnectorError
        if isinstance(inner, OSError):
            return inner
        if isinstance(cur, OSError) and cur.errno is not None:
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


_AGENT_FIXES = (
    "systemctl status autogit-agent",
    "sudo systemctl start autogit-agent",
    "journalctl -u autogit-agent -e      (why it stopped)",
    "autogit-tui --socket PATH           (or $AUTOGIT_SOCKET, if it listens elsewhere)",
)


def diagnose(exc: BaseException, socket_path: str) -> Problem:
    """One screen's worth of 'what is wrong and how to fix it' for a failed connection."""
    if isinstance(exc, AgentApiError):
        if exc.status == 404 or exc.type == "bad_response":
            return Problem(
                "incompatible",
                "The agent speaks another API version",
                f"autogit-tui speaks API {API_VERSION}; the agent at {socket_path} answered: {exc.message}",
                ("install the same version of autogit-tui and autogit-agent",
                 "autogit-agent version; autogit-tui --version"),
            )
        if exc.status == 403:
            return Problem(
                "permission", "The agent refuses this user", exc.message,
                ("sudo usermod -aG autogit $USER    then log out and in again (or: newgrp autogit)",),
            )
        return Problem("error", f"The agent answered with an error ({exc.status})", exc.message, _AGENT_FIXES)
    os_error = _os_error(exc)
    code = os_error.errno if os_error is not None else None
    if code in (errno.EACCES, errno.EPERM):
        return Problem(
            "permission",
            "No permission to use the agent's socket",
            f"{socket_path}: permission denied. Members of the group 'autogit' may read the socket; "
            "root and members of 'autogit-admin' may also act.",
            ("sudo usermod -aG autogit $USER    then log out and in again (or: newgrp autogit)",
             f"ls -l {socket_path}      (expect srw-rw---- root autogit)"),
        )
    if code == errno.ENOENT:
        return Problem("missing", "The agent is not running", f"There is no socket at {socket_path}.", _AGENT_FIXES)
    if code == errno.ECONNREFUSED:
        return Problem(
            "refused", "The agent is not running",
            f"{socket_path} exists but nobody listens on it (a stale socket).", _AGENT_FIXES,
        )
    if isinstance(exc, AgentUnavailable) and "timed out" in str(exc):
        return Problem("timeout", "The agent does not answer", str(exc), _AGENT_FIXES)
    return Problem("error", "Cannot reach the agent", str(exc) or type(exc).__name__, _AGENT_FIXES)


def event_line(event: Event, compact: bool = False) -> Text:
    text = Text()
    text.append(event.time.strftime("%H:%M:%S "), style="bright_black")
    text.append(f"{event.type} " if compact else f"{event.type:<22} ", style=event_style(event.type) or "bold")
    text.append(event.message)
    return text


# --- the detail view of one row (Enter) ------------------------------------------------------------

Detail = list[tuple[str, str]]


def _job_line(view: JobView | None, job_id: int) -> str:
    if view is None:
        return f"#{job_id}"
    job = view.job
    name = f" {job.name}" if job.name else ""
    return f"#{job.id}{name} (project {job.project_id})"


def _jobs_by_id(jobs: JobsResponse | None) -> dict[int, JobView]:
    return {v.job.id: v for v in jobs.jobs} if jobs is not None else {}


def _wait_text(view: JobView) -> str:
    if view.wait is None:
        return view.status.value
    text = view.wait.reason.value + (f": {view.wait.detail}" if view.wait.detail else "")
    if view.wait.missing_tags:
        text += f" [missing tags: {', '.join(view.wait.missing_tags)}]"
    return text


def job_detail(view: JobView, now: datetime) -> Detail:
    job = view.job
    rows = [
        ("Job", _job_line(view, job.id)),
        ("Link", job.web_url or "- (GitLab's answer carried none; instance scope lists jobs without one)"),
        ("Tags", ", ".join(job.tags) or "(untagged)"),
        ("Waited", since(job.created_at, now)),
        ("Status", view.status.value + (f" on {view.runner}" if view.runner else "")),
    ]
    if view.wait is not None:
        rows.append(("Why it waits", _wait_text(view)))
        if view.wait.missing_tags:
            rows.append(("Missing tags", ", ".join(view.wait.missing_tags)))
    return rows


def runner_detail(view: RunnerView, jobs: JobsResponse | None, now: datetime) -> Detail:
    r = view.runner
    rows = [
        ("Runner", r.id),
        ("State", view.state + (" (draining)" if r.draining and view.state != "draining" else "")),
        ("Kind", r.kind.value + (f", {r.platform}" if r.platform else "")),
        ("Tags", ", ".join(r.tags) or "(none)"),
        ("Untagged jobs", "yes" if r.run_untagged else "no"),
        ("GPU", r.gpu or "-"),
        ("Container", view.container or "-"),
        ("GitLab runner id", "-" if view.gitlab_id is None else str(view.gitlab_id)),
        ("Started", since(view.started_at, now) + " ago" if view.started_at else "-"),
    ]
    if view.job is None:
        rows.append(("Job", "-"))
    else:
        job = _jobs_by_id(jobs).get(view.job)
        rows.append(("Job", _job_line(job, view.job)))
        rows.append(("Link", job.job.web_url or "-" if job else "-"))
    return rows


def gpu_detail(view: GpuView, jobs: JobsResponse | None) -> Detail:
    g, reading = view.gpu, view.reading
    state = "UNHEALTHY" if not g.healthy else "drained" + (" (by an operator)" if view.operator_drained else " (on loss)") if g.drained else "busy" if view.held_by_runner else "free"
    rows = [
        ("GPU", g.id),
        ("Model", f"{g.model} ({g.vendor.value})"),
        ("Memory", f"{g.memory_mb / 1024:.1f} GiB" + (f", {reading.memory_used_mb / 1024:.1f} GiB used" if reading and reading.memory_used_mb is not None else "")),
        ("PCI", g.pci_bus_id or "-"),
        ("State", state),
        ("Tags", ", ".join(g.tags) or "-"),
        ("Runner", view.held_by_runner or "-"),
    ]
    if view.held_by_job is not None:
        job = _jobs_by_id(jobs).get(view.held_by_job)
        rows.append(("Job", _job_line(job, view.held_by_job)))
        rows.append(("Link", job.job.web_url or "-" if job else "-"))
    return rows


def queue_detail(group: QueueGroup, jobs: JobsResponse | None, now: datetime) -> Detail:
    rows = [
        ("Tag set", group.key),
        ("Jobs", f"{group.jobs}: {group.running} running, {group.served} served, {group.waiting} waiting, {group.unplanned} not planned yet"),
    ]
    if group.missing:
        rows.append(("Missing tags", ", ".join(group.missing)))
    for view in sorted((v for v in (jobs.jobs if jobs else []) if tuple(v.job.tags) == group.tags), key=lambda v: v.job.created_at):
        job = view.job
        name = f"{job.name}, " if job.name else ""
        rows.append((f"Job #{job.id}", f"{name}project {job.project_id}, pending for {since(job.created_at, now)}"))
        rows.append(("", _wait_text(view) + (f" on {view.runner}" if view.runner else "")))
        if job.web_url:
            rows.append(("", job.web_url))
    return rows


def fleet_detail(host: FleetHost, runner: FleetRunner | None, now: datetime) -> Detail:
    rows = [("Host", host.hostname + (" (this host)" if host.this_host else "")), ("Seen", since(host.last_seen, now) + " ago" if host.last_seen else "-")]
    if host.live is not None:
        rows += _fleet_member_rows(host, now)
    if runner is not None:
        rows += [
            ("Runner", runner.id),
            ("State", runner.state),
            ("Tags", ", ".join(runner.tags) or "(none)"),
            ("Platform", runner.platform or "-"),
            ("GPU", runner.gpu or "-"),
            ("Job", "-" if runner.job is None else f"#{runner.job}"),
        ]
    return rows


def _fleet_member_rows(host: FleetHost, now: datetime) -> Detail:
    beat = f"heartbeat {since(host.heartbeat_at, now)} ago" if host.heartbeat_at else "no heartbeat"
    return [
        ("Fleet", f"live, {beat}" if host.live else f"gone (presence older than fleet.membership_ttl), last {beat}"),
        *([("Joined", f"{since(host.joined_at, now)} ago (a newcomer ranks last for 2 × fleet.heartbeat_interval)")] if host.joined_at else []),
        ("Profiles", ", ".join(host.profiles) or "-"),
        ("Room", "?" if host.room is None else f"{host.room} more runner(s)"),
        ("Owns", ", ".join(f"#{j}" for j in host.owns) or "no pending job"),
    ]


def node_detail(node: ClusterNode, pods: list[ClusterPod]) -> Detail:
    """A cluster node in full (Enter on the Nodes tab): every tag it serves and every runner pod on it."""
    rows = [
        ("Node", node.name),
        ("Architecture", node.arch or "unknown (no kubernetes.io/arch label)"),
        ("Ready", "yes" if node.ready else "no (not Ready, or cordoned): the planner counts none of its room"),
        ("GPU", node.gpu_product or "-"),
        ("GPU resources", ", ".join(node.gpu_resources) or "-"),
        ("GPUs", f"{node.gpus_allocatable} allocatable, {node.gpus_used} used, {node.gpus_free} free"),
        ("Tags it serves", ", ".join(node.tags) or "(none)"),
    ]
    rows += [("Problem", p) for p in node.problems]
    rows += [(f"Runner {p.runner}", f"{p.role} pod {p.pod}: {p.phase or 'phase unknown'}") for p in pods if p.node == node.name]
    return rows
