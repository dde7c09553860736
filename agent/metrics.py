"""Prometheus metrics of one agent, in a registry of its own (never the process-global one, so
tests and several agents in one process do not collide, and no library's default collectors
leak into the agent's output).

Two kinds of series:
- Read from AgentState at scrape time by `StateCollector` (queue depth, runners, GPUs, GitLab
  and Docker error counts, event subscribers). Nothing has to push them, they are never stale,
  and a GPU or tag set that disappears stops being exported instead of freezing at its last value.
- Pushed by the code that sees the moment: the reconciler (`reconcile_seconds`,
  `record_scale_action`), the API (`api_refusals`), and the bus listener (`events`).

Secrets never become labels: labels are tag sets, states, architectures, GPU ids and models.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter as Tally
from collections.abc import Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .events import Event
from .state import AgentPhase, AgentState, LeaderRole

__all__ = ["CONTENT_TYPE", "AgentMetrics", "StateCollector", "start_metrics_listener", "parse_listen"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Scale actions take seconds (image pull, registration); reconcile passes take milliseconds.
_ACTION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_RECONCILE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def _arch(platform: str | None, host_arch: str) -> str:
    # 'linux/arm64' -> 'arm64', 'linux/arm/v7' -> 'arm/v7'; None: the host's own architecture.
    if not platform:
        return host_arch
    return platform.split("/", 1)[1] if "/" in platform else platform


class StateCollector(Collector):
    """Gauges and counters derived from an AgentState snapshot at scrape time."""

    def __init__(self, state: AgentState) -> None:
        self._state = state

    def collect(self) -> Iterable[Metric]:
        state = self._state
        host_arch = state.host.arch if state.host else "unknown"

        phase = GaugeMetricFamily("autogit_agent_phase", "1 for the agent's current phase.", labels=["phase"])
        for p in AgentPhase:
            phase.add_metric([p.value], 1.0 if state.phase is p else 0.0)
        yield phase

        yield GaugeMetricFamily("autogit_scaling_paused", "1 while an operator paused scaling.", value=float(state.intents.paused))

        queue = GaugeMetricFamily("autogit_queue_jobs", "Pending jobs by tag set ('' = untagged).", labels=["tags"])
        for tags, n in sorted(Tally(",".join(job.tags) for job in state.jobs).items()):
            queue.add_metric([tags], n)
        yield queue

        waiting = GaugeMetricFamily("autogit_jobs_waiting", "Jobs the latest plan could not serve, by reason.", labels=["reason"])
        if state.plan is not None:
            for reason, n in sorted(Tally(w.reason.value for w in state.plan.waiting).items()):
                waiting.add_metric([reason], n)
        yield waiting

        runners = GaugeMetricFamily("autogit_runners", "Runners by state and job architecture.", labels=["state", "arch"])
        for (st, arch), n in sorted(Tally((rv.state, _arch(rv.runner.platform, host_arch)) for rv in state.runners).items()):
            runners.add_metric([st, arch], n)
        yield runners

        util = GaugeMetricFamily("autogit_gpu_utilization_percent", "GPU utilisation (absent when unknown).", labels=["gpu", "model"])
        used = GaugeMetricFamily("autogit_gpu_memory_used_bytes", "GPU memory in use (absent when unknown).", labels=["gpu", "model"])
        total = GaugeMetricFamily("autogit_gpu_memory_total_bytes", "GPU memory.", labels=["gpu", "model"])
        healthy = GaugeMetricFamily("autogit_gpu_healthy", "1 healthy, 0 failed.", labels=["gpu", "model"])
        drained = GaugeMetricFamily("autogit_gpu_drained", "1 when drained (operator or loss).", labels=["gpu", "model"])
        for gpu in state.gpus():
            labels = [gpu.id, gpu.model]
            total.add_metric(labels, gpu.memory_mb * 1024 * 1024)
            healthy.add_metric(labels, float(gpu.healthy))
            drained.add_metric(labels, float(gpu.drained))
            reading = state.gpu_readings.get(gpu.id)
            # Unknown is not zero: a reading the backend could not take is left out.
            if reading is not None and reading.utilization_pct is not None:
                util.add_metric(labels, reading.utilization_pct)
            if reading is not None and reading.memory_used_mb is not None:
                used.add_metric(labels, reading.memory_used_mb * 1024 * 1024)
        yield from (util, used, total, healthy, drained)

        errors = CounterMetricFamily("autogit_component_errors", "Failed GitLab / Docker calls since start.", labels=["component"])
        up = GaugeMetricFamily("autogit_component_up", "1 reachable, 0 failing (absent until checked).", labels=["component"])
        for name in ("gitlab", "docker"):
            health = getattr(state, name)
            errors.add_metric([name], health.errors_total)
            if health.ok is not None:
                up.add_metric([name], float(health.ok))
        yield errors
        yield up

        if state.leadership.role is not LeaderRole.NOT_ELECTING:  # absent with leader_election off
            leads = float(state.leadership.role is LeaderRole.LEADER)
            yield GaugeMetricFamily("autogit_leader", "1 while this replica holds the Lease and acts, 0 while it follows.", value=leads)

        yield GaugeMetricFamily("autogit_event_subscribers", "Live event-stream subscribers.", value=state.bus.subscriber_count)
        yield CounterMetricFamily("autogit_reconcile_passes", "Reconcile passes since start.", value=state.reconcile_count)


class AgentMetrics:
    """The agent's registry and the series pushed by the reconciler and the API."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reconcile_seconds = Histogram(
            "autogit_reconcile_duration_seconds", "Time of one observe-plan-act pass.", buckets=_RECONCILE_BUCKETS, registry=r
        )
        self.scale_actions = Counter(
            "autogit_scale_actions", "Runner actions taken, by action and outcome.", ["action", "outcome"], registry=r
        )
        self.scale_action_seconds = Histogram(
            "autogit_scale_action_duration_seconds", "Time a runner action took, by action.", ["action"], buckets=_ACTION_BUCKETS, registry=r
        )
        self.api_refusals = Counter("autogit_api_refusals", "Socket requests refused, by reason.", ["reason"], registry=r)
        self.api_requests = Counter("autogit_api_requests", "Socket requests answered, by route and status.", ["route", "status"], registry=r)
        self.events = Counter("autogit_events", "Events published on the bus, by type.", ["type"], registry=r)
        self._bound = False

    def bind_state(self, state: AgentState) -> None:
        """Export `state` at every scrape and count its bus's events. Call once per agent."""
        if self._bound:
            raise RuntimeError("metrics already bound to a state")
        self._bound = True
        self.registry.register(StateCollector(state))
        state.bus.add_listener(self._on_event)

    def _on_event(self, event: Event) -> None:
        self.events.labels(type=event.type).inc()

    def record_scale_action(self, action: str, seconds: float, ok: bool) -> None:
        """For the reconciler: one start/stop/drain/remove taken, how long it took, whether it worked."""
        self.scale_actions.labels(action=action, outcome="ok" if ok else "error").inc()
        self.scale_action_seconds.labels(action=action).observe(seconds)

    @contextlib.contextmanager
    def time_scale_action(self, action: str) -> Iterator[None]:
        """`with metrics.time_scale_action("start"): ...`; an exception counts as an error and propagates."""
        began = time.monotonic()
        ok = False
        try:
            yield
            ok = True
        finally:
            self.record_scale_action(action, time.monotonic() - began, ok)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def parse_listen(listen: str) -> tuple[str, int]:
    """'127.0.0.1:9464' or '[::1]:9464' -> (host, port); ValueError otherwise."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"metrics_listen must be host:port, got {listen!r}")
    return host.strip("[]"), int(port)


async def start_metrics_listener(metrics: AgentMetrics, listen: str):
    """An optional TCP listener that serves GET /metrics and nothing else (no auth: it exposes
    only counts and ids). Returns the aiohttp AppRunner; `await runner.cleanup()` stops it."""
    from aiohttp import web

    async def handle(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application(client_max_size=1024)
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=15, max_line_size=4096, max_field_size=4096)
    await runner.setup()
    host, port = parse_listen(listen)
    await web.TCPSite(runner, host, port).start()
    return runner
