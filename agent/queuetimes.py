"""Queue time as an operator reads it, kept small: bounded tag-set labels for the metrics, and the
last hour of queue times per tag set for the console (p50/p95 and a sparkline history).

Tag sets are user data: one pipeline with a unique tag per job would make one series per job.
So a metric carries at most `TAG_SETS_MAX` tag sets of its own and puts the rest under `other`
(docs/operations/metrics.md, ADR-012):
- gauges read at scrape time (pending jobs, oldest wait) name the N tag sets with the most
  pending jobs *now*; the rest are summed (or, for an age, maxed) into `other`;
- series that live as long as the process (the queue-time histogram) give a label to the first
  N tag sets they meet and keep it: a label that came and went would break rate() over it.
Nothing here does I/O or reads a clock it was not given.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from pydantic import Field

from .model import Frozen

__all__ = ["OTHER", "TAG_SETS_MAX", "QueueTimeStats", "QueueTimes", "TagSetLabels", "largest_tag_sets", "tag_set"]

TAG_SETS_MAX = 10
OTHER = "other"  # the overflow label; a job tagged just `other` is labelled '"other"' (tag_set)


def tag_set(tags: Iterable[str]) -> str:
    """The label of a tag set: sorted tags joined by ',' ('' = untagged); a lone tag 'other' is
    written '"other"' so that it is never read as the overflow bucket."""
    label = ",".join(sorted(set(tags)))
    return f'"{label}"' if label == OTHER else label


def largest_tag_sets(counts: Mapping[str, int], most: int = TAG_SETS_MAX) -> set[str]:
    """The `most` tag sets with the most jobs (ties: by name, so every scrape agrees)."""
    return {label for label, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:most]}


class TagSetLabels:
    """Sticky bounded labels for process-long series: the first `most` tag sets met keep their
    own label for good; later ones are `other`. `admit` ranks a pass's tag sets by size, so when
    many new ones arrive at once, the largest get the free labels."""

    def __init__(self, most: int = TAG_SETS_MAX) -> None:
        self.most = most
        self._admitted: set[str] = set()

    def admit(self, counts: Mapping[str, int]) -> None:
        for label, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            if len(self._admitted) >= self.most:
                return
            self._admitted.add(label)

    def label(self, label: str) -> str:
        if label not in self._admitted and len(self._admitted) < self.most:
            self._admitted.add(label)
        return label if label in self._admitted else OTHER


class QueueTimeStats(Frozen):
    """One tag set's queue time over the window (wire type: `/v1/queue-times`)."""

    tags: str = Field(description="The tag set: sorted tags joined by ',' ('' = untagged).")
    jobs: int = Field(description="Jobs that started within the window.")
    p50_s: float = Field(description="Median seconds from pending to running.")
    p95_s: float = Field(description="95th percentile seconds from pending to running.")
    history: list[float | None] = Field(
        description="p95 per slice of the window, oldest first (None: no job started in that slice)."
    )


def _percentile(sorted_values: list[float], q: float) -> float:
    # Nearest rank: always one of the observed values (no interpolation between two jobs).
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


class QueueTimes:
    """Queue times of the jobs this host's runners started, kept for `window_s` (bounded)."""

    def __init__(self, window_s: float = 3600.0, slices: int = 12, limit: int = 20000, clock: Callable[[], float] = time.time) -> None:
        self.window_s = window_s
        self.slices = slices
        self._clock = clock
        self._samples: deque[tuple[float, str, float]] = deque(maxlen=limit)  # (when, tag set, seconds)

    def add(self, tags: str, seconds: float) -> None:
        self._samples.append((self._clock(), tags, seconds))

    def summary(self) -> list[QueueTimeStats]:
        """Each tag set's p50/p95 over the window and its p95 per slice; most jobs first."""
        now = self._clock()
        start = now - self.window_s
        while self._samples and self._samples[0][0] < start:
            self._samples.popleft()
        width = self.window_s / self.slices
        by_tags: dict[str, list[tuple[float, float]]] = {}
        for when, tags, seconds in self._samples:
            by_tags.setdefault(tags, []).append((when, seconds))
        out = []
        for tags, samples in by_tags.items():
            values = sorted(s for _, s in samples)
            per_slice: list[list[float]] = [[] for _ in range(self.slices)]
            for when, seconds in samples:
                per_slice[min(self.slices - 1, int((when - start) // width))].append(seconds)
            history = [_percentile(sorted(v), 0.95) if v else None for v in per_slice]
            out.append(QueueTimeStats(tags=tags, jobs=len(values), p50_s=_percentile(values, 0.5), p95_s=_percentile(values, 0.95), history=history))
        return sorted(out, key=lambda s: (-s.jobs, s.tags))
