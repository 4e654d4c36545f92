"""The models x metrics view's trade-off plot: one point per model, a fairness metric (y)
against a quality metric (x: perplexity, continuation perplexity, ...), each point with its
interval on both axes and the model's number beside it (models on one spot share a label,
`1,3`; the teacher's ★ is drawn last, over any other; axes of non-negative values stop at
zero, tui.plot_layout); the legend (number -> model) wraps below the plot, so no model is
cut off however many there are."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text

from tui.matrix_data import Column, Matrix, ModelRow
from tui.plot_layout import baseline_last, limits, shared_labels

PLOT_COLORS = ("cyan", "orange", "green", "magenta", "blue", "red", "yellow", "gray")
LEGEND_COLORS = ("cyan", "dark_orange", "green", "magenta", "blue", "red", "yellow", "grey50")


def quality_columns(matrix: Matrix) -> list[Column]:
    """The columns that measure what compression cost (the x-axis choices)."""
    return [c for c in matrix.columns if c.metric.role == "quality"]


def fairness_columns(matrix: Matrix) -> list[Column]:
    return [c for c in matrix.columns if c.metric.role != "quality"]


@dataclass(frozen=True)
class Point:
    number: int
    row: ModelRow
    x: float
    y: float
    x_ci: tuple[float | None, float | None]
    y_ci: tuple[float | None, float | None]


def points(rows: list[ModelRow], x: Column, y: Column) -> list[Point]:
    """The models that have both values, numbered in the order shown (1 = the first row)."""
    out = []
    for number, row in enumerate(rows, 1):
        cx, cy = row.cells.get(x.key), row.cells.get(y.key)
        if cx is None or cy is None or cx.value is None or cy.value is None:
            continue
        out.append(Point(number, row, cx.value, cy.value, (cx.ci_low, cx.ci_high), (cy.ci_low, cy.ci_high)))
    return out


def draw(plt, rows: list[ModelRow], x: Column, y: Column) -> Text:
    """Draw the plot on a plotext module (textual_plotext's `plot.plt`); returns the legend."""
    plt.clear_data()
    plt.clear_figure()
    shown = points(rows, x, y)
    plt.title(f"{y.label} ({y.suite}) vs {x.label} ({x.suite}): the trade-off")
    plt.xlabel(f"{x.metric.title} ({x.metric.direction} is better)")
    if shown:
        xs = [v for p in shown for v in (p.x, *p.x_ci) if v is not None]
        ys = [v for p in shown for v in (p.y, *p.y_ci) if v is not None]
        x_lim, y_lim = limits(xs, 0.1, 1.0), limits(ys, 0.1, 0.05)
        colors = {id(p): PLOT_COLORS[i % len(PLOT_COLORS)] for i, p in enumerate(shown)}
        for i in baseline_last([p.row.baseline for p in shown]):   # the teacher on top
            p = shown[i]
            if None not in p.y_ci:
                plt.plot([p.x, p.x], list(p.y_ci), marker="│", color=colors[id(p)])
            if None not in p.x_ci:
                plt.plot(list(p.x_ci), [p.y, p.y], marker="─", color=colors[id(p)])
            plt.scatter([p.x], [p.y], marker="★" if p.row.baseline else "●", color=colors[id(p)])
        # one label per spot, the numbers of every model there (`1,3`), written after the markers
        tolerance = ((x_lim[1] - x_lim[0]) * 0.015, (y_lim[1] - y_lim[0]) * 0.03)
        for i, label in shared_labels([(p.x, p.y) for p in shown], [p.number for p in shown],
                                      tolerance).items():
            plt.text(f" {label}", shown[i].x, shown[i].y, color=colors[id(shown[i])], alignment="left")
        plt.xlim(*x_lim)
        plt.ylim(*y_lim)
    legend = Text()
    for i, p in enumerate(shown):
        legend.append(f"{'★' if p.row.baseline else '●'} {p.number} ", style=LEGEND_COLORS[i % len(LEGEND_COLORS)])
        legend.append(p.row.label + "   ")
    missing = len(rows) - len(shown)
    if missing:
        legend.append(f"({missing} model(s) without both values)", style="dim")
    return legend
