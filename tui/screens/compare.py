"""Compare: runs side by side with deltas against a baseline, marked and coloured by verdict
(better / worse / equivalent / inconclusive / not evidence / unverified / changed: the engine's
paired, quality-aware verdicts, the same as the study report's; a delta no paired test judged,
a subset's for one, is marked "descriptive"), a plot of the highlighted metric
against model size or sparsity, and warnings when the runs are not comparable."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static
from textual_plotext import PlotextPlot

from engine import api
from engine.api import SparsityRecord
from tui import format as fmt
from tui.state import export
from tui.widgets.dialogs import export_dialog
from tui.widgets.rowtable import TextTable
from tui.widgets.footer import KeyFooter
from tui.plot_layout import baseline_last, limits, shared_labels, spread_models

X_AXES = ("non-zero parameters (M)", "sparsity", "model")
# plotext colour names, and the rich colours that look the same in the legend line.
PLOT_COLORS = ("cyan", "orange", "green", "magenta", "blue", "red", "yellow", "gray")
LEGEND_COLORS = ("cyan", "dark_orange", "green", "magenta", "blue", "red", "yellow", "grey50")


def _sparsity(model: dict | None) -> float | None:
    """The model's overall sparsity: its compression record's, else the share of zero
    parameters, else 0 for an uncompressed or distilled model (None when unknown)."""
    if not model:
        return None
    record = SparsityRecord.from_json(model.get("sparsity"))
    if record is not None:
        return record.overall
    if model.get("n_params") and model.get("n_nonzero") is not None:
        return 1.0 - model["n_nonzero"] / model["n_params"]
    return 0.0 if (model.get("method") or "base") in ("base", "distill") else None


def spread(xs: list[float]) -> list[float]:
    """Points at the same x, each of its own model, moved apart (`spread_models`)."""
    return spread_models(xs, range(len(xs)))


class CompareScreen(Screen):
    # The plot starts hidden on short terminals (p shows it).
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]
    BINDINGS = [
        Binding("escape,backspace", "app.pop_screen", "Back"),
        Binding("b", "baseline", "Baseline", tooltip="baseline = the highlighted column"),
        Binding("p", "toggle_plot", "Plot"),
        Binding("v", "cycle_axis", "Plot x-axis"),
        Binding("x", "export", "Export"),
    ]

    def __init__(self, run_ids: list[int], baseline_id: int | None = None):
        super().__init__()
        self.run_ids = list(run_ids)
        self.baseline_id = baseline_id if baseline_id is not None else self.run_ids[0]
        self.comparison: api.Comparison | None = None
        self.models: dict[int, dict | None] = {}
        self.axis = X_AXES[0]
        self.export_path = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="compare-title", classes="title-line")
        yield Static("", id="compare-warnings")
        yield TextTable(id="compare-table", cursor_type="cell", fixed_columns=2)
        yield PlotextPlot(id="compare-plot")
        yield Static("", id="compare-legend")
        yield Static("", id="compare-export", classes="status-line")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.sub_title = "compare runs " + ", ".join(map(str, self.run_ids))
        self.query_one(DataTable).focus()
        self.reload()
        self.app.theme_changed_signal.subscribe(
            self, lambda _: self._show() if self.comparison else None)

    def reload(self) -> None:
        self.run_worker(self._load, exclusive=True, group="compare")

    async def _load(self) -> None:
        ids, baseline = self.run_ids, self.baseline_id

        def read(store):
            comparison = api.compare(store, ids, baseline)
            models = {i: api.run_detail(store, i, worst=0)["model"] for i in ids}
            return comparison, models
        try:
            self.comparison, self.models = await self.app.backend.read(read)
        except ValueError as exc:
            self.query_one("#compare-title", Static).update(Text(str(exc)))
            return
        self._show()

    # -- rendering -----------------------------------------------------------------------
    def _run_label(self, run: dict) -> str:
        star = "★ " if run["id"] == self.baseline_id else ""
        return f"{star}#{run['id']} {run['model'] or '?'}"

    def _show(self) -> None:
        c = self.comparison
        assert c is not None
        colors = fmt.theme_colors(self.app.theme_variables)
        base = next(r for r in c.runs if r["id"] == self.baseline_id)
        untested = any(cell.delta is not None and not cell.verdict for *_, cells in c.rows
                       for cell in cells)
        self.query_one("#compare-title", Static).update(Text.assemble(
            ("baseline ★ ", "bold"), f"#{base['id']} {base['model']} ({base['suite']}, "
            f"{base['scorer'] or '–'})  ·  ", fmt.verdict_legend(colors),
            (f" · {fmt.UNTESTED}: no paired test" if untested else "", colors["muted"])))
        warnings = self.query_one("#compare-warnings", Static)
        if c.warnings:
            warnings.update(Text("\n".join(f"⚠ {w}" for w in c.warnings), style=colors["warning"]))
            warnings.display = True
        else:
            warnings.display = False
        table = self.query_one(DataTable)
        cursor = table.cursor_coordinate
        table.clear(columns=True)
        columns = [("metric", "metric"), ("subset", "subset")]
        columns += [(self._run_label(run), f"run-{run['id']}") for run in c.runs]
        rows = []
        for index, (name, subset, cells) in enumerate(c.rows):
            row = [Text(name), Text(subset or "all")]
            for run, cell in zip(c.runs, cells):
                value = Text(fmt.ci(cell.value, cell.ci_low, cell.ci_high))
                if run["id"] == self.baseline_id:
                    second = Text("baseline", style=colors["muted"])
                else:
                    second = fmt.delta_text(cell.delta, cell.verdict, colors)
                row.append(Text.assemble(value, "\n", second))
            rows.append((str(index), row))
        table.fill_measured(columns, rows, height=2)
        if c.rows:
            table.move_cursor(row=min(cursor.row, len(c.rows) - 1),
                              column=min(max(cursor.column, 2), len(c.runs) + 1))
        self._plot()

    def _plot(self) -> None:
        plot = self.query_one(PlotextPlot)
        c = self.comparison
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        if not c or not c.rows:
            plot.refresh()
            return
        row = self.query_one(DataTable).cursor_row
        name, subset, _ = c.rows[min(max(row, 0), len(c.rows) - 1)]
        xs, ys, labels, intervals, base = self.plot_input()
        plt.title(f"{name}" + (f" [{subset}]" if subset else "") + f" vs {self.axis}")
        if xs:
            self._draw(plt, xs, ys, labels, intervals, base)
        legend = Text(" ")
        for i, label in enumerate(labels):
            legend.append(f"{'★' if base[i] else '●'} {i + 1} ", style=LEGEND_COLORS[i % len(LEGEND_COLORS)])
            legend.append(label + "   ")
        if len(labels) < len(c.runs):
            legend.append(f"({len(c.runs) - len(labels)} run(s) without this metric or x value)",
                          style="dim")
        self.query_one("#compare-legend", Static).update(legend)
        plot.refresh()

    def plot_input(self) -> tuple[list[float], list[float], list[str], list[tuple], list[bool]]:
        """The highlighted metric's points: x (one per model, `spread_models`), y, label,
        interval and whether it is the baseline, for the runs that have both values."""
        c = self.comparison
        assert c is not None
        _, _, cells = c.rows[min(max(self.query_one(DataTable).cursor_row, 0), len(c.rows) - 1)]
        xs, ys, labels, intervals, models, base = [], [], [], [], [], []
        order = list(dict.fromkeys(run["model_id"] or f"run-{run['id']}" for run in c.runs))
        for run, cell in zip(c.runs, cells):
            model, key = self.models.get(run["id"]), run["model_id"] or f"run-{run['id']}"
            if self.axis == X_AXES[0]:
                x = ((model.get("n_nonzero") or model.get("n_params")) / 1e6
                     if model and (model.get("n_nonzero") or model.get("n_params")) else None)
            elif self.axis == X_AXES[1]:
                x = _sparsity(model)
            else:
                x = float(order.index(key) + 1)     # one x per model, in the order compared
            if x is None or cell.value is None or cell.value != cell.value:
                continue
            xs.append(x)
            ys.append(cell.value)
            labels.append(f"#{run['id']} {run['model'] or ''}")
            intervals.append((cell.ci_low, cell.ci_high))
            models.append(key)
            base.append(run["id"] == self.baseline_id)
        return (spread_models(xs, models) if xs else xs), ys, labels, intervals, base

    def _draw(self, plt, xs: list[float], ys: list[float], labels: list[str],
              intervals: list[tuple], base: list[bool]) -> None:
        """One series per run (a numbered legend entry each), its interval as a vertical line;
        the baseline's drawn last (on top), runs on one spot sharing a label (`1,2`), the
        y-axis stopping at zero for values that cannot be negative."""
        lows = [lo for lo, _ in intervals if lo is not None] + ys
        highs = [hi for _, hi in intervals if hi is not None] + ys
        x_lim, y_lim = limits(xs, 0.08, 1.0), limits(lows + highs, 0.08, 0.05)
        for i in baseline_last(base):
            color, (low, high) = PLOT_COLORS[i % len(PLOT_COLORS)], intervals[i]
            if low is not None and high is not None:
                plt.plot([xs[i], xs[i]], [low, high], marker="│", color=color)
            plt.scatter([xs[i]], [ys[i]], marker="★" if base[i] else "●", color=color)
        tolerance = ((x_lim[1] - x_lim[0]) * 0.015, (y_lim[1] - y_lim[0]) * 0.03)
        for i, label in shared_labels(list(zip(xs, ys)), range(1, len(xs) + 1), tolerance).items():
            plt.text(f" {label}", xs[i], ys[i], color=PLOT_COLORS[i % len(PLOT_COLORS)],
                     alignment="left")
        plt.xlim(*x_lim)
        plt.ylim(*y_lim)
        if self.axis == X_AXES[2]:
            ticks: dict[float, list[str]] = {}
            for x, label in zip(xs, labels):
                ticks.setdefault(x, []).append(label.split()[0])
            plt.xticks(list(ticks), [",".join(ids) for ids in ticks.values()])

    def on_data_table_cell_highlighted(self, event: DataTable.CellHighlighted) -> None:
        if self.comparison is not None:
            self._plot()

    # -- actions -------------------------------------------------------------------------
    def action_baseline(self) -> None:
        column = self.query_one(DataTable).cursor_column
        if column < 2 or self.comparison is None:
            self.notify("move the cursor to a run's column, then press b", severity="warning")
            return
        self.baseline_id = self.comparison.runs[column - 2]["id"]
        self.reload()

    def action_toggle_plot(self) -> None:
        plot = self.query_one(PlotextPlot)
        plot.display = not plot.display
        self.query_one("#compare-legend").display = plot.display

    def action_cycle_axis(self) -> None:
        self.axis = X_AXES[(X_AXES.index(self.axis) + 1) % len(X_AXES)]
        self.query_one(PlotextPlot).display = True
        self.query_one("#compare-legend").display = True
        self._plot()

    def action_export(self) -> None:
        if self.comparison is not None:
            self.app.push_screen(export_dialog(), self._export)

    def _export(self, fmt_name: str | None) -> None:
        if not fmt_name or self.comparison is None:
            return
        records = self.comparison.to_records()
        stem = "compare-" + "-".join(map(str, self.run_ids))
        path = export(self.app.home, records, fmt_name, stem)
        self.export_path = path
        self.query_one("#compare-export", Static).update(Text(f"exported to {path}"))
        self.notify(f"exported {len(records)} rows to {path}", timeout=8)
