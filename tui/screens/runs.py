"""Runs: every evaluation run with its model, method, settings and headline metrics.

Paged: the first page loads at once and the next page when the cursor nears the end, so a store
with thousands of runs opens instantly. Filtered by words and sorted in SQL (engine.api)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Input, Static

from engine import api
from tui import format as fmt

FIRST_PAGE = 100  # enough to fill a tall terminal; the rest loads as the cursor moves
PAGE = 200
SORTS = ("date", "id", "model", "method", "suite", "scorer", "status")
COLUMNS = (("id", "  id"), ("model", "model"), ("method", "method"),
           ("suite", "suite"), ("metrics", "key metrics [CI]"), ("status", "status"),
           ("date", "date"), ("scorer", "scorer"), ("settings", "settings"))


class RunsScreen(Screen):
    BINDINGS = [
        Binding("enter", "open", "Open the run", show=False),
        Binding("space", "toggle_select", "Select"),
        Binding("c", "compare", "Compare"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("s", "cycle_sort", "Sort"),
        Binding("o", "flip_order", "Order", show=False),
        Binding("escape", "clear", "Clear selection", show=False),
        Binding("R,f5", "reload", "Reload", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.filter_text = ""
        self.sort = "date"
        self.descending = True
        self.total = 0
        self.loaded: list[api.RunRow] = []
        self.selected: list[int] = []   # in selection order: the first is the compare baseline
        self._filter_timer: Timer | None = None
        self._stale = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="runs-bar"):
            yield Input(placeholder="filter: words that must all match (model, suite, scorer, "
                                    "method, status, label, id)", id="runs-filter", compact=True)
        yield Static("", id="runs-status", classes="status-line")
        table = DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield table
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        self.reload()
        table.focus()
        self.app.store_changed.subscribe(self, self._on_store_changed)
        self.app.theme_changed_signal.subscribe(self, lambda _: self.reload(keep_cursor=True))

    def _on_store_changed(self, counts: dict) -> None:
        if self.is_current:
            self.reload(keep_cursor=True)
        else:
            self._stale = True

    def on_screen_resume(self) -> None:
        if self._stale:
            self._stale = False
            self.reload(keep_cursor=True)

    # -- loading -------------------------------------------------------------------------
    @property
    def store(self):
        return self.app.backend.store

    def reload(self, keep_cursor: bool = False) -> None:
        table = self.query_one(DataTable)
        current = self.current_run_id() if keep_cursor else None
        keep_rows = len(self.loaded) if keep_cursor else 0  # stay as deep as the user scrolled
        table.clear()
        self.loaded = []
        self.total = api.count_runs(self.store, self.filter_text)
        self._load_page(max(keep_rows, FIRST_PAGE))
        if current is not None:
            for index, row in enumerate(self.loaded):
                if row.run_id == current:
                    table.move_cursor(row=index)
                    break
        self._update_status()

    def _load_page(self, limit: int = PAGE) -> None:
        rows = api.list_runs(self.store, self.filter_text, self.sort, self.descending,
                             offset=len(self.loaded), limit=limit)
        table = self.query_one(DataTable)
        colors = fmt.theme_colors(self.app.theme_variables)
        # Runs that arrived since the last page shift offsets, so a page can repeat rows
        # already shown (never skip any): keep each run once.
        shown = {r.run_id for r in self.loaded}
        rows = [row for row in rows if row.run_id not in shown]
        for row in rows:
            table.add_row(*self._cells(row, colors), key=str(row.run_id))
        self.loaded.extend(rows)

    def _cells(self, row: api.RunRow, colors: dict) -> list:
        metrics = "  ".join(f"{fmt.short_name(name)} {fmt.ci(value, low, high)}"
                            for name, value, low, high in row.headline if value is not None)
        method = row.method if row.n_params is None else f"{row.method} {fmt.count(row.n_nonzero or row.n_params)}"
        return [self._id_cell(row.run_id, colors), Text(row.model), Text(method),
                Text(row.suite), Text(metrics), fmt.status_text(row.status, colors),
                Text(fmt.date(row.created_at)), Text(row.scorer),
                Text(row.settings, style=colors["muted"])]

    def _id_cell(self, run_id: int, colors: dict) -> Text:
        """The run id, marked ● when selected for comparison."""
        mark = "● " if run_id in self.selected else "  "
        return Text.assemble((mark, colors["accent"]), str(run_id), justify="right")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.cursor_row >= len(self.loaded) - 20 and len(self.loaded) < self.total:
            self._load_page()
            self._update_status()

    def _update_status(self) -> None:
        arrow = "↓" if self.descending else "↑"
        shown = f"{len(self.loaded)} of {self.total}" if len(self.loaded) < self.total else f"{self.total}"
        selected = (f" · selected {', '.join(map(str, self.selected))} (c: compare, first is baseline)"
                    if self.selected else " · space: select runs to compare")
        where = f" matching '{self.filter_text}'" if self.filter_text else ""
        self.query_one("#runs-status", Static).update(
            Text(f"{shown} runs{where} · sort {self.sort} {arrow}{selected}"))

    def current_run_id(self) -> int | None:
        table = self.query_one(DataTable)
        if not self.loaded or table.cursor_row is None or table.cursor_row >= len(self.loaded):
            return None
        return self.loaded[table.cursor_row].run_id

    # -- filter --------------------------------------------------------------------------
    def on_input_changed(self, event: Input.Changed) -> None:
        if self._filter_timer is not None:
            self._filter_timer.stop()
        self._filter_timer = self.set_timer(0.15, self._apply_filter)

    def _apply_filter(self) -> None:
        text = self.query_one("#runs-filter", Input).value.strip()
        if text != self.filter_text:
            self.filter_text = text
            self.reload()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._apply_filter()
        self.query_one(DataTable).focus()

    def on_key(self, event) -> None:
        if event.key in ("escape", "down") and isinstance(self.focused, Input):
            self._apply_filter()
            self.query_one(DataTable).focus()
            event.stop()

    # -- actions -------------------------------------------------------------------------
    def action_filter(self) -> None:
        self.query_one("#runs-filter", Input).focus()

    def action_open(self) -> None:
        run_id = self.current_run_id()
        if run_id is not None:
            self.app.open_run(run_id)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_toggle_select(self) -> None:
        run_id = self.current_run_id()
        if run_id is None:
            return
        if run_id in self.selected:
            self.selected.remove(run_id)
        else:
            self.selected.append(run_id)
        colors = fmt.theme_colors(self.app.theme_variables)
        table = self.query_one(DataTable)
        table.update_cell(str(run_id), "id", self._id_cell(run_id, colors))
        table.action_cursor_down()
        self._update_status()

    def action_clear(self) -> None:
        if self.selected:
            old, self.selected = self.selected, []
            table = self.query_one(DataTable)
            colors = fmt.theme_colors(self.app.theme_variables)
            for run_id in old:
                if str(run_id) in table.rows:
                    table.update_cell(str(run_id), "id", self._id_cell(run_id, colors))
            self._update_status()

    def action_compare(self) -> None:
        ids = list(self.selected)
        if len(ids) < 2:
            current = self.current_run_id()
            if len(ids) == 1 and current is not None and current not in ids:
                ids.append(current)
            else:
                self.notify("select two or more runs with space, then press c", severity="warning")
                return
        self.app.open_compare(ids)

    def action_cycle_sort(self) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        self.descending = self.sort in ("date", "id")
        self.reload()

    def action_flip_order(self) -> None:
        self.descending = not self.descending
        self.reload()

    def action_reload(self) -> None:
        self.reload(keep_cursor=True)
