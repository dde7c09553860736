"""The event log: the agent's event stream, newest at the bottom, filterable."""

from __future__ import annotations

from collections import deque

from textual.reactive import reactive
from textual.widgets import RichLog

from autogit.agent.api.schema import Event

from ..data import event_line

__all__ = ["EventLog"]


class EventLog(RichLog):
    """Holds the last `keep` events; `filter_text` shows only those whose type or message
    contains it (case-insensitive)."""

    filter_text: reactive[str] = reactive("")

    def __init__(self, keep: int = 1000, *, compact: bool = False, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(max_lines=keep, min_width=20 if compact else 78, wrap=compact, markup=False, highlight=False,
                         auto_scroll=True, id=id, classes=classes)
        self.events: deque[Event] = deque(maxlen=keep)
        self.compact = compact

    def _matches(self, event: Event) -> bool:
        needle = self.filter_text.casefold().strip()
        return not needle or needle in event.type.casefold() or needle in event.message.casefold()

    def add(self, event: Event) -> None:
        self.add_many([event])

    def add_many(self, events: list[Event]) -> None:
        self.events.extend(events)
        shown = [event_line(e, self.compact) for e in events if self._matches(e)]
        if shown:
            lines = shown[0]
            for line in shown[1:]:
                lines = lines + "\n" + line
            self.write(lines, scroll_end=None)

    def watch_filter_text(self) -> None:
        self.clear()
        for event in self.events:
            if self._matches(event):
                self.write(event_line(event, self.compact))
