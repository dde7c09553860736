"""`?`: every key the console answers to, built from the bindings themselves."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

__all__ = ["HelpScreen", "help_rows"]

_TABLE_KEYS = (
    ("↑↓ PgUp PgDn", "move in a table or the log"),
    ("mouse", "click tabs, rows, buttons; wheel scrolls"),
)


def _key_label(key: str) -> str:
    names = {"slash": "/", "question_mark": "?", "escape": "Esc", "ctrl+c": "Ctrl+C", "y": "y", "n": "n"}
    return ", ".join(names.get(k.strip(), k.strip()) for k in key.split(","))


def help_rows(*binding_lists: Sequence[Binding | tuple[str, str] | tuple[str, str, str]]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    for bindings in binding_lists:
        for b in bindings:
            binding = b if isinstance(b, Binding) else Binding(b[0], b[1], b[2] if len(b) > 2 else "")
            if binding.key in seen or binding.key == "ctrl+c":
                continue
            seen.add(binding.key)
            rows.append((_key_label(binding.key), binding.tooltip or binding.description))
    return rows


class HelpScreen(ModalScreen[None]):
    CSS_PATH = "help.tcss"
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def __init__(self, rows: list[tuple[str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for key, what in [*self.rows, *_TABLE_KEYS]:
            table.add_row(key, what)
        with VerticalScroll(id="help"):
            yield Static(Text("Keys", style="bold"), id="help-title")
            yield Static(table)
            yield Static(Text("Esc, ? or q closes this help.", style="bright_black"), id="help-foot")

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)
