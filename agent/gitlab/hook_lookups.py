"""What an accepted Job Hook costs GitLab: at most one job lookup per job and status, a few at
a time, inside the configured scope and GitLab's rate-limit budget.

A Job Hook carries no tags, so each one needs `GET /projects/:id/jobs/:job_id` before the
planner can use it. Hooks repeat (GitLab retries one it thinks failed; a job's hooks follow its
status), and whoever holds the webhook secret can send any number: so

- a project outside `gitlab.scope` is dropped before any GitLab call (`out-of-scope`);
- a hook for a job whose lookup is queued, in flight, or was made in the last `recent_s`
  seconds with the same status is merged into it (`merged`): one call per job and status;
- at most `concurrency` lookups run at once; at most `max_pending` wait (`overflow` beyond);
- while GitLab's RateLimit budget, as the adapter last read it, is low (`budget_low`), no
  lookup is made (`budget`): the polls, which pace themselves by that budget, see the job.

Every drop is safe: the next poll sees every pending job of the scope. Each outcome is counted
(`autogit_webhook_hooks_total{outcome}`); drops are said at most once per `event_interval`.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from ..events import EventBus
from ..throttle import Throttle

if TYPE_CHECKING:
    from ..metrics import AgentMetrics

__all__ = ["HookLookups", "JobHint", "budget_low"]

JobHint = Callable[[int, int, str], Awaitable[None]]  # (project_id, job_id, status)

# The webhook's lookups leave GitLab's last quarter of a rate-limit window to the polls (which
# use at most half of it: GitLabAdapter.min_poll_interval) and to the token user's other clients.
_RESERVE_FRACTION = 4
_RESERVE_MIN = 10


def budget_low(rate_limit: Mapping[str, int]) -> bool:
    """True when GitLab's last RateLimit-Remaining is under a quarter of RateLimit-Limit (or
    under 10); unknown (GitLab sent no header yet) is not low: the adapter retries a 429."""
    remaining = rate_limit.get("remaining")
    if remaining is None:
        return False
    limit = rate_limit.get("limit") or 0
    return remaining < max(_RESERVE_MIN, limit // _RESERVE_FRACTION)


class HookLookups:
    def __init__(
        self,
        lookup: JobHint,
        bus: EventBus,
        metrics: AgentMetrics | None = None,
        *,
        in_scope: Callable[[int], bool] | None = None,
        budget_low: Callable[[], bool] | None = None,
        concurrency: int = 4,
        max_pending: int = 1024,
        recent_s: float = 30.0,
        event_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._bus = bus
        self._metrics = metrics
        self._in_scope = in_scope or (lambda _project: True)
        self._budget_low = budget_low or (lambda: False)
        self._concurrency = concurrency
        self._max_pending = max_pending
        self._recent_s = recent_s
        self._clock = clock
        self._pending: OrderedDict[int, tuple[int, str]] = OrderedDict()  # job → (project, status), oldest first
        self._inflight: dict[int, str] = {}  # job → status being looked up
        self._recent: OrderedDict[int, tuple[str, float]] = OrderedDict()  # job → (status, when) of lookups made
        self._workers: set[asyncio.Task[None]] = set()
        self._said = Throttle(event_interval, clock)  # 'webhook.dropped' events per outcome
        self.outcomes: dict[str, int] = {}

    def submit(self, project_id: int, job_id: int, status: str) -> str:
        """Take one accepted hook; returns its outcome (see the module's docstring)."""
        if not self._in_scope(project_id):
            return self._drop("out-of-scope", f"project {project_id} is outside gitlab.scope (or the scope is not read yet): "
                                              f"job {job_id} not looked up")  # fmt: skip
        if self._merges(job_id, status):
            return self._count("merged")
        if len(self._pending) >= self._max_pending:
            return self._drop("overflow", f"{self._max_pending} job lookups already queued: job {job_id} left to the next poll")
        self._pending[job_id] = (project_id, status)
        self._start_workers()
        return "queued"

    def _merges(self, job_id: int, status: str) -> bool:
        if job_id in self._pending:
            project_id, _ = self._pending[job_id]
            self._pending[job_id] = (project_id, status)  # the newest status; one lookup reads the job as it is then
            return True
        if self._inflight.get(job_id) == status:
            return True
        recent = self._recent.get(job_id)
        return recent is not None and recent[0] == status and self._clock() - recent[1] < self._recent_s

    def _start_workers(self) -> None:
        while self._pending and len(self._workers) < self._concurrency:
            task = asyncio.get_running_loop().create_task(self._work())
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    async def _work(self) -> None:
        while self._pending:
            job_id, (project_id, status) = self._pending.popitem(last=False)
            if self._budget_low():
                self._drop("budget", f"GitLab's rate-limit budget is low: job {job_id} left to the next poll")
                continue
            self._count("looked-up")
            self._inflight[job_id] = status
            try:
                await self._lookup(project_id, job_id, status)
            except Exception as exc:  # noqa: BLE001 - one failed lookup must not end the worker; the next poll covers it
                self._bus.publish("webhook.lookup-failed", f"job {job_id} of project {project_id}: {str(exc)[:200]}", job=job_id)
            finally:
                self._inflight.pop(job_id, None)
                self._remember(job_id, status)

    def _remember(self, job_id: int, status: str) -> None:
        self._recent[job_id] = (status, self._clock())
        self._recent.move_to_end(job_id)
        while len(self._recent) > 4 * self._max_pending:
            self._recent.popitem(last=False)

    def _count(self, outcome: str) -> str:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if self._metrics is not None:
            self._metrics.webhook_hooks.labels(outcome=outcome).inc()
        return outcome

    def _drop(self, outcome: str, message: str) -> str:
        """Count a dropped hook; one `webhook.dropped` event per outcome per event_interval."""
        self._count(outcome)
        said = self._said.due(outcome)
        if said is not None:
            more = f" (and {said.held_back} more since the last such line)" if said.held_back else ""
            self._bus.publish("webhook.dropped", message + more, outcome=outcome)
        return outcome

    async def stop(self) -> None:
        for task in list(self._workers):
            task.cancel()
        for task in list(self._workers):
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._pending.clear()
