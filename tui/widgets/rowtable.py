"""A DataTable of rows whose Home and End go to the first and last row (DataTable's own scroll
sideways to the first and last column, which on a wide table hides the row's start), and whose
string cells are shown as text, never parsed as markup (a label such as "[b]x" stays as typed)."""

from __future__ import annotations

from rich.cells import cell_len
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable


def as_text(cell):
    """A string cell as plain text (DataTable would read a str as markup)."""
    return Text(cell) if isinstance(cell, str) else cell


class TextTable(DataTable):
    """A DataTable whose string cells are plain text, never markup."""

    def fill_measured(self, columns: list[tuple[str, str]], rows: list[tuple[str, list]],
                      height: int) -> None:
        """Add `columns` ((label, key)) and `rows` ((key, cells)), each column as wide as its
        widest label or cell line: measured here, not left to the table's next idle (measured
        late on a busy machine, every column showed squeezed to its header)."""
        for index, (label, key) in enumerate(columns):
            widest = [cell_len(label)] + [cell_len(line) for _, cells in rows
                                          for line in as_text(cells[index]).plain.split("\n")]
            self.add_column(label, key=key, width=max(widest))
        for key, cells in rows:
            self.add_row(*cells, height=height, key=key)

    def add_row(self, *cells, **kwargs):
        return super().add_row(*(as_text(c) for c in cells), **kwargs)

    def update_cell(self, row_key, column_key, value, *, update_width: bool = False) -> None:
        super().update_cell(row_key, column_key, as_text(value), update_width=update_width)


class RowTable(TextTable):
    BINDINGS = [
        Binding("home", "scroll_top", "First row", show=False),
        Binding("end", "last_row", "Last row", show=False),
    ]

    class EndRequested(Message):
        """End was pressed: a table that shows only the first pages of its rows (the runs
        list) loads the rest and moves to the true last row."""

    def action_last_row(self) -> None:
        self.action_scroll_bottom()     # (ctrl+end stays DataTable's: the last row read)
        self.post_message(self.EndRequested())
