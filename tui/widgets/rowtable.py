"""A DataTable of rows whose Home and End go to the first and last row (DataTable's own scroll
sideways to the first and last column, which on a wide table hides the row's start)."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import DataTable


class RowTable(DataTable):
    BINDINGS = [
        Binding("home", "scroll_top", "First row", show=False),
        Binding("end", "scroll_bottom", "Last row", show=False),
    ]
