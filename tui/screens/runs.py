"""Runs: every evaluation run with its label (the model's label in its study, else a compact
model name), study, suite and headline metrics first, then status, date, method and settings.

Read on the app's reader thread (never on the UI thread) and paged: the first page arrives at
once and the next when the cursor nears the end. Filtered by words in SQL (`study:NAME` keeps
one study's runs) and sorted by a column or by any headline metric. `m` opens the
model-by-metric view of the selection, or of the highlighted run's study."""

from __future__ import annotations

from functools import partial

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Header, Input, Static

from engine import api
from tui import format as fmt
from tui.keys import TypingAware
from tui.matrix_data import study_names
from tui.runs_query import (ALL_ROWS, SQL_SORTS, Page, RunsQuery, common_prefix, fetch,
                            look_alike, metric_sorts, name_caps, row_name, sort_label)
from tui.widgets.dialogs import ChoiceScreen
from tui.widgets.rowtable import RowTable
from tui.widgets.footer import KeyFooter

FIRST_PAGE = 100  # enough to fill a tall terminal; the rest loads as the cursor moves
PAGE = 200
SORTS = SQL_SORTS  # the SQL sorts `s` cycles through; `S` also offers every headline metric
COLUMNS = (("id", "  id"), ("model", "model"), ("study", "study"), ("suite", "suite"),
           ("metrics", "key metrics [CI]"), ("status", "status"), ("date", "date"),
           ("method", "method"), ("scorer", "scorer"), ("settings", "settings"))
EMPTY = "0 runs yet"
# actions about shown runs: off (and out of the footer) while a new store has none
# (the order flip stays on: an order chosen before runs arrive holds)
ABOUT_RUNS = frozenset({"open", "toggle_select", "compare", "matrix", "cycle_sort", "choose_sort",
                        "filter"})
WELCOME = (("No runs yet. To start:", "bold"), "\n\n",
           ("  n", "bold"), "  open the new-job form: evaluate a model on a suite (toxicity, bias,\n"
           "     perplexity), or distil / prune / quantize one first\n",
           ("  compfair study quick", "bold"), "  (in a shell) run a whole study: a teacher, its\n"
           "     distilled and pruned students, every suite, then a report\n\n",
           "Jobs run in a background worker (j shows them, even after you quit); their\n"
           "runs appear here as they finish. ? lists every key.")


class RunsScreen(TypingAware, Screen):
    AUTO_FOCUS = "#runs-table"  # also while hidden (empty store): letter keys then work
    BINDINGS = [
        Binding("enter", "open", "Open the run", show=False),
        Binding("space", "toggle_select", "Select"),
        Binding("c", "compare", "Compare"),
        Binding("m", "matrix", "Models", tooltip="models x metrics: a study's or the selection's "
                "models side by side on every suite's headline metric"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("s", "cycle_sort", "Sort"),
        Binding("S", "choose_sort", "Sort by a metric", show=False),
        Binding("o", "flip_order", "Order", show=False),
        Binding("escape", "clear", "Clear selection", show=False),
        Binding("e", "evaluate_like", "Evaluate like", show=False),
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
        self.studies: dict[int, tuple[str, str]] = {}
        self.prefix = ""                # the model-name prefix the shown runs share
        self.alike: dict[int, str] = {}  # run id -> the settings that tell look-alike runs apart
        self._filter_timer: Timer | None = None
        self._stale = False
        self._generation = 0            # bumped by every reload: older reads are dropped
        self._paging = False
        self.model_cap, self.study_cap = name_caps(120)

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="runs-bar"):
            yield Input(placeholder="filter: words that must all match (model, suite, scorer, "
                                    "method, status, label, id); study:NAME", id="runs-filter",
                        compact=True)
        yield Static("", id="runs-status", classes="status-line")
        yield RowTable(id="runs-table", cursor_type="row", zebra_stripes=True, fixed_columns=2)
        yield Static("", id="runs-terms", classes="status-line")
        yield Static(Text.assemble(*WELCOME), id="runs-empty")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.model_cap, self.study_cap = name_caps(self.app.size.width)
        table = self.query_one(DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        self.reload()
        table.focus()
        self.app.store_changed.subscribe(self, self._on_store_changed)
        self.app.theme_changed_signal.subscribe(self, lambda _: self.reload(keep_cursor=True))

    def on_resize(self, event) -> None:
        caps = name_caps(event.size.width)
        if caps != (self.model_cap, self.study_cap):
            self.model_cap, self.study_cap = caps
            self.reload(keep_cursor=True)       # (the cursor's run read before the clearing)
            # columns measured anew: a column keeps the widest content it has seen
            table = self.query_one(DataTable)
            table.clear(columns=True)
            for key, label in COLUMNS:
                table.add_column(label, key=key)

    def _on_store_changed(self, counts: dict) -> None:
        if self.is_current:
            self.reload(keep_cursor=True)
        else:
            self._stale = True

    def on_screen_resume(self) -> None:
        if self._stale:
            self._stale = False
            self.reload(keep_cursor=True)

    # -- loading (reader thread) ---------------------------------------------------------
    def runs_query(self) -> RunsQuery:
        return RunsQuery(self.filter_text, self.sort, self.descending)

    def reload(self, keep_cursor: bool = False) -> None:
        """Read the first page(s) again off the UI thread, then show them."""
        self._generation += 1
        current = self.current_run_id() if keep_cursor else None
        rows = max(len(self.loaded) if keep_cursor else 0, FIRST_PAGE)  # stay as deep as scrolled
        # a callable, not a coroutine object: a read superseded before it starts is dropped
        # without leaving an un-awaited coroutine behind
        self.run_worker(partial(self._reload, self._generation, self.runs_query(), rows, current),
                        exclusive=True, group="runs-load")

    async def _reload(self, generation: int, query: RunsQuery, limit: int, current: int | None) -> None:
        page: Page = await self.app.backend.read(fetch, query, 0, limit)
        if generation != self._generation:
            return
        table = self.query_one(DataTable)
        table.clear()
        self.loaded, self.total, self.studies, self.alike = [], page.total, page.studies, {}
        self.prefix = common_prefix([r.model for r in page.rows])
        self._add(page.rows)
        if current is not None:
            for index, row in enumerate(self.loaded):
                if row.run_id == current:
                    table.move_cursor(row=index)
                    break
        self._update_status()

    def _load_more(self) -> None:
        if self._paging or len(self.loaded) >= self.total:
            return
        self._paging = True
        self.run_worker(partial(self._page, self._generation, self.runs_query(), len(self.loaded)),
                        group="runs-page")

    def on_row_table_end_requested(self, event: RowTable.EndRequested) -> None:
        """End goes to the last run, not to the last one read: the rest are read first."""
        if len(self.loaded) < self.total:
            self._paging = True
            self.run_worker(partial(self._page, self._generation, self.runs_query(),
                                    len(self.loaded), to_end=True), group="runs-page")

    async def _page(self, generation: int, query: RunsQuery, offset: int, to_end: bool = False) -> None:
        try:
            page: Page = await self.app.backend.read(fetch, query, offset, ALL_ROWS if to_end else PAGE)
        finally:
            self._paging = False
        if generation == self._generation:
            self.studies.update(page.studies)
            self._add(page.rows)
            self._update_status()
            if to_end and self.loaded:
                self.query_one(DataTable).move_cursor(row=len(self.loaded) - 1)

    def _add(self, rows: list[api.RunRow]) -> None:
        # Runs that arrived since the last page shift offsets, so a page can repeat rows
        # already shown (never skip any): keep each run once.
        table = self.query_one(DataTable)
        colors = fmt.theme_colors(self.app.theme_variables)
        shown = {r.run_id for r in self.loaded}
        rows = [row for row in rows if row.run_id not in shown]
        before, self.alike = self.alike, look_alike(self.loaded + rows, self.studies)
        for row in self.loaded:     # a run shown before that now has a look-alike
            if self.alike.get(row.run_id) != before.get(row.run_id):
                table.update_cell(str(row.run_id), "model", self._label_cell(row))
        for row in rows:
            table.add_row(*self._cells(row, colors), key=str(row.run_id))
        self.loaded.extend(rows)

    # -- rendering -----------------------------------------------------------------------
    def _cells(self, row: api.RunRow, colors: dict) -> list:
        metrics = "  ".join(f"{fmt.short_name_of(name, row.suite)} {fmt.ci(value, low, high)}"
                            for name, value, low, high in row.headline if value is not None)
        if not metrics and row.status == "running":
            metrics = "running: metrics appear when it finishes"
        study = self.studies.get(row.job_id or -1, ("", ""))[0]
        method = row.method if row.n_params is None else f"{row.method} {fmt.count(row.n_nonzero or row.n_params)}"
        return [self._id_cell(row.run_id, colors), self._label_cell(row),
                Text(fmt.ellipsize(study, self.study_cap), style=colors["muted"]), Text(row.suite),
                Text(metrics),
                fmt.status_text(row.status, colors), Text(fmt.date(row.created_at)),
                Text(method), Text(row.scorer), Text(row.settings, style=colors["muted"])]

    def full_label(self, row: api.RunRow) -> str:
        """The study label or compact model name, and for runs that would otherwise read the
        same (same model, suite and scorer) the settings that tell them apart."""
        label = row_name(row, self.studies, self.prefix)
        alike = self.alike.get(row.run_id)
        return f"{label} ({alike})" if alike else label

    def _label_cell(self, row: api.RunRow) -> Text:
        """`full_label` cut to the column's cap (in the middle of the name: its end tells
        siblings apart; the settings kept as far as they fit)."""
        label = row_name(row, self.studies, self.prefix)
        return Text(fmt.fit_with(label, self.alike.get(row.run_id, ""), self.model_cap, middle=True))

    def _id_cell(self, run_id: int, colors: dict) -> Text:
        """The run id, marked ● when selected for comparison."""
        mark = "● " if run_id in self.selected else "  "
        return Text.assemble((mark, colors["accent"]), str(run_id), justify="right")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_terms(event.cursor_row)
        if event.cursor_row >= len(self.loaded) - 20 and len(self.loaded) < self.total:
            self._load_more()

    def _update_status(self) -> None:
        status = self.query_one("#runs-status", Static)
        self._show_empty(self.total == 0 and not self.filter_text)
        if self.total == 0 and not self.filter_text:
            status.update(Text(EMPTY))
            return
        arrow = "↓" if self.descending else "↑"
        shown = f"{len(self.loaded)} of {self.total}" if len(self.loaded) < self.total else f"{self.total}"
        selected = (f" · selected {', '.join(map(str, self.selected))} (c: compare, m: models x "
                    "metrics; the first is the baseline)" if self.selected
                    else " · space: select runs · m: models x metrics")
        where = f" matching '{self.filter_text}'" if self.filter_text else ""
        prefix = f" · model names: …= {self.prefix}" if self.prefix else ""
        noun = "run" if shown == "1" else "runs"
        status.update(Text(f"{shown} {noun}{where} · sort {sort_label(self.sort)} {arrow}{selected}{prefix}"))

    def _show_empty(self, empty: bool) -> None:
        """A store with no run shows how to start instead of an empty table."""
        table = self.query_one(DataTable)
        if table.display != empty:
            return
        table.display = not empty
        self.query_one("#runs-empty", Static).display = empty
        self.refresh_bindings()
        if self.focused is None:  # letter keys (n, j, ?) must work: no text field has the focus
            self.set_focus(table)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ABOUT_RUNS and not self.query_one(DataTable).display:
            return False
        return super().check_action(action, parameters)

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

    def _show_terms(self, index: int) -> None:
        """The highlighted run's abbreviations spelled out (the glossary, on selection; also
        the table's tooltip on hover)."""
        row = self.loaded[index] if 0 <= index < len(self.loaded) else None
        line = fmt.glossary_line(row.suite, [name for name, value, *_ in row.headline if value is not None]) \
            if row else ""
        if row is not None and len(self.full_label(row)) > self.model_cap:   # cut in the table
            line = f"{self.full_label(row)}" + (f" · {line}" if line else "")
        self.query_one("#runs-terms", Static).update(Text(line))
        self.query_one(DataTable).tooltip = line or None

    def action_evaluate_like(self) -> None:
        """The new-job form with the highlighted run's settings."""
        run_id = self.current_run_id()
        if run_id is not None:
            self.app.evaluate_like(run_id)

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

    def _selection(self) -> list[int] | None:
        """The selected runs, with the highlighted one when only one is selected."""
        ids = list(self.selected)
        current = self.current_run_id()
        if len(ids) == 1 and current is not None and current not in ids:
            ids.append(current)
        return ids if len(ids) >= 2 else None

    def action_compare(self) -> None:
        ids = self._selection()
        if ids is None:
            self.notify("select two or more runs with space, then press c", severity="warning")
            return
        suites = {r.suite for r in self.loaded if r.run_id in ids}
        if len(suites) > 1:  # runs of several suites: each model's metrics side by side instead
            self.notify(f"runs of {len(suites)} suites: showing models x metrics (compare takes "
                        "runs of one suite)", timeout=5)
            self.app.open_matrix(run_ids=ids)
            return
        self.app.open_compare(ids)

    def action_matrix(self) -> None:
        """Models x metrics of the selection, else of the highlighted run's study, else of a
        study chosen from a list."""
        ids = self._selection()
        if ids is not None:
            self.app.open_matrix(run_ids=ids)
            return
        row = next((r for r in self.loaded if r.run_id == self.current_run_id()), None)
        study = self.studies.get(row.job_id or -1, ("", ""))[0] if row else ""
        if study:
            self.app.open_matrix(study=study)
            return
        names = study_names(self.app.backend.store)
        if not names:
            self.notify("no study here: select two or more runs with space, then press m",
                        severity="warning")
            return
        self.app.push_screen(ChoiceScreen("Models x metrics of which study?",
                                          [(n, n) for n in names]),
                             lambda name: self.app.open_matrix(study=name) if name else None)

    def action_cycle_sort(self) -> None:
        sorts = SORTS if self.sort in SORTS else (self.sort, *SORTS)
        self.sort = sorts[(sorts.index(self.sort) + 1) % len(sorts)]
        self.descending = self.sort in ("date", "id")
        self.reload()

    def action_choose_sort(self) -> None:
        options = [(s, s) for s in SQL_SORTS] + [(m, f"{fmt.short_name_of(m)}  ({m})") for m in metric_sorts()]

        def chosen(sort: str | None) -> None:
            if sort:
                self.sort, self.descending = sort, sort in ("date", "id")
                self.reload()
        self.app.push_screen(ChoiceScreen("Sort runs by", options), chosen)

    def action_flip_order(self) -> None:
        self.descending = not self.descending
        self.reload()

    def action_reload(self) -> None:
        self.reload(keep_cursor=True)
