"""A DataTable whose rows are keyed and kept in a stable sorted order: an update changes the
cells that changed in place (no flicker, cursor and scroll stay put); rows only move when rows
appear or vanish, and then the cursor stays on the same row key."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import DataTable

__all__ = ["Col", "KeyedTable", "Row"]

Cell = str | Text
Row = tuple[str, tuple[Cell, ...]]


@dataclass(frozen=True)
class Col:
    """A column: `width` in compact mode (0: hidden there), `wide` when wide (None: the same; 0: hidden)."""

    key: str
    label: str
    width: int
    wide: int | None = None

    def width_for(self, wide: bool) -> int:
        return (self.width if self.wide is None else self.wide) if wide else self.width


def _plain(cell: Cell) -> str:
    return cell.plain if isinstance(cell, Text) else cell


class KeyedTable(DataTable):
    """Subclasses define COLUMNS and build rows in `rows()`; call `refresh_rows()` after data changes."""

    COLUMNS: Sequence[Col] = ()
    wide: reactive[bool] = reactive(False)
    filter_text: reactive[str] = reactive("")

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=True, cell_padding=1)
        self._keys: list[str] = []
        self._cells: dict[str, tuple[Cell, ...]] = {}
        self._active: list[Col] = []
        self._stale = False

    # --- columns ---
    def _columns_for(self, wide: bool) -> list[Col]:
        return [c for c in self.COLUMNS if c.width_for(wide) > 0]

    def on_mount(self) -> None:
        self._set_columns()
        self.refresh_rows()

    def _set_columns(self) -> None:
        self.clear(columns=True)
        self._keys, self._cells = [], {}
        self._active = self._columns_for(self.wide)
        for col in self._active:
            self.add_column(col.label, width=col.width_for(self.wide), key=col.key)

    def watch_wide(self, _old: bool, _new: bool) -> None:
        if self.is_mounted:
            self._set_columns()
            self.refresh_rows()

    def watch_filter_text(self) -> None:
        if self.is_mounted:
            self.refresh_rows()

    # --- rows ---
    def build_rows(self) -> list[tuple[str, dict[str, Cell]]]:
        """(row key, {column key: cell}) in display order. Subclasses override."""
        return []

    def show(self) -> None:
        """Called when its tab becomes visible: catch up on updates skipped while hidden."""
        if self._stale:
            self.refresh_rows(force=True)

    def selected_key(self) -> str | None:
        if not self._keys or self.cursor_row < 0 or self.cursor_row >= len(self._keys):
            return None
        return self._keys[self.cursor_row]

    def refresh_rows(self, force: bool = False) -> None:
        if not self.is_mounted:
            return
        pane = self.parent
        if not force and pane is not None and not pane.display:
            self._stale = True  # a hidden tab: rebuilt when it is shown, not on every update
            return
        self._stale = False
        cols = [c.key for c in self._active]
        needle = self.filter_text.casefold().strip()
        rows: list[Row] = []
        for key, cells in self.build_rows():
            row = tuple(cells.get(c, "") for c in cols)
            if needle and needle not in " ".join(_plain(c) for c in row).casefold() and needle not in key.casefold():
                continue
            rows.append((key, row))
        self._sync(rows)

    def _sync(self, rows: list[Row]) -> None:
        keys = [k for k, _ in rows]
        if keys == self._keys:
            for key, row in rows:
                old = self._cells[key]
                if old != row:
                    for col, a, b in zip(self._active, old, row):
                        if a != b:
                            self.update_cell(key, col.key, b)
                    self._cells[key] = row
            return
        if keys[: len(self._keys)] == self._keys:  # only new rows, at the end of the order
            for key, row in rows[len(self._keys) :]:
                self.add_row(*row, key=key)
                self._cells[key] = row
            self._keys = keys
            return
        # Rows appeared in the middle or vanished: rebuild, keeping the cursor on its row.
        current = self.selected_key()
        old_index = self.cursor_row
        scroll_x, scroll_y = self.scroll_x, self.scroll_y
        self.clear()
        self._cells = {}
        for key, row in rows:
            self.add_row(*row, key=key)
            self._cells[key] = row
        self._keys = keys
        if keys:
            index = keys.index(current) if current in keys else min(max(old_index, 0), len(keys) - 1)
            self.move_cursor(row=index, animate=False, scroll=False)
        self.scroll_to(scroll_x, scroll_y, animate=False, immediate=True)
