"""A DataTable of rows whose Home and End go to the first and last row (DataTable's own scroll
sideways to the first and last column, which on a wide table hides the row's start), and whose
string cells are shown as text, never parsed as markup (a label such as "[b]x" stays as typed)."""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable


def as_text(cell):
    """A string cell as plain text (DataTable would read a str as markup)."""
    return Text(cell) if isinstance(cell, str) else cell


class TextTable(DataTable):
    """A DataTable whose string cells are plain text, never markup."""

    def add_row(self, *cells, **kwargs):
        return super().add_row(*(as_text(c) for c in cells), **kwargs)

    def update_cell(self, row_key, column_key, value, *, update_width: bool = False) -> None:
        super().update_cell(row_key, column_key, as_text(value), update_width=update_width)


class RowTable(TextTable):
    BINDINGS = [
        Binding("home", "scroll_top", "First row", show=False),
        Binding("end", "scroll_bottom", "Last row", show=False),
    ]
