"""How a models x metrics cell and the line below the table read: the value with its interval,
the delta against the baseline marked with its verdict, and the highlighted cell's sentence
(tui/screens/matrix.py shows them)."""

from __future__ import annotations

from rich.text import Text

from tui import format as fmt
from tui.matrix_data import Cell, Column, ModelRow


def value_text(column: Column, cell: Cell) -> str:
    """The value and, below it, its interval, in the metric's own format."""
    spec = column.metric
    if cell.ci_low is None or cell.ci_high is None:
        return spec.format(cell.value) + "\n"
    return f"{spec.format(cell.value)}\n[{spec.format(cell.ci_low)},{spec.format(cell.ci_high)}]"


def legend(colors: dict) -> Text:
    return fmt.verdict_legend(colors)


def cell_text(row: ModelRow, col: Column, colors: dict) -> Text:
    """A cell: the value and its interval, then the delta marked with its verdict (or "baseline")."""
    cell = row.cells.get(col.key)
    if cell is None or cell.value is None:
        return Text("–", style=colors["muted"])
    second = (Text("baseline", style=colors["muted"]) if row.baseline
              else fmt.verdict_text(cell.delta, cell.verdict, colors))
    return Text.assemble(value_text(col, cell), "\n", second)


def sentence_text(row: ModelRow, col: Column | None, colors: dict) -> Text:
    """The line below the table for the highlighted cell (a model's runs for its label column)."""
    if col is None:
        return Text(f"{row.label}: {row.model}; runs "
                    + ", ".join(f"{s} #{i}" for s, i in sorted(row.runs.items())))
    cell = row.cells.get(col.key)
    spec = col.metric
    head = f"{col.label} = {spec.title} ({col.suite}, {spec.direction} is better): "
    if spec.target is not None:
        head = f"{col.label} = {spec.title} ({col.suite}, ideal {spec.target:g}): "
    if cell is None:
        body = f"{row.label} has no {col.suite} run"
    elif row.baseline:
        body = f"{row.label} is the baseline (run {cell.run_id})"
    else:
        body = cell.sentence or (f"{row.label}: delta {fmt.signed(cell.delta)} (no paired test "
                                 "for this metric)" if cell.delta is not None else "")
        detail = cell.detail()
        if detail:
            return Text.assemble(head, (detail, colors.get(cell.verdict, "")), " · ", body)
    return Text(head + body)
