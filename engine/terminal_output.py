"""Terminal output for the CLI: rich tables on a terminal, tab-separated plain text when piped."""

from __future__ import annotations

import json
import math
import sys
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def is_terminal() -> bool:
    return sys.stdout.isatty()


def working(message: str):
    """A spinner with `message` on stderr while a long computation runs (a terminal only; Ctrl-C
    stops it), else nothing: `with working("judging ..."): ...`."""
    from contextlib import nullcontext
    if not sys.stderr.isatty():
        return nullcontext()
    return Console(stderr=True).status(message)


def fmt_value(value: Any, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1e5 else f"{value:.3g}"
    return str(value)


def fmt_ci(value: float | None, low: float | None, high: float | None, digits: int = 3) -> str:
    if value is None:
        return ""
    if low is None or high is None:
        return fmt_value(value, digits)
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None,
                styles: Sequence[Sequence[str | None]] | None = None) -> None:
    """A rich table on a terminal; a header line and tab-separated rows when piped."""
    if not is_terminal():
        sys.stdout.write("\t".join(columns) + "\n")
        for row in rows:
            sys.stdout.write("\t".join(str(c).replace("\t", " ") for c in row) + "\n")
        return
    table = Table(title=title, header_style="bold")
    for column in columns:
        table.add_column(column)
    for i, row in enumerate(rows):
        row_styles = styles[i] if styles else [None] * len(row)
        table.add_row(*(Text(str(c), style=s or "") for c, s in zip(row, row_styles)))
    console.print(table)


def json_safe(data: Any) -> Any:
    """`data` with every NaN or infinite float replaced by None (JSON has no NaN)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: json_safe(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(v) for v in data]
    return data


def print_json(data: Any) -> None:
    """Strict JSON on stdout: NaN and infinities become null."""
    sys.stdout.write(json.dumps(json_safe(data), indent=2, default=str, allow_nan=False) + "\n")


def error(message: str) -> None:
    if sys.stderr.isatty():
        err_console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    else:
        sys.stderr.write(f"error: {message}\n")
