"""A small async client of the agent's socket API, for the CLI (`autogit-agent status`) and the TUI.

Two errors, by what the caller can do about them:
- AgentUnavailable: no answer at all (socket missing, refused, permission denied, timed out,
  connection dropped). The TUI shows "agent not running" and retries.
- AgentApiError: the agent answered with an error (status, type, message), e.g. 404 or 403.

Every call has a deadline; the event stream has a read deadline instead (the agent sends a
heartbeat line every 15 s, so silence for longer means it is gone).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, UTC
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, ValidationError

from .schema import (
    ClusterNode,
    ClusterReport,
    JobStatus,
    FleetHost,
    FleetResponse,
    ActionResponse,
    ErrorResponse,
    Event,
    GpusResponse,
    JobsResponse,
    LeaderRole,
    Leadership,
    PlanResponse,
    RunnersResponse,
    StatusResponse,
)

__all__ = ["DEFAULT_SOCKET", "AgentApiError", "AgentClient", "AgentUnavailable", "fleet_is_on", "format_fleet", "format_cluster", "format_status", "leadership_line", "status_fleet_section", "status_waits_section"]

DEFAULT_SOCKET = Path("/run/autogit/agent.sock")
M = TypeVar("M", bound=BaseModel)


class AgentUnavailable(Exception):
    """The agent did not answer (not running, no permission on the socket, or timed out)."""


class AgentApiError(Exception):
    def __init__(self, status: int, type: str, message: str) -> None:
        super().__init__(f"{status} {type}: {message}")
        self.status = status
        self.type = type
        self.message = message


class AgentClient:
    def __init__(self, socket_path: Path | str = DEFAULT_SOCKET, *, timeout: float = 5.0, connect_timeout: float = 2.0, stream_read_timeout: float = 45.0) -> None:
        self.socket_path = Path(socket_path)
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=connect_timeout)
        self._stream_timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=stream_read_timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None:
            # The host name is never resolved: the transport is the unix socket.
            self._session = aiohttp.ClientSession(
                base_url="http://autogit", connector=aiohttp.UnixConnector(path=str(self.socket_path)), timeout=self._timeout
            )
        return self._session

    def _unavailable(self, exc: BaseException) -> AgentUnavailable:
        if isinstance(exc, aiohttp.ClientConnectorError):
            os_error = exc.os_error
            if isinstance(os_error, PermissionError):
                why = "permission denied (is this user in the agent's socket group?)"
            elif isinstance(os_error, FileNotFoundError):
                why = "no socket there (is the agent running?)"
            elif isinstance(os_error, ConnectionRefusedError):
                why = "connection refused (is the agent running?)"
            else:
                why = str(os_error.strerror or os_error)
        elif isinstance(exc, TimeoutError):
            why = "timed out"
        else:
            why = str(exc) or type(exc).__name__
        return AgentUnavailable(f"agent at {self.socket_path}: {why}")

    async def _request(self, method: str, path: str, model: type[M], body: dict[str, Any] | None = None) -> M:
        try:
            async with self._sess().request(method, path, json=body) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise self._unavailable(exc) from exc
        if status >= 400:
            raise _api_error(status, raw)
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            raise AgentApiError(status, "bad_response", f"unexpected answer to {path}: {exc.errors()[0]['msg']}") from None

    # --- reads ---
    async def status(self) -> StatusResponse:
        return await self._request("GET", "/v1/status", StatusResponse)

    async def gpus(self) -> GpusResponse:
        return await self._request("GET", "/v1/gpus", GpusResponse)

    async def fleet(self) -> FleetResponse:
        return await self._request("GET", "/v1/fleet", FleetResponse)

    async def runners(self) -> RunnersResponse:
        return await self._request("GET", "/v1/runners", RunnersResponse)

    async def jobs(self) -> JobsResponse:
        return await self._request("GET", "/v1/jobs", JobsResponse)

    async def plan(self) -> PlanResponse:
        return await self._request("GET", "/v1/plan", PlanResponse)

    # --- actions ---
    async def _act(self, path: str, reason: str | None) -> ActionResponse:
        return await self._request("POST", path, ActionResponse, {"reason": reason} if reason else None)

    async def drain_gpu(self, gpu_id: str, reason: str | None = None) -> ActionResponse:
        return await self._act(f"/v1/gpus/{quote(gpu_id, safe=':')}/drain", reason)

    async def undrain_gpu(self, gpu_id: str, reason: str | None = None) -> ActionResponse:
        return await self._act(f"/v1/gpus/{quote(gpu_id, safe=':')}/undrain", reason)

    async def drain_runner(self, runner_id: str, reason: str | None = None) -> ActionResponse:
        return await self._act(f"/v1/runners/{quote(runner_id, safe=':')}/drain", reason)

    async def pause(self, reason: str | None = None) -> ActionResponse:
        return await self._act("/v1/scaling/pause", reason)

    async def resume(self, reason: str | None = None) -> ActionResponse:
        return await self._act("/v1/scaling/resume", reason)

    async def reload(self, reason: str | None = None) -> ActionResponse:
        return await self._act("/v1/config/reload", reason)

    # --- the stream ---
    async def events(self, since: int | None = None) -> AsyncIterator[Event]:
        """Events as they happen (after replaying those above `since`). Ends after a
        `stream.dropped` notice (reconnect with since=notice.data['since']) or when the agent
        closes the stream; raises AgentUnavailable when the agent goes silent or away."""
        params = {"since": str(since)} if since is not None else None
        try:
            async with self._sess().get("/v1/events", params=params, timeout=self._stream_timeout) as resp:
                if resp.status >= 400:
                    raise _api_error(resp.status, await resp.read())
                async for line in resp.content:
                    if line.strip():  # blank lines are heartbeats
                        yield Event.model_validate_json(line)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise self._unavailable(exc) from exc


def _api_error(status: int, raw: bytes) -> AgentApiError:
    try:
        err = ErrorResponse.model_validate_json(raw).error
        return AgentApiError(status, err.type.value, err.message)
    except (ValidationError, ValueError):
        return AgentApiError(status, "unknown", raw[:200].decode(errors="replace"))


# --- for humans ------------------------------------------------------------------------------


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _health(name: str, health: Any) -> str:
    if health.ok is None:
        return f"{name}: not checked" + (f" ({health.error})" if health.error else "")
    if health.ok:
        return f"{name}: ok"
    return f"{name}: FAILING since {_when(health.since)}: {health.error or '?'} ({health.errors_total} errors)"


def format_status(status: StatusResponse) -> str:
    """A few lines for `autogit-agent status`."""
    lines = []
    host = status.host
    if host is not None:
        emulated = f", emulates {', '.join(host.emulated)}" if host.emulated else ""
        lines.append(f"{status.hostname}: {host.arch}{emulated}; {host.cpus} CPUs, {host.memory_mb / 1024:.1f} GiB")
    else:
        lines.append(f"{status.hostname}: hardware not observed yet")
    lines.append(f"agent: {status.phase.value}, started {_when(status.started_at)}, last reconcile {_when(status.last_reconcile)} (pass {status.reconcile_count})")
    lines.append(f"{_health('gitlab', status.gitlab)}; {_health('docker', status.docker)}")
    for problem in status.gitlab.problems:  # GitLab answers, but refuses this (the rest goes on)
        lines.append(f"gitlab refuses: {problem}")
    lines.append("scaling: PAUSED by an operator" if status.paused else "scaling: active")
    c = status.counts
    by_state = ", ".join(f"{n} {state}" for state, n in c.runners.items())
    lines.append(f"runners: {c.runners_total}" + (f" ({by_state})" if by_state else ""))
    lines.append(f"jobs: {c.pending_jobs} pending, {c.waiting_jobs} waiting")
    lines.append(f"gpus: {c.gpus} ({c.gpus_busy} busy, {c.gpus_drained} drained, {c.gpus_unhealthy} unhealthy)")
    if (role := leadership_line(status.leadership)) is not None:
        lines.append(role)
    cfg = status.config
    if cfg is not None:
        line = f"config: read {_when(cfg.loaded_at)}" + (f", {cfg.reloads} reload(s), last applied: {', '.join(cfg.applied) or 'nothing new'}" if cfg.reloads else "")
        lines.append(line)
        if cfg.restart_needed:
            lines.append(f"config: RESTART NEEDED to apply {', '.join(cfg.restart_needed)} (systemctl restart autogit-agent)")
    if status.cluster is not None:
        lines += format_cluster(status.cluster)
    return "\n".join(lines)


CLUSTER_NODES_SHOWN = 40  # `status` lists this many nodes; --json has them all


def format_cluster(cluster: ClusterReport) -> list[str]:
    """The cluster section of `status` (runner.runtime kubernetes): a summary, one line per node
    (GPUs not ready first, then by name), the runner pods, and the inventory's API requests."""
    selector = f" matching {cluster.node_selector}" if cluster.node_selector else ""
    if not cluster.known:
        return [f"cluster: UNKNOWN ({cluster.unknown_reason or '?'}): nothing is planned until the nodes are listed"]
    nodes = cluster.nodes
    ready = sum(1 for n in nodes if n.ready)
    alloc, used, free = (sum(getattr(n, f) for n in nodes) for f in ("gpus_allocatable", "gpus_used", "gpus_free"))
    lines = [f"cluster: {len(nodes)} node(s){selector}, {ready} ready; GPUs {alloc} allocatable, {used} used, {free} free"]
    lines += _node_lines(nodes)
    lines += [f"cluster: could not read {p}" for p in cluster.problems]
    for pod in cluster.runner_pods:
        where = f"on {pod.node}" if pod.node else "not scheduled yet"
        lines.append(f"runner {pod.runner}: {pod.role} pod {pod.pod} {pod.phase or 'phase unknown'} {where}")
    if cluster.api_requests:
        lines.append("cluster API requests since start: " + ", ".join(f"{k} ×{n}" for k, n in cluster.api_requests.items()))
    return lines


def _node_lines(nodes: list[ClusterNode]) -> list[str]:
    """A table of the first CLUSTER_NODES_SHOWN nodes, with what could not be read on each."""
    lines = [f"  {'NODE':<28} {'ARCH':<6} {'READY':<5} {'GPU':<26} {'ALLOC':>5} {'USED':>5} {'FREE':>5}"] if nodes else []
    for n in nodes[:CLUSTER_NODES_SHOWN]:
        gpu = n.gpu_product or (", ".join(n.gpu_resources) if n.gpu_resources else "-")
        lines.append(f"  {n.name[:28]:<28} {n.arch or '?':<6} {'yes' if n.ready else 'NO':<5} {gpu[:26]:<26} "
                     f"{n.gpus_allocatable:>5} {n.gpus_used:>5} {n.gpus_free:>5}")  # fmt: skip
        lines += [f"    problem: {p}" for p in n.problems]
    if len(nodes) > CLUSTER_NODES_SHOWN:
        lines.append(f"  … {len(nodes) - CLUSTER_NODES_SHOWN} more (autogit-agent status --json lists them all)")
    return lines


WAITS_SHOWN = 10


async def status_waits_section(client: AgentClient) -> str | None:
    """Why pending jobs wait (the planner's reasons, /v1/jobs), for `status`: None when none
    waits, one line when the jobs cannot be read."""
    try:
        jobs = await client.jobs()
    except (AgentUnavailable, AgentApiError) as exc:
        return f"waiting jobs: unavailable ({exc})"
    waits = [v for v in jobs.jobs if v.status is JobStatus.WAITING and v.wait is not None]
    if not waits:
        return None
    lines = [f"job {v.job.id} [{', '.join(v.job.tags) or 'untagged'}] waits: {v.wait.reason.value}: {v.wait.detail}" for v in waits[:WAITS_SHOWN] if v.wait]
    if len(waits) > WAITS_SHOWN:
        lines.append(f"… {len(waits) - WAITS_SHOWN} more waiting jobs (autogit-tui's Queue tab, or GET /v1/jobs)")
    return "\n".join(lines)


def leadership_line(leadership: Leadership | None) -> str | None:
    """`role: leader ...` / `role: follower ...` under leader_election; None when it is off."""
    if leadership is None or leadership.role is LeaderRole.NOT_ELECTING:
        return None
    since = _when(leadership.since)
    if leadership.role is LeaderRole.LEADER:
        return f"role: LEADER ({leadership.identity}, acting) since {since}; Lease {leadership.lease}"
    leads = f"{leadership.holder} leads" if leadership.holder else "nobody leads yet"
    return f"role: FOLLOWER ({leadership.identity}, observing only, acts nothing) since {since}; {leads}; Lease {leadership.lease}"


def fleet_is_on(fleet: FleetResponse) -> bool:
    """Whether the agent runs with fleet.enabled: only then does any host carry a liveness verdict."""
    return any(h.live is not None for h in fleet.hosts)


def _ago(moment: datetime, now: datetime) -> str:
    s = max(0, int((now - moment).total_seconds()))
    if s < 120:
        return f"{s} s ago"
    if s < 7200:
        return f"{s // 60} min ago"
    return f"{s // 3600} h ago"


def _fleet_host_line(host: FleetHost, now: datetime) -> str:
    if host.live is None:  # registrations seen in GitLab, but no presence: an agent without the fleet
        liveness = "no presence"
    else:
        beat = "no heartbeat" if host.heartbeat_at is None else f"heartbeat {_ago(host.heartbeat_at, now)}"
        joined = f", joined {_ago(host.joined_at, now)}" if host.joined_at is not None else ""
        liveness = f"{'live' if host.live else 'DEAD'} ({beat}{joined})"
    profiles = ", ".join(host.profiles) or "-"
    room = "?" if host.room is None else str(host.room)
    owns = ", ".join(str(j) for j in host.owns) or "none"
    runners = f"{len(host.runners)} runner{'' if len(host.runners) == 1 else 's'}"
    return f"  {host.hostname}: {liveness}; profiles {profiles}; room {room}; owns {owns}; {runners}"


def format_fleet(fleet: FleetResponse, now: datetime) -> str:
    """The `fleet` section of `autogit-agent status`: one line per host, then why each pending
    job this host does not plan for is another's. `now` is an argument so the ages are testable."""
    if not fleet_is_on(fleet):
        return f"fleet: off (fleet.enabled is false); {len(fleet.hosts)} host(s) on this GitLab"
    live = sum(1 for h in fleet.hosts if h.live)
    lines = [f"fleet: {len(fleet.hosts)} host(s), {live} live"]
    lines += [_fleet_host_line(h, now) for h in fleet.hosts]
    if fleet.ownership:
        lines.append("  ownership (pending jobs this host leaves to others):")
        lines += [f"    {line}" for line in fleet.ownership]
    return "\n".join(lines)


async def status_fleet_section(client: AgentClient, now: datetime) -> str | None:
    """The fleet section that `status` appends: None when the fleet is off (nothing to add), one
    line when the fleet cannot be read (an older agent's 404, a timeout): status still shows."""
    try:
        fleet = await client.fleet()
    except (AgentUnavailable, AgentApiError) as exc:
        return f"fleet: unavailable ({exc})"
    return format_fleet(fleet, now) if fleet_is_on(fleet) else None
