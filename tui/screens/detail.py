"""Everything about one row (Enter on a table): the full runner name, its tags, GPU, job and the
job's link, or the planner's whole reason with the missing tags; nothing cut to a column."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ..data import Detail

__all__ = ["DetailScreen"]


class DetailScreen(ModalScreen[None]):
    CSS_PATH = "detail.tcss"
    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close")]

    def __init__(self, title: str, rows: Detail) -> None:
        super().__init__()
        self.title_text = title
        self.rows = rows

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")  # long names and links wrap, never cut
        for label, value in self.rows:
            table.add_row(label, value)
        with VerticalScroll(id="detail"):
            yield Static(Text(self.title_text, style="bold"), id="detail-title")
            yield Static(table, id="detail-body")
            yield Static(Text("Esc or Enter closes", style="dim"), id="detail-foot")

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)
