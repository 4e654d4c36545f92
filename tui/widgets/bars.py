"""A horizontal bar chart of metric values with their intervals, drawn with block characters
(reads the same in light and dark themes and over any SSH terminal)."""

from __future__ import annotations

from typing import Sequence

from rich.table import Table
from rich.text import Text

from tui import format as fmt


def bar_chart(title: str, rows: Sequence[tuple[str, float | None, float | None, float | None]],
              width: int = 30, color: str = "") -> Table:
    """rows: (label, value, ci_low, ci_high). Bars share one scale from 0 (or the lowest value,
    when some are negative) to the highest interval end; the interval is drawn as ├─┤ below."""
    values = [v for _, v, lo, hi in rows for v in (v, lo, hi) if v is not None and v == v]
    low = min([0.0, *values]) if values else 0.0
    high = max(values) if values else 1.0
    span = (high - low) or 1.0
    table = Table(title=Text(title, style="bold"), title_justify="left", box=None,
                  show_header=False, padding=(0, 1), expand=False)
    table.add_column("group", no_wrap=True, max_width=34)
    table.add_column("bar", no_wrap=True, width=width)
    table.add_column("value", no_wrap=True)
    for label, value, ci_low, ci_high in rows:
        if value is None or value != value:
            table.add_row(label, "", "–")
            continue
        bar = Text(fmt.text_bar((value - low) / span, width), style=color)
        if ci_low is not None and ci_high is not None and ci_low == ci_low and ci_high == ci_high:
            a = int(round((ci_low - low) / span * (width - 1)))
            b = int(round((ci_high - low) / span * (width - 1)))
            whisker = [" "] * width
            for i in range(max(a, 0), min(b, width - 1) + 1):
                whisker[i] = "─"
            whisker[max(min(a, width - 1), 0)] = "├"
            whisker[max(min(b, width - 1), 0)] = "┤"
            bar = Text.assemble(bar, "\n", ("".join(whisker), "dim"))
        table.add_row(label, bar, fmt.ci(value, ci_low, ci_high))
    return table
