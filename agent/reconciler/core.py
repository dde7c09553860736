"""What every step of the reconciler shares: its collaborators and the little it remembers between passes."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from datetime import datetime, UTC
from typing import Protocol

from ..backoff import Backoffs
from ..config import AgentConfig
from ..gitlab.adapter import GitLabAdapter, QueueSnapshot, Registration
from ..metrics import AgentMetrics
from ..inventory.kubernetes import NodeHardware
from ..model import Gpu, Host, Job
from ..runtime.base import RunnerRuntime
from ..state import AgentState, ClusterReport

__all__ = ["ClusterSource", "ReconcilerCore"]


class ClusterSource(Protocol):
    """The cluster's hardware kept in memory (agent/inventory/cluster.py ClusterInventory, ADR-016)."""

    def hardware(self) -> list[NodeHardware] | None: ...  # None: unknown (never "no nodes")

    def why_unknown(self) -> str | None: ...

    def report(self) -> ClusterReport: ...


class ReconcilerCore:
    START_CONCURRENCY = 4
    BACKOFF_MIN_S, BACKOFF_MAX_S = 30.0, 900.0  # after a refusal or failure: doubling, never a storm

    def __init__(
        self,
        config: AgentConfig,
        state: AgentState,
        runtime: RunnerRuntime,
        gitlab: GitLabAdapter | None,
        host_source: Callable[[], Host],
        clock: Callable[[], datetime] | None = None,
        on_pass: Callable[[float], None] | None = None,
        metrics: AgentMetrics | None = None,
        monotonic: Callable[[], float] | None = None,
        may_act: Callable[[], bool] | None = None,
        cluster: ClusterSource | None = None,
    ) -> None:
        self.config = config
        self.state = state
        self.runtime = runtime
        self.gitlab = gitlab
        self.host_source = host_source
        self.clock = clock or (lambda: datetime.now(UTC))
        self.monotonic = monotonic or time.monotonic
        self.on_pass = on_pass
        # Leader election (ADR-014): asked immediately before each action; a follower observes,
        # decides and publishes, and carries nothing out. None: this agent always acts.
        self.may_act: Callable[[], bool] = may_act or (lambda: True)
        self.metrics = metrics
        # runner.runtime kubernetes: the planner's host is the cluster's nodes, read from memory.
        self.cluster = cluster
        self._cluster_gpus: list[Gpu] | None = None  # the free GPU units the latest plan was made from
        self._cluster_host_cache: tuple[list[NodeHardware], Host, Host] | None = None
        self.hostname = runtime.hostname
        self.started_at = self.clock()
        self.backoffs = Backoffs(self.monotonic, self.BACKOFF_MIN_S, self.BACKOFF_MAX_S)
        self._last_busy: dict[str, datetime] = {}
        self._queue: QueueSnapshot | None = None
        self._queue_at = 0.0
        self._registrations: list[Registration] | None = None  # this host's, as last listed (+ created since)
        self._listing: list[Registration] = []  # every AutoGit host's, tags filled, as last listed
        self._hints: dict[int, Job] = {}  # pending jobs learned from webhooks since the last poll
        self._gone: set[int] = set()  # jobs webhooks said left pending since the last poll
        self._first_seen: dict[int, float] = {}  # job id → monotonic time first seen pending
        self._queue_key: tuple[frozenset[int], frozenset[tuple[int, str]]] | None = None
        self._stopping = False
        self._missing: dict[str, int] = {}  # runner → passes in a row GitLab answered 404 for its registration
        self._refused: dict[str, str] = {}  # what GitLab refuses now, one line each
        self._runtime_problems: dict[str, str] = {}  # what the runtime fails at now (a start), one line each
        self._fleet_next = 0.0  # when the presence is refreshed and the peers' read next
        self._presence_id: int | None = None
        self._joined_at: datetime | None = None  # when this host's current fleet membership began
        self._presence_ids: dict[str, int] = {}  # hostname → its presence registration, as last read
        self._busy_ids: set[int] = set()
        self._last_full = -math.inf  # monotonic time of the latest full pass

    def _timed(self, action: str) -> contextlib.AbstractContextManager[None]:
        return self.metrics.time_scale_action(action) if self.metrics is not None else contextlib.nullcontext()

    def _refusals(self) -> list[str]:
        return sorted(set(self._refused.values()))
