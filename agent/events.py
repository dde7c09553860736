"""The agent's one event bus: inventory changes, queue changes, plan decisions, runtime actions
and faults are events with a sequence number, a time, a type and a message. The socket's
event stream, the logs, the metrics and the TUI all read from it.

Publishing never blocks and never waits on a subscriber: each subscriber has a bounded queue,
and one that falls behind is dropped (it gets a final `stream.dropped` notice and must
reconnect with `?since=` to replay what it missed from the bounded history).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable
from datetime import datetime, UTC
from typing import Any

from pydantic import Field

from .model import Frozen

__all__ = ["Event", "EventBus", "Subscription"]


class Event(Frozen):
    seq: int = Field(description="Monotonic sequence number, from 1; use it with ?since=.")
    time: datetime
    type: str = Field(description="Dotted kind, e.g. 'runner.started', 'gpu.removed'.")
    message: str = Field(description="One human line.")
    data: dict[str, Any] = Field(default_factory=dict)


class Subscription:
    """One consumer's bounded queue. Iterate it; it ends when the bus drops or closes it."""

    _END = object()

    def __init__(self, bus: EventBus, limit: int) -> None:
        self._bus = bus
        self._limit = limit
        # Two slots beyond the limit are kept for the drop notice and the end marker, so ending
        # a subscription never discards an event it was already given.
        self._queue: asyncio.Queue[Any] = asyncio.Queue(limit + 2)
        self.last_seq = 0  # newest event queued for this consumer
        self.dropped = False

    def _offer(self, event: Event) -> bool:
        if self._queue.qsize() >= self._limit:
            return False
        self._queue.put_nowait(event)
        self.last_seq = event.seq
        return True

    def _end(self, notice: Event | None) -> None:
        if notice is not None:
            self._queue.put_nowait(notice)
        self._queue.put_nowait(self._END)

    def get_nowait_batch(self, most: int = 64) -> list[Event]:
        """Events already queued (without waiting), for writers that batch; stops at the end."""
        out: list[Event] = []
        while len(out) < most and not self._queue.empty():
            item = self._queue._queue[0]  # type: ignore[attr-defined]  # peek: the end marker must stay for __aiter__
            if item is self._END:
                break
            out.append(self._queue.get_nowait())
        return out

    async def __aiter__(self) -> AsyncIterator[Event]:
        try:
            while True:
                item = await self._queue.get()
                if item is self._END:
                    return
                yield item
        finally:
            self._bus._forget(self)

    def close(self) -> None:
        self._bus._forget(self)


class EventBus:
    def __init__(self, history: int = 1000, queue_size: int = 1000, clock: Callable[[], datetime] | None = None):
        self._history: deque[Event] = deque(maxlen=history)
        self._subscribers: set[Subscription] = set()
        self._seq = itertools.count(1)
        self._queue_size = max(4, queue_size)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._listeners: list[Callable[[Event], None]] = []
        self.last_seq = 0

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """A synchronous observer (logs, metrics); must be quick and must not raise."""
        self._listeners.append(listener)

    def publish(self, type: str, message: str, **data: Any) -> Event:
        event = Event.model_construct(seq=next(self._seq), time=self._clock(), type=type, message=message, data=data)
        self.last_seq = event.seq
        self._history.append(event)
        for listener in self._listeners:
            listener(event)
        for sub in list(self._subscribers):
            if not sub._offer(event):
                self._drop(sub)
        return event

    def _drop(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)
        sub.dropped = True
        # `since` is the newest event this consumer was given: resuming with ?since=<it> replays
        # exactly what it missed (as far as the bounded history reaches).
        notice = Event.model_construct(
            seq=sub.last_seq,
            time=self._clock(),
            type="stream.dropped",
            message="this consumer fell behind and was dropped; reconnect with ?since=",
            data={"since": sub.last_seq},
        )
        sub._end(notice)

    def history(self, since: int = 0) -> list[Event]:
        return [e for e in self._history if e.seq > since]

    def subscribe(self, since: int | None = None) -> Subscription:
        """Subscribe; with `since`, first replay the kept history after that sequence number."""
        sub = Subscription(self, self._queue_size)
        sub.last_seq = since if since is not None else self.last_seq
        if since is not None:
            for event in self.history(since):
                if not sub._offer(event):
                    # More history than one queue holds: hand over a queue's worth, then say
                    # where to resume, exactly as for a consumer that fell behind.
                    self._drop(sub)
                    return sub
        self._subscribers.add(sub)
        return sub

    def _forget(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def close(self) -> None:
        for sub in list(self._subscribers):
            self._subscribers.discard(sub)
            sub._end(None)
