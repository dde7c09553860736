"""Shown while the agent cannot be reached: what is wrong, how to fix it, and that the console
keeps retrying by itself (with backoff)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Center, Vertical
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Static

from ..data import Problem

__all__ = ["DisconnectedScreen"]


class DisconnectedScreen(Screen):
    CSS_PATH = "disconnected.tcss"
    BINDINGS = [Binding("r", "retry", "Retry now", tooltip="retry now (when the agent is down)")]

    problem: reactive[Problem | None] = reactive(None)
    attempt: reactive[int] = reactive(0)
    next_try_s: reactive[float] = reactive(0.0)

    def __init__(self, socket_path: str) -> None:
        super().__init__()
        self.socket_path = socket_path

    def compose(self) -> ComposeResult:
        with Center():
            with Vertical(id="down-panel"):
                yield Static(id="down-title")
                yield Static(id="down-detail")
                yield Static(id="down-fixes")
                yield Static(id="down-retry")
        yield Footer()

    def on_mount(self) -> None:
        self.call_after_refresh(self._render_all)

    def watch_problem(self) -> None:
        self._render_all()

    def watch_attempt(self) -> None:
        self._render_all()

    def _render_all(self) -> None:
        if not self.is_mounted:
            return
        p = self.problem
        self.set_class(p is not None and p.kind == "permission", "-permission")
        self.set_class(p is not None and p.kind == "incompatible", "-incompatible")
        title = Text("✖ " + (p.title if p else "Cannot reach the agent"), style="bold")
        self.query_one("#down-title", Static).update(title)
        self.query_one("#down-detail", Static).update(p.detail if p else f"Socket: {self.socket_path}")
        fixes = Text("To fix it:\n", style="bold")
        for fix in p.fixes if p else ():
            fixes.append("  $ ", style="bright_black")
            fixes.append(fix + "\n")
        self.query_one("#down-fixes", Static).update(fixes)
        retry = Text()
        retry.append(f"Attempt {self.attempt} failed; ", style="bright_black")
        retry.append(f"next try in {self.next_try_s:g} s", style="bold")
        retry.append(" (r: now, q: quit). This screen goes away by itself once the agent answers.", style="bright_black")
        self.query_one("#down-retry", Static).update(retry)

    def action_retry(self) -> None:
        self.app.retry_now()  # type: ignore[attr-defined]
