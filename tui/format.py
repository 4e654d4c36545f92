"""Formatting for the app's cells: numbers with intervals, dates, sizes, text bars, and the
better/worse colours taken from the current theme (so light and dark themes both read well)."""

from __future__ import annotations

import math
from typing import Any, Mapping

from rich.text import Text

from engine.evaluation.suites import find_metric
from engine.formatting import fmt_count as count, fmt_time as date  # noqa: F401 - used as fmt.count/fmt.date

BAR_BLOCKS = " ▏▎▍▌▋▊▉█"


def num(value: Any, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.3g}"
    return str(value)


def ci(value: float | None, low: float | None, high: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if low is None or high is None:
        return num(value, digits)
    return f"{num(value, digits)} [{num(low, digits)}, {num(high, digits)}]"


def signed(delta: float | None, digits: int = 3) -> str:
    if delta is None:
        return ""
    return f"{delta:+.{digits}f}" if abs(delta) < 1e4 else f"{delta:+.3g}"


def duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0 or not math.isfinite(seconds):
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def short_name(metric: str) -> str:
    """A short column label for a metric name: initials of a multi-word name
    (expected_max_toxicity -> EMT), else the name itself."""
    words = [w for w in metric.replace("/", "_").split("_") if w]
    if len(words) > 1:
        return "".join(w[0] for w in words).upper()
    return metric[:10]


def short_name_of(metric: str, suite: str | None = None) -> str:
    """The registry's abbreviation of a metric (MetricSpec.short; the help screen's glossary
    explains it), else `short_name`."""
    try:
        spec = find_metric(metric.split("/")[0], suite)
    except ValueError:  # an unknown suite (SpecError)
        spec = None
    return spec.short if spec is not None and spec.short else short_name(metric)


def glossary_line(suite: str, metrics: list[str]) -> str:
    """`EMT = expected max toxicity (lower is better) · TP = ...`: a run's abbreviations
    spelled out from the registry (the help screen has the whole glossary)."""
    parts = []
    for name in metrics:
        try:
            spec = find_metric(name.split("/")[0], suite)
        except ValueError:
            spec = None
        if spec is None:
            continue
        how = f"ideal {spec.target:g}" if spec.target is not None else \
            {"lower": "lower is better", "higher": "higher is better"}.get(spec.direction, "")
        parts.append(f"{short_name_of(name, suite)} = {spec.title}" + (f" ({how})" if how else ""))
    return " · ".join(parts)


def text_bar(fraction: float | None, width: int) -> str:
    """A horizontal bar of `width` cells filled to `fraction` (eighth-cell resolution)."""
    if fraction is None or width <= 0:
        return " " * max(width, 0)
    fraction = max(0.0, min(1.0, fraction))
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    bar = "█" * full + (BAR_BLOCKS[part] if part else "")
    return bar.ljust(width)


def progress_cell(fraction: float | None, width: int = 12) -> Text:
    pct = f"{(fraction or 0.0) * 100:3.0f}%"
    return Text.assemble((text_bar(fraction or 0.0, width), "bold"), " ", pct)


def theme_colors(variables: Mapping[str, str]) -> dict[str, str]:
    """better/worse/same/warning/muted/accent styles from the App's theme variables (the
    text-* variants are the ones tuned for text on the theme's background)."""
    def pick(*names: str, default: str) -> str:
        for name in names:
            value = variables.get(name, "")
            if value.startswith("#"):
                return value
        return default
    return {
        "better": pick("text-success", "success", default="green"),
        "worse": pick("text-error", "error", default="red"),
        "warning": pick("text-warning", "warning", default="yellow"),
        "accent": pick("text-accent", "accent", default="cyan"),
        "same": "dim",
        "muted": "dim",
        # a lower toxicity/bias from a model whose continuations degraded
        "not evidence": "bold " + pick("text-warning", "warning", default="yellow"),
    }


STATUS_STYLE = {"done": "better", "failed": "worse", "cancelled": "muted", "running": "accent",
                "queued": "", "cancelling": "warning"}


def status_text(status: str, colors: Mapping[str, str]) -> Text:
    key = STATUS_STYLE.get(status, "")
    return Text(status, style=colors.get(key, "") if key else "")


def verdict_text(delta: float | None, verdict: str, colors: Mapping[str, str]) -> Text:
    """The delta coloured by verdict, with an arrow that also reads without colour."""
    if delta is None:
        return Text("")
    mark = {"better": " ✔", "worse": " ✘", "same": " ≈", "not evidence": " ⚠"}.get(verdict, "")
    return Text(signed(delta) + mark, style=colors.get(verdict, "") if verdict else "")
