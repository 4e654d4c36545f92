"""Models x metrics: one row per model of a study (or of a selection of runs), the baseline
first; the headline metric of every suite and the continuation-quality figures as columns, each
cell the value with its interval and the delta against the baseline marked with its verdict
(better / worse / equivalent / inconclusive / not evidence / unverified / changed: the engine's
paired, quality-aware judgement, the study report's). Below the table, the highlighted cell's
verdict in short (its mark, the equivalence margin, for an inconclusive one the items that would
decide it), then its sentence as the report words it, with the metric's glossary entry.
Sortable by any column. `p` shows the trade-off plot: the highlighted fairness metric of every
model against a quality metric (`v` picks which), the question "is the compressed model less
toxic, and what did it cost?" in one picture.

A study's judgement takes a minute of paired bootstraps on a real study: the view shows the last
one kept under the home (`engine.judgement_cache`) at once, and when the study's runs, plan or
settings changed since, marks it stale while a child process judges it afresh, with its progress
on the line above the table. Leaving the view kills that child (the worker is cancelled with the
screen), so opening and leaving the view again and again never piles up computations."""

from __future__ import annotations

import asyncio
import json
import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static
from textual_plotext import PlotextPlot

from engine import api
from tui import format as fmt
from tui.matrix_cells import cell_text, legend, sentence_text
from tui.matrix_data import Column, Matrix, ModelRow, judged_matrix, selection_matrix
from tui.state import export
from tui.widgets import tradeoff
from tui.widgets.dialogs import export_dialog
from tui.widgets.rowtable import TextTable
from tui.widgets.footer import KeyFooter


def _kill_started(starting: asyncio.Future) -> None:
    """Kill the child a cancelled view had asked for, once it has started."""
    if starting.cancelled() or starting.exception() is not None:
        return
    try:
        starting.result().kill()
    except ProcessLookupError:
        pass


class MatrixScreen(Screen):
    BINDINGS = [
        Binding("escape,backspace", "app.pop_screen", "Back"),
        Binding("s", "sort", "Sort", tooltip="sort by the highlighted column"),
        Binding("o", "flip_order", "Order", show=False),
        Binding("enter", "open", "Open the run"),
        Binding("p", "toggle_plot", "Plot", tooltip="the trade-off plot"),
        Binding("v", "cycle_axis", "Plot x-axis", show=False),
        Binding("x", "export", "Export"),
    ]

    def __init__(self, *, study: str | None = None, run_ids: list[int] | None = None):
        super().__init__()
        if (study is None) == (not run_ids):
            raise ValueError("a models x metrics view is of one study or of a selection of runs")
        self.study = study
        self.run_ids = list(run_ids or [])
        self.matrix: Matrix | None = None
        self.sort_key: str | None = None
        self.descending = False
        self.shown: list[ModelRow] = []
        self.export_path = None
        self.x_axis: str | None = None      # the plot's quality column (key); None: the first
        # a study's judgement: where the one shown comes from ("cache" | "computed"), whether
        # the runs or settings changed since it was computed, and the recomputation's progress
        self.source: str | None = None
        self.stale = False
        self.computed_at: float | None = None
        self.progress = ""
        self.judge_process: asyncio.subprocess.Process | None = None
        self.left = False           # the screen was dismissed: its worker's results go nowhere

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("loading…", id="matrix-title", classes="title-line")
        yield Static("", id="matrix-progress", classes="status-line")
        yield Static("", id="matrix-warnings")
        yield TextTable(id="matrix-table", cursor_type="cell", fixed_columns=1)
        yield Static("", id="matrix-sentence", classes="status-line")
        yield PlotextPlot(id="matrix-plot")
        yield Static("", id="matrix-legend")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.sub_title = f"models x metrics: {self._what()}"
        self.query_one(PlotextPlot).display = False
        self.query_one("#matrix-legend").display = False
        self.query_one("#matrix-progress").display = False
        self.query_one(DataTable).focus()
        if self.study:
            self.run_worker(self._load_study, exclusive=True, group="matrix")
        else:
            self.run_worker(self._load, exclusive=True, group="matrix")
        self.app.theme_changed_signal.subscribe(self, lambda _: self._show() if self.matrix else None)

    def _what(self) -> str:
        return f"study {self.study}" if self.study else "runs " + ", ".join(map(str, self.run_ids))

    def on_unmount(self) -> None:
        # Textual cancels a removed screen's workers; said here too, and the child judging
        # the study killed at once (the worker's cancellation kills it as well)
        self.left = True
        self.workers.cancel_group(self, "matrix")
        self._kill_judge()

    @property
    def gone(self) -> bool:
        """Dismissed (or its widgets already removed, which comes first): nothing to update."""
        return self.left or not self.query("#matrix-progress")

    def _kill_judge(self) -> None:
        proc, self.judge_process = self.judge_process, None
        if proc is not None and proc.returncode is None:
            try:
                proc.kill()
            except ProcessLookupError:
                pass

    async def _load(self) -> None:
        run_ids = self.run_ids
        try:
            self.matrix = await self.app.backend.read(lambda store: selection_matrix(store, run_ids))
        except ValueError as exc:  # an unknown run (UserError subclasses)
            self.query_one("#matrix-title", Static).update(Text(str(exc)))
            return
        self._show()

    # -- a study: the cached judgement first, then a fresh one if the study changed ---------
    async def _load_study(self) -> None:
        study = self.study
        assert study is not None

        def cached(store):
            key = api.study_judgement_key(store, study)
            kept = api.cached_study_judgement(store, study)
            return key, kept, judged_matrix(study, kept.judged) if kept else None
        for attempt in range(3):    # judged again once if the study changed meanwhile
            try:
                key, kept, matrix = await self.app.backend.read(cached)
            except ValueError as exc:  # an unknown study (UserError subclasses)
                if not self.gone:
                    self.query_one("#matrix-title", Static).update(Text(str(exc)))
                return
            if self.gone:
                return
            if matrix is not None:
                self.matrix, self.computed_at = matrix, kept.computed_at
                self.stale = kept.key != key
                self.source = "cache" if self.source is None else self.source
                self._show()
                if not self.stale:
                    self._set_progress("")
                    return
            if attempt == 2:
                self._set_progress("showing the last judgement (stale: the study changed while "
                                   "it was being judged; open the view again to judge it anew)")
                return
            if not await self._judge(study) or self.gone:
                return
            self.source = "computed"

    async def _judge(self, study: str) -> bool:
        """Judge the study in a child process (killed if this worker is cancelled), showing
        its progress; True when it saved a judgement."""
        started = time.monotonic()
        state = {"total": None, "done": 0, "deciding": False}

        def line() -> str:
            total = state["total"]
            what = f"judging {total} comparisons…" if total is not None else "judging the study…"
            if state["deciding"]:
                what += " deciding (multiple-comparison adjustment)…"
            elif total:
                what += f" {state['done']}/{total}"
            head = ("showing the last judgement (stale: runs, plan or settings changed since) · "
                    if self.stale and self.matrix is not None else "")
            return f"{head}{what} {time.monotonic() - started:.0f} s"
        if self.matrix is None:
            self.query_one("#matrix-title", Static).update(Text("judging the study…"))
        self._set_progress(line())
        command = api.study_judgement_command(self.app.backend.store, study)
        starting = asyncio.ensure_future(asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL, start_new_session=True))
        try:
            proc = await asyncio.shield(starting)
        except asyncio.CancelledError:      # left while the child was starting: kill it then
            starting.add_done_callback(_kill_started)
            raise
        self.judge_process = proc
        if self.gone:
            self._kill_judge()
            return False
        errors = asyncio.ensure_future(proc.stderr.read())     # never a full pipe
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(proc.stdout.readline(), timeout=1.0)
                except asyncio.TimeoutError:
                    self._set_progress(line())
                    continue
                if not raw:
                    break
                try:
                    message = json.loads(raw)
                except ValueError:
                    continue
                state.update({k: v for k, v in message.items() if k in state})
                self._set_progress(line())
            code = await proc.wait()
            stderr = (await errors).decode(errors="replace").strip()
        finally:
            errors.cancel()
            self._kill_judge()
        if self.gone:
            return False
        if code != 0:
            reason = stderr.splitlines()[-1] if stderr else f"exit status {code}"
            self._set_progress(f"could not judge the study: {reason}", error=True)
            if self.matrix is None:
                self.query_one("#matrix-title", Static).update(Text(f"could not judge {study}"))
            return False
        return True

    def _set_progress(self, text: str, error: bool = False) -> None:
        self.progress = text
        if self.gone:
            return
        widget = self.query_one("#matrix-progress", Static)
        colors = fmt.theme_colors(self.app.theme_variables)
        style = colors["worse"] if error else colors["warning"] if self.stale else colors["muted"]
        widget.update(Text(text, style=style))
        widget.display = bool(text)

    # -- rendering -----------------------------------------------------------------------
    def _show(self) -> None:
        m = self.matrix
        assert m is not None
        colors = fmt.theme_colors(self.app.theme_variables)
        base = next((r for r in m.rows if r.baseline), None)
        self.query_one("#matrix-title", Static).update(Text.assemble(
            (f"{m.title}", "bold"), f" · {len(m.rows)} models · baseline ★ ",
            (base.label if base else "–", "bold"), "  ", legend(colors)))
        warnings = self.query_one("#matrix-warnings", Static)
        warnings.update(Text("\n".join(f"⚠ {w}" for w in m.warnings[:3])
                             + (f"\n… {len(m.warnings) - 3} more" if len(m.warnings) > 3 else ""),
                             style=colors["warning"]))
        warnings.display = bool(m.warnings)
        table = self.query_one(DataTable)
        cursor = table.cursor_coordinate
        table.clear(columns=True)
        arrow = "↓" if self.descending else "↑"
        labels = [f"model{' ' + arrow if self.sort_key == 'label' else ''}"]
        labels += [col.label + (f" {arrow}" if self.sort_key == col.key else "") for col in m.columns]
        self.shown = m.sorted_rows(self.sort_key, self.descending)
        rows = []
        for row in self.shown:
            model = row.model if row.model != row.label else ""
            model = model if len(model) <= 24 else "…" + model[-23:]
            cells = [Text.assemble(("★ " if row.baseline else "  ", colors["accent"]), (row.label, "bold"),
                                   "\n  ", (model, colors["muted"]))]
            for col in m.columns:
                cells.append(cell_text(row, col, colors))
            rows.append(cells)
        table.fill_measured(list(zip(labels, ["label", *(c.key for c in m.columns)])),
                            [(row.label, cells) for row, cells in zip(self.shown, rows)], height=3)
        if self.shown:
            table.move_cursor(row=min(cursor.row, len(self.shown) - 1),
                              column=min(max(cursor.column, 1), len(m.columns)))
        self._show_sentence()
        if self.query_one(PlotextPlot).display:
            self._plot()

    def current(self) -> tuple[ModelRow, Column | None] | None:
        """The highlighted model and column (None on the model column)."""
        if self.matrix is None or not self.shown:
            return None
        coord = self.query_one(DataTable).cursor_coordinate
        row = self.shown[min(coord.row, len(self.shown) - 1)]
        column = self.matrix.columns[coord.column - 1] if 0 < coord.column <= len(self.matrix.columns) else None
        return row, column

    def _show_sentence(self) -> None:
        here = self.current()
        line = self.query_one("#matrix-sentence", Static)
        if here is None:
            line.update("")
            return
        row, col = here
        line.update(sentence_text(row, col, fmt.theme_colors(self.app.theme_variables)))

    def on_data_table_cell_highlighted(self, event: DataTable.CellHighlighted) -> None:
        self._show_sentence()
        if self.query_one(PlotextPlot).display:
            self._plot()

    # -- the trade-off plot --------------------------------------------------------------
    def plot_axes(self) -> tuple[Column, Column] | None:
        """(x, y): the chosen quality column, and the highlighted column when it measures
        fairness (else the first fairness column); None without both kinds."""
        if self.matrix is None:
            return None
        xs, ys = tradeoff.quality_columns(self.matrix), tradeoff.fairness_columns(self.matrix)
        if not xs or not ys:
            return None
        x = next((c for c in xs if c.key == self.x_axis), xs[0])
        here = self.current()
        y = here[1] if here and here[1] is not None and here[1] in ys else ys[0]
        return x, y

    def _plot(self) -> None:
        plot = self.query_one(PlotextPlot)
        axes = self.plot_axes()
        legend = self.query_one("#matrix-legend", Static)
        if axes is None:
            plot.plt.clear_data()
            legend.update(Text("a trade-off plot needs a fairness and a quality metric "
                               "(e.g. toxicity and perplexity runs)", style="dim"))
        else:
            legend.update(tradeoff.draw(plot.plt, self.shown, *axes))
        plot.refresh()

    def action_toggle_plot(self) -> None:
        plot = self.query_one(PlotextPlot)
        plot.display = not plot.display
        self.query_one("#matrix-legend").display = plot.display
        if plot.display:
            self._plot()

    def action_cycle_axis(self) -> None:
        """The next quality metric on the plot's x-axis."""
        if self.matrix is None:
            return
        keys = [c.key for c in tradeoff.quality_columns(self.matrix)]
        if keys:
            current = self.x_axis if self.x_axis in keys else keys[0]
            self.x_axis = keys[(keys.index(current) + 1) % len(keys)]
        if not self.query_one(PlotextPlot).display:
            self.action_toggle_plot()
        else:
            self._plot()

    # -- actions -------------------------------------------------------------------------
    def action_sort(self) -> None:
        here = self.current()
        if here is None:
            return
        key = here[1].key if here[1] is not None else "label"
        if key == self.sort_key:
            self.descending = not self.descending
        else:
            self.sort_key, self.descending = key, False
        self._show()

    def action_flip_order(self) -> None:
        self.descending = not self.descending
        self._show()

    def action_open(self) -> None:
        here = self.current()
        if here is None:
            return
        row, col = here
        cell = row.cells.get(col.key) if col is not None else None
        run_id = cell.run_id if cell is not None else next(iter(row.runs.values()), None)
        if run_id is not None:
            self.app.open_run(run_id)

    def on_data_table_cell_selected(self, event: DataTable.CellSelected) -> None:
        event.stop()
        self.action_open()

    def action_export(self) -> None:
        if self.matrix is not None:
            self.app.push_screen(export_dialog(), self._export)

    def _export(self, fmt_name: str | None) -> None:
        if not fmt_name or self.matrix is None:
            return
        records = self.matrix.records()
        stem = f"models-{self.study}" if self.study else "models-" + "-".join(map(str, self.run_ids))
        self.export_path = export(self.app.home, records, fmt_name, stem)
        self.notify(f"exported {len(records)} rows to {self.export_path}", timeout=8)
