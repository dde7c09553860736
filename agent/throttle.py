"""At most one line per key per interval, with a count of what was held back: how a flood of
refusals, drops or errors is said without filling the journal or the event history."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import NamedTuple

__all__ = ["Said", "Throttle"]


class Said(NamedTuple):
    key: Hashable  # the key it is said for (the overflow key when too many keys are kept)
    held_back: int  # how many were not said since the last line for that key


class Throttle:
    """`due(key)`: a Said when a line for `key` may go out now, else None (and it is counted).
    At most `max_keys` keys are kept; beyond them, and once the stale ones are pruned, new keys
    share `overflow_key`, so a flood of distinct keys costs bounded memory and one line."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic, max_keys: int = 1024,
                 overflow_key: Hashable = "(others)") -> None:  # fmt: skip
        self.interval = interval
        self._clock = clock
        self._max_keys = max_keys
        self._overflow_key = overflow_key
        self._last: dict[Hashable, tuple[float, int]] = {}  # key → (last said, held back since)

    def due(self, key: Hashable) -> Said | None:
        now = self._clock()
        if key not in self._last and len(self._last) >= self._max_keys:
            for stale in [k for k, (when, _) in self._last.items() if now - when >= self.interval]:
                del self._last[stale]
            if len(self._last) >= self._max_keys:
                key = self._overflow_key
        said = self._last.get(key)
        if said is not None and now - said[0] < self.interval:
            self._last[key] = (said[0], said[1] + 1)
            return None
        self._last[key] = (now, 0)
        return Said(key, said[1] if said is not None else 0)
