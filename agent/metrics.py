"""Prometheus metrics of one agent, in a registry of its own (never the process-global one, so
tests and several agents in one process do not collide, and no library's default collectors
leak into the agent's output).

Two kinds of series:
- Read from AgentState at scrape time by `StateCollector` (queue depth, runners, GPUs, GitLab
  and Docker error counts, event subscribers). Nothing has to push them, they are never stale,
  and a GPU or tag set that disappears stops being exported instead of freezing at its last value.
- Pushed by the code that sees the moment: the reconciler (`reconcile_seconds`,
  `record_scale_action`, and `observe_pass` once per pass: queue time, runner ready time, fleet
  claims), the API (`api_refusals`), the bus listener (`events`, runner start failures), and
  the GitLab adapter's answer hook (`watch_gitlab`: calls by endpoint class, rate-limit budget).

Tag sets are bounded labels (agent/queuetimes.py): at most TAG_SETS_MAX of their own, the rest
`other`. Every series is listed in docs/operations/metrics.md.

Secrets never become labels: labels are tag sets, states, architectures, GPU ids and models.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, UTC
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .digits import parse_uint
from .listen import parse_listen
from .events import Event
from .model import Job, RunnerKind, WaitReason
from .queuetimes import OTHER, QueueTimes, TagSetLabels, largest_tag_sets, tag_set
from .state import AgentPhase, AgentState, LeaderRole
from .tcp_guard import ConnectionGuard, ConnectionLimits, GuardedRunner

if TYPE_CHECKING:
    from .gitlab.adapter import GitLabAdapter, QueueSnapshot

__all__ = [
    "CONTENT_TYPE", "METRICS_LIMITS", "START_FAILURE_CAUSES", "WEBHOOK_OUTCOMES", "WEBHOOK_REFUSALS", "AgentMetrics", "StateCollector", "endpoint_class", "start_failure_cause",
    "start_metrics_listener",
]  # fmt: skip

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Scale actions take seconds (image pull, registration); reconcile passes take milliseconds.
_ACTION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_RECONCILE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Queue times run from a second (a warm runner) to hours (hardware nobody has).
_QUEUE_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)

RUNNER_STATES = ("starting", "idle", "busy", "draining", "stopping")  # RunnerView.state
START_FAILURE_CAUSES = (
    "gitlab-refused", "gitlab-rate-limited", "gitlab-error", "invalid-configuration", "runtime-unavailable", "runtime-error", "other",
)  # fmt: skip


def start_failure_cause(exc: BaseException) -> str:
    """Why a runner could not be started, as a bounded label (runner.start-failed's `cause`),
    from the adapters' one error tree (agent/errors.py, ADR-010): runtime-neutral."""
    from .errors import AdapterError, InvalidConfiguration, Transient
    from .gitlab.adapter import GitLabError

    if isinstance(exc, GitLabError):
        return "gitlab-refused" if exc.permission else "gitlab-rate-limited" if exc.status == 429 else "gitlab-error"
    if isinstance(exc, InvalidConfiguration):
        return "invalid-configuration"
    if isinstance(exc, Transient):
        return "runtime-unavailable"
    return "runtime-error" if isinstance(exc, AdapterError) else "other"


# GitLab API paths → a bounded endpoint class (ids never become labels).
_ENDPOINTS = (
    (re.compile(r"/api/graphql$"), "graphql"),
    (re.compile(r"/api/v4/projects/[^/]+/jobs(/|$)"), "jobs"),
    (re.compile(r"/api/v4/groups/[^/]+/projects$"), "projects"),
    (re.compile(r"/api/v4/(projects/[^/]+/|user/)?runners(/|$)"), "runners"),
    (re.compile(r"/api/v4/user$"), "user"),
)


ENDPOINT_CLASSES = tuple(name for _, name in _ENDPOINTS) + ("other",)
REFUSAL_CODES = ("401", "403", "404", "429")
WEBHOOK_REFUSALS = ("token", "bad-request", "timeout")
# looked-up: a GitLab call made; merged: into a lookup queued, in flight or just made for the
# same job and status; out-of-scope: a project outside gitlab.scope (no call); budget: GitLab's
# rate-limit budget was low (no call); overflow: too many lookups queued; ignored: not a Job Hook.
WEBHOOK_OUTCOMES = ("looked-up", "merged", "out-of-scope", "budget", "overflow", "ignored")
# GitLab's rate limits are a dozen named throttles (lib/gitlab/rack_attack.rb); room for a few more.
MAX_RATELIMIT_NAMES = 16
_RATELIMIT_NAME = re.compile(r"[a-z0-9_]{1,64}")
# The /metrics listener's caps: Prometheus scrapes with one connection per target and scraper.
METRICS_LIMITS = ConnectionLimits(max_connections=32, max_per_address=8, idle_timeout=10.0, max_lifetime=60.0)


def endpoint_class(path: str) -> str:
    """'/api/v4/projects/7/jobs' → 'jobs'; anything unlisted → 'other'."""
    return next((name for pattern, name in _ENDPOINTS if pattern.search(path)), "other")


def _arch(platform: str | None, host_arch: str) -> str:
    # 'linux/arm64' -> 'arm64', 'linux/arm/v7' -> 'arm/v7'; None: the host's own architecture.
    if not platform:
        return host_arch
    return platform.split("/", 1)[1] if "/" in platform else platform


class StateCollector(Collector):
    """Gauges and counters derived from an AgentState snapshot at scrape time."""

    def __init__(self, state: AgentState, metrics: AgentMetrics | None = None) -> None:
        self._state = state
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        state = self._state
        now = self._metrics.clock() if self._metrics is not None else datetime.now(UTC)
        yield from self._agent(state)
        yield from self._queue(state, now)
        yield from self._runners(state)
        yield from self._gpus(state)
        yield from self._components(state)

    @staticmethod
    def _agent(state: AgentState) -> Iterable[Metric]:
        phase = GaugeMetricFamily("autogit_agent_phase", "1 for the agent's current phase.", labels=["phase"])
        for p in AgentPhase:
            phase.add_metric([p.value], 1.0 if state.phase is p else 0.0)
        yield phase
        yield GaugeMetricFamily("autogit_scaling_paused", "1 while an operator paused scaling.", value=float(state.intents.paused))
        if state.leadership.role is not LeaderRole.NOT_ELECTING:  # absent with leader_election off
            leads = float(state.leadership.role is LeaderRole.LEADER)
            yield GaugeMetricFamily("autogit_leader", "1 while this replica holds the Lease and acts, 0 while it follows.", value=leads)

    def _queue(self, state: AgentState, now: datetime) -> Iterable[Metric]:
        queue = GaugeMetricFamily("autogit_queue_jobs", "Pending jobs this host plans for, by tag set ('' = untagged; bounded, rest 'other').", labels=["tags"])
        for tags, n in _bounded_counts(state.jobs).items():
            queue.add_metric([tags], n)
        yield queue

        # The queue as GitLab shows it in the configured scope (the same on every host of a fleet).
        pending = self._metrics.pending if self._metrics is not None else state.jobs
        pending_gauge = GaugeMetricFamily("autogit_pending_jobs", "Pending jobs in GitLab's queue by tag set (bounded, rest 'other').", labels=["tags"])
        oldest = GaugeMetricFamily("autogit_pending_oldest_seconds", "Age of the oldest pending job by tag set, from when it was queued.", labels=["tags"])
        for tags, n in _bounded_counts(pending).items():
            pending_gauge.add_metric([tags], n)
        for tags, age in _bounded_oldest(pending, now).items():
            oldest.add_metric([tags], age)
        yield pending_gauge
        yield oldest
        yield GaugeMetricFamily(
            "autogit_pending_oldest_wait_seconds", "Age of the oldest pending job of the queue (0: none pending).",
            value=max((_waited(j, now) for j in pending), default=0.0),
        )  # fmt: skip

        waiting = GaugeMetricFamily("autogit_jobs_waiting", "Jobs the latest plan could not serve, by reason (every reason, 0 included).", labels=["reason"])
        if state.plan is not None:
            reasons = Tally(w.reason.value for w in state.plan.waiting)
            for reason in WaitReason:
                waiting.add_metric([reason.value], reasons.get(reason.value, 0))
        yield waiting

        owned = GaugeMetricFamily("autogit_fleet_jobs", "Pending jobs by the fleet host that owns them, as this host computes it ('' = no live host can).", labels=["owner"])
        for owner, n in sorted(Tally(o.owner or "" for o in state.ownership).items()):
            owned.add_metric([owner], n)
        yield owned

    @staticmethod
    def _runners(state: AgentState) -> Iterable[Metric]:
        host_arch = state.host.arch if state.host else "unknown"
        runners = GaugeMetricFamily("autogit_runners", "Runners by state and job architecture.", labels=["state", "arch"])
        tally = Tally((rv.state, _arch(rv.runner.platform, host_arch)) for rv in state.runners)
        for st in RUNNER_STATES:  # every state of the host's own architecture, 0 included: "none" is not "no data"
            tally.setdefault((st, host_arch), 0)
        for (st, arch), n in sorted(tally.items()):
            runners.add_metric([st, arch], n)
        yield runners

    @staticmethod
    def _gpus(state: AgentState) -> Iterable[Metric]:
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

        held = {rv.runner.gpu: rv.state for rv in state.runners if rv.runner.gpu}
        gpus = GaugeMetricFamily("autogit_gpus", "GPUs by state: busy (its runner runs a job), held (its runner is idle), free, drained, unhealthy.", labels=["state"])
        by_state = Tally(_gpu_state(g.healthy, g.drained, held.get(g.id)) for g in state.gpus())
        for gpu_state in ("busy", "held", "free", "drained", "unhealthy"):
            gpus.add_metric([gpu_state], by_state.get(gpu_state, 0))
        yield gpus

    @staticmethod
    def _components(state: AgentState) -> Iterable[Metric]:
        errors = CounterMetricFamily("autogit_component_errors", "Failed GitLab / Docker calls since start.", labels=["component"])
        up = GaugeMetricFamily("autogit_component_up", "1 reachable, 0 failing (absent until checked).", labels=["component"])
        for name in ("gitlab", "docker"):
            health = getattr(state, name)
            errors.add_metric([name], health.errors_total)
            if health.ok is not None:
                up.add_metric([name], float(health.ok))
        yield errors
        yield up
        yield GaugeMetricFamily("autogit_event_subscribers", "Live event-stream subscribers.", value=state.bus.subscriber_count)
        yield CounterMetricFamily("autogit_reconcile_passes", "Reconcile passes since start.", value=state.reconcile_count)


def _waited(job: Job, now: datetime) -> float:
    return max(0.0, (now - (job.queued_at or job.created_at)).total_seconds())


def _bounded_counts(jobs: Iterable[Job]) -> dict[str, int]:
    counts = Tally(tag_set(job.tags) for job in jobs)
    keep = largest_tag_sets(counts)
    out: dict[str, int] = {}
    for tags, n in sorted(counts.items()):
        label = tags if tags in keep else OTHER
        out[label] = out.get(label, 0) + n
    return out


def _bounded_oldest(jobs: list[Job], now: datetime) -> dict[str, float]:
    keep = largest_tag_sets(Tally(tag_set(job.tags) for job in jobs))
    out: dict[str, float] = {}
    for job in jobs:
        label = tag_set(job.tags)
        label = label if label in keep else OTHER
        out[label] = max(out.get(label, 0.0), _waited(job, now))
    return dict(sorted(out.items()))


def _gpu_state(healthy: bool, drained: bool, runner_state: str | None) -> str:
    if not healthy:
        return "unhealthy"
    if runner_state is not None:
        return "busy" if runner_state in {"busy", "draining"} else "held"
    return "drained" if drained else "free"


class AgentMetrics:
    """The agent's registry and the series pushed by the reconciler and the API."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self.clock = clock or (lambda: datetime.now(UTC))
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
        kinds = [k.value for k in RunnerKind]
        self.queue_seconds = Histogram(
            "autogit_job_queue_seconds", "Seconds from pending to running (GitLab's queued_duration) of the jobs this host's runners "
            "started, by runner kind and tag set (bounded, rest 'other').", ["kind", "tags"], buckets=_QUEUE_BUCKETS, registry=r,
        )  # fmt: skip
        self.ready_seconds = Histogram(
            "autogit_job_runner_ready_seconds", "Seconds from a job queued to a runner started for it, by runner kind.", ["kind"],
            buckets=_QUEUE_BUCKETS, registry=r,
        )  # fmt: skip
        self.start_failures = Counter("autogit_runner_start_failures", "Runner starts that failed, by kind and cause.", ["kind", "cause"], registry=r)
        for kind in kinds:
            self.ready_seconds.labels(kind=kind)
            for cause in START_FAILURE_CAUSES:
                self.start_failures.labels(kind=kind, cause=cause)
        self.gitlab_requests = Counter(
            "autogit_gitlab_requests", "HTTP answers from GitLab (retries included), by endpoint class and status code.", ["endpoint", "code"], registry=r
        )
        # Refusals start at 0, so that the first one shows in increase() and the panel has series.
        for endpoint in ENDPOINT_CLASSES:
            for code in REFUSAL_CODES:
                self.gitlab_requests.labels(endpoint=endpoint, code=code)
        self.gitlab_ratelimit_remaining = Gauge(
            "autogit_gitlab_ratelimit_remaining", "Requests left in GitLab's rate-limit window (RateLimit-Remaining), by limit.", ["limit"], registry=r
        )
        self.gitlab_ratelimit_limit = Gauge("autogit_gitlab_ratelimit_limit", "GitLab's rate limit per window (RateLimit-Limit), by limit.", ["limit"], registry=r)
        # The TCP listeners (agent/tcp_guard.py) and the webhook (agent/gitlab/webhook.py): every
        # refusal counted here, while events and log lines about them are rate-limited.
        self.tcp_refused = Counter(
            "autogit_tcp_refused_connections", "Connections a TCP listener closed at once, over its cap in all or per client address.",
            ["listener", "reason"], registry=r,
        )  # fmt: skip
        self.accept_errors = Counter("autogit_accept_errors", "accept() calls that failed for want of descriptors or memory.", registry=r)
        self.webhook_refusals = Counter("autogit_webhook_refusals", "Webhook requests refused, by reason.", ["reason"], registry=r)
        self.webhook_hooks = Counter("autogit_webhook_hooks", "Accepted webhook calls, by what became of them.", ["outcome"], registry=r)
        self._ratelimit_names: set[str] = set()  # RateLimit-Name values taken as labels (bounded)
        for listener in ("webhook", "metrics", "health"):
            for reason in ("connections", "per-address"):
                self.tcp_refused.labels(listener=listener, reason=reason)
        for reason in WEBHOOK_REFUSALS:
            self.webhook_refusals.labels(reason=reason)
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook_hooks.labels(outcome=outcome)
        self.fleet_claims = Counter("autogit_fleet_claimed_jobs", "Jobs this host claimed in a fleet: as owner or taken over from a slower host.", ["claim"], registry=r)
        for claim in ("owner", "takeover"):
            self.fleet_claims.labels(claim=claim)
        self.queue_times = QueueTimes(clock=lambda: self.clock().timestamp())  # the console's last hour (/v1/jobs)
        self.pending: list[Job] = []  # GitLab's pending jobs as of the last pass
        self._tag_labels = TagSetLabels()
        self._seen_running: set[int] = set()
        self._claimed: set[int] = set()
        self._observed = False
        self._started_for: list[tuple[datetime, str, list[int], float | None]] = []  # runner.started not yet resolved
        self._bound = False

    def bind_state(self, state: AgentState) -> None:
        """Export `state` at every scrape and count its bus's events. Call once per agent."""
        if self._bound:
            raise RuntimeError("metrics already bound to a state")
        self._bound = True
        self.registry.register(StateCollector(state, self))
        state.bus.add_listener(self._on_event)

    def watch_gitlab(self, adapter: GitLabAdapter | None) -> None:
        """Count `adapter`'s calls and read GitLab's rate-limit budget from its answers."""
        if adapter is not None:
            adapter.on_answer(self._on_gitlab_answer)

    def _on_gitlab_answer(self, resp: Any, *args: Any, **kwargs: Any) -> None:
        from urllib.parse import urlsplit

        self.gitlab_requests.labels(endpoint=endpoint_class(urlsplit(resp.url).path), code=str(resp.status_code)).inc()
        name = self._ratelimit_label(resp.headers.get("RateLimit-Name"))
        for header, gauge in (("RateLimit-Remaining", self.gitlab_ratelimit_remaining), ("RateLimit-Limit", self.gitlab_ratelimit_limit)):
            value = parse_uint(resp.headers.get(header))
            if value is not None:
                gauge.labels(limit=name).set(value)

    def _ratelimit_label(self, name: str | None) -> str:
        """GitLab's throttle names (`throttle_authenticated_api`, lib/gitlab/rack_attack.rb) as a
        label value; anything else, or more names than a GitLab has, is `other`: a label value
        taken from a server's header must not grow the series without bound."""
        if not name:
            return "unnamed"
        if name in self._ratelimit_names:
            return name
        if _RATELIMIT_NAME.fullmatch(name) is None or len(self._ratelimit_names) >= MAX_RATELIMIT_NAMES:
            return "other"
        self._ratelimit_names.add(name)
        return name

    def _on_event(self, event: Event) -> None:
        self.events.labels(type=event.type).inc()
        if event.type == "runner.start-failed":
            self.start_failures.labels(kind=event.data.get("kind", "native"), cause=event.data.get("cause", "other")).inc()
        elif event.type == "runner.started" and event.data.get("for_jobs"):
            self._started_for.append((event.time, str(event.data.get("kind")), list(event.data["for_jobs"]), event.data.get("scale_up_seconds")))

    def oldest_wait(self) -> float | None:
        """Seconds the oldest job of GitLab's queue has waited (0: none pending); None before the first pass."""
        if not self._observed:
            return None
        now = self.clock()
        return max((_waited(j, now) for j in self.pending), default=0.0)

    def observe_pass(self, state: AgentState, queue: QueueSnapshot) -> None:
        """For the reconciler, after each pass that observed GitLab: the queue times of the jobs
        this host's runners started since the last pass, how long the jobs a runner was started
        for waited for it, and the jobs this host claimed in a fleet."""
        self.pending = list(queue.pending)
        self._observed = True
        self._tag_labels.admit(Tally(tag_set(j.tags) for j in queue.pending))
        self._observe_queue_times(state, queue)
        self._observe_ready(state, queue)
        self._observe_claims(state, queue)

    def _observe_queue_times(self, state: AgentState, queue: QueueSnapshot) -> None:
        kind_of = {rv.gitlab_id: rv.runner.kind.value for rv in state.runners if rv.gitlab_id is not None}
        for job in queue.running:
            kind = kind_of.get(job.runner_id) if job.runner_id is not None else None
            # Another host's runner counts it there; GitLab not saying how long it queued is unknown, not zero.
            if job.id in self._seen_running or kind is None or job.queued_duration is None:
                continue
            self._seen_running.add(job.id)
            tags = tag_set(job.tags)
            self.queue_seconds.labels(kind=kind, tags=self._tag_labels.label(tags)).observe(job.queued_duration)
            self.queue_times.add(tags, job.queued_duration)
        self._seen_running &= {job.id for job in queue.running}

    def _observe_ready(self, state: AgentState, queue: QueueSnapshot) -> None:
        queued = {j.id: j for j in [*queue.pending, *state.jobs]}
        for when, kind, jobs, fallback in self._started_for:
            for job_id in jobs:
                queued_job = queued.get(job_id)
                waited = (when - (queued_job.queued_at or queued_job.created_at)).total_seconds() if queued_job is not None else fallback
                if waited is not None:
                    self.ready_seconds.labels(kind=kind).observe(max(0.0, waited))
        self._started_for.clear()

    def _observe_claims(self, state: AgentState, queue: QueueSnapshot) -> None:
        mine = {o.job: o.claim.value for o in state.ownership if o.mine and o.claim.value in ("owner", "takeover")}
        for job_id in mine.keys() - self._claimed:
            self.fleet_claims.labels(claim=mine[job_id]).inc()
        self._claimed = (self._claimed | mine.keys()) & {j.id for j in queue.pending}

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


async def start_metrics_listener(metrics: AgentMetrics, listen: str, limits: ConnectionLimits = METRICS_LIMITS):
    """An optional TCP listener that serves GET /metrics and nothing else (no auth: it exposes
    only counts and ids), behind a ConnectionGuard (`limits`). Every error is one line of text,
    never a traceback: a collector that fails is one log line and a 500 naming no detail.
    Returns the aiohttp AppRunner; `await runner.cleanup()` stops it."""
    import logging

    from aiohttp import web

    log = logging.getLogger("autogit.metrics")

    async def handle(_request: web.Request) -> web.Response:
        try:
            body = metrics.render()
        except Exception as exc:  # noqa: BLE001 - a collector's bug: one line, and the listener keeps serving
            log.error("rendering /metrics failed: %s: %s", type(exc).__name__, " ".join(str(exc).split())[:200])
            return web.Response(status=500, text="metrics could not be rendered (see the agent's log)\n")
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app = web.Application(client_max_size=1024)
    app.router.add_get("/metrics", handle)
    guard = ConnectionGuard("metrics", limits, lambda reason: metrics.tcp_refused.labels(listener="metrics", reason=reason).inc())
    runner = GuardedRunner(app, guard, access_log=None, max_line_size=4096, max_field_size=4096, max_headers=32, handle_signals=False,
                           shutdown_timeout=2.0)  # fmt: skip
    await runner.setup()
    host, port = parse_listen(listen, "api.metrics_listen")
    await web.TCPSite(runner, host, port).start()
    return runner
