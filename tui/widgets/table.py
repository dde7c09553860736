"""A DataTable whose rows are keyed and kept in a stable sorted order: an update changes the
cells that changed in place (no flicker, cursor and scroll stay put); rows only move when rows
appear or vanish, and then the cursor stays on the same row key.

Column widths follow the data and the room there is: a `grow` column (a runner's name) gets
the width its longest cell needs, a `fill` column (the planner's reason) takes what is left;
both are cut with "…" only when the terminal is too narrow (the detail view, Enter, shows all).
When there is no row, the table's `empty_note` (a Static above it) says why."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.events import Resize
from textual.reactive import reactive
from textual.widgets import DataTable, Static

__all__ = ["Col", "KeyedTable", "Row"]

Cell = str | Text
Row = tuple[str, tuple[Cell, ...]]


@dataclass(frozen=True)
class Col:
    """A column: `width` in compact mode (0: hidden there), `wide` when wide (None: the same; 0:
    hidden); both are the least it gets. `grow`: as wide as its longest cell, room permitting;
    `fill`: whatever room the other columns leave."""

    key: str
    label: str
    width: int
    wide: int | None = None
    grow: bool = False
    fill: bool = False

    def width_for(self, wide: bool) -> int:
        return (self.width if self.wide is None else self.wide) if wide else self.width


def _plain(cell: Cell) -> str:
    return cell.plain if isinstance(cell, Text) else cell


def _cut(cell: Cell, width: int) -> Cell:
    if len(_plain(cell)) <= width:
        return cell
    if isinstance(cell, Text):
        cut = cell.copy()
        cut.truncate(width, overflow="ellipsis")
        return cut
    return cell[: max(0, width - 1)] + "…"


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
        self._widths: list[int] = []
        self._fitted_room = 0
        self._stale = False
        self.empty_note: Static | None = None  # set by the screen that holds the table

    # --- columns ---
    def _columns_for(self, wide: bool) -> list[Col]:
        return [c for c in self.COLUMNS if c.width_for(wide) > 0]

    def on_mount(self) -> None:
        self._set_columns()
        self.refresh_rows()

    def _set_columns(self, widths: list[int] | None = None) -> None:
        self.clear(columns=True)
        self._keys, self._cells = [], {}
        self._active = self._columns_for(self.wide)
        self._widths = widths if widths is not None else [c.width_for(self.wide) for c in self._active]
        for col, width in zip(self._active, self._widths):
            self.add_column(col.label, width=width, key=col.key)

    def _room(self) -> int:
        """Columns of text the cells may use: the table's width less padding and scrollbar."""
        width = self.size.width or self.app.size.width
        return width - 1 - 2 * self.cell_padding * len(self._active)

    def _fit(self, rows: list[Row]) -> list[int]:
        widths = [c.width_for(self.wide) for c in self._active]
        room = self._room()
        for i, col in enumerate(self._active):
            if col.grow:
                needed = max([len(col.label), *(len(_plain(row[i])) for _, row in rows)])
                others = sum(w for j, w in enumerate(widths) if j != i)
                widths[i] = max(widths[i], min(needed, room - others))
        for i, col in enumerate(self._active):
            if col.fill:
                widths[i] = max(widths[i], room - sum(w for j, w in enumerate(widths) if j != i))
        return widths

    def on_resize(self, event: Resize) -> None:
        if self._active and any(c.grow or c.fill for c in self._active) and self._room() != self._fitted_room:
            self.refresh_rows()

    def empty_text(self) -> str | None:
        """Why there is no row (None: nothing is known yet). Subclasses say more."""
        return None if getattr(self, "data", None) is None else "Nothing to show."

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
        built = self.build_rows()
        rows: list[Row] = []
        for key, cells in built:
            row = tuple(cells.get(c, "") for c in cols)
            if needle and needle not in " ".join(_plain(c) for c in row).casefold() and needle not in key.casefold():
                continue
            rows.append((key, row))
        widths = self._fit(rows)
        self._fitted_room = self._room()
        if widths != self._widths:
            self._set_columns(widths)
        sized = [c.grow or c.fill for c in self._active]
        if any(sized):
            rows = [(key, tuple(_cut(cell, w) if s else cell for cell, w, s in zip(row, widths, sized))) for key, row in rows]
        self._sync(rows)
        if self.empty_note is not None:
            note = None
            if not rows:
                note = f"No row matches the filter {self.filter_text.strip()!r} (Esc clears it)." if built else self.empty_text()
            if note is not None:
                self.empty_note.update(note)
            self.empty_note.display = note is not None

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
