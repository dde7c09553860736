"""One backoff for every retried action, keyed by (action, object), on an injected monotonic clock.

A refusal or a failure is retried after a delay that doubles from `initial` to `maximum`, never
every pass: no storm against GitLab or the runtime. The planner reads the running backoffs as
part of its observation (`entries`) and decides what waits; the reconciler records outcomes
(`failed`, `succeeded`). The cause is kept as one line, for status, events and the journal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .errors import one_line
from .model import Backoff

__all__ = ["Backoffs"]


@dataclass(slots=True)
class _Entry:
    until: float  # monotonic
    delay: float
    cause: str


class Backoffs:
    """Running backoffs by (action, object); `object` "*" stands for every object of the action."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, initial: float = 30.0, maximum: float = 900.0) -> None:
        self.clock = clock
        self.initial = initial
        self.maximum = maximum
        self._entries: dict[tuple[str, str], _Entry] = {}

    def failed(self, action: str, target: str, cause: str, at_least: float = 0.0) -> float:
        """Record a failure: the next try waits twice the last delay (initial the first time, never
        more than maximum, never less than `at_least`). Returns the delay."""
        key = (action, target)
        last = self._entries.get(key)
        delay = self.initial if last is None else min(self.maximum, last.delay * 2)
        delay = max(delay, at_least)
        self._entries[key] = _Entry(self.clock() + delay, delay, one_line(cause))
        return delay

    def succeeded(self, action: str, target: str) -> None:
        self._entries.pop((action, target), None)

    def active(self, action: str, target: str) -> bool:
        """Whether a try of (action, target) must wait: its own backoff or the action's "*" one runs."""
        now = self.clock()
        return any((e := self._entries.get((action, t))) is not None and e.until > now for t in (target, "*"))

    def cause(self, action: str, target: str) -> str | None:
        entry = self._entries.get((action, target))
        return entry.cause if entry is not None else None

    def entries(self, now: datetime) -> list[Backoff]:
        """The running backoffs as the planner reads them, in wall-clock time from `now`."""
        mono = self.clock()
        out = []
        for (action, target), entry in sorted(self._entries.items()):
            if entry.until > mono:
                out.append(Backoff(action=action, target=target, until=now + timedelta(seconds=entry.until - mono), cause=entry.cause))
        return out
