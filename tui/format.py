"""Formatting for the app's cells: numbers with intervals, dates, sizes, text bars, and the
verdicts' marks and colours (taken from the current theme, so light and dark themes both read
well; the marks are the report's, so a verdict reads the same without colour)."""

from __future__ import annotations

import math
from typing import Any, Mapping

from rich.text import Text

from engine.api import find_metric
from engine.api import fmt_count as count, fmt_time as date  # noqa: F401 - used as fmt.count/fmt.date

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
        short = short_name_of(name, suite)
        # "PPL = PPL": a title that is the abbreviation itself gives the metric's name instead
        title = spec.title if spec.title.strip().lower() != short.lower() else name.replace("_", " ")
        parts.append(f"{short} = {title}" + (f" ({how})" if how else ""))
    return " · ".join(parts)


def ellipsize(text: str, width: int, middle: bool = False) -> str:
    """`text` in at most `width` characters: cut at the end with "…", or in the middle (a
    model name's end often tells it from its siblings: `SmolLM2-135M…wanda-50`)."""
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:max(width, 0)]
    if not middle:
        return text[:width - 1] + "…"
    tail = (width - 1) // 2
    return text[:width - 1 - tail] + "…" + text[len(text) - tail:]


def fit_with(title: str, extra: str, width: int, middle: bool = False) -> str:
    """`title (extra)` in at most `width` characters: the title is shortened first (to no
    less than half the width) so that `extra`, what tells look-alike rows apart, stays
    readable; then `extra`, inside its parentheses."""
    tail = f" ({extra})" if extra else ""
    if len(title) + len(tail) <= width:
        return title + tail
    title = ellipsize(title, max(width - len(tail), min(len(title), width // 2)), middle)
    room = width - len(title)
    return title + (f" ({ellipsize(extra, room - 3)})" if room >= 6 else "")


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


# The verdict words (`engine.verdicts`, which the app does not import: tests/test_tui_audit.py
# holds the two to the same words and the report's marks).
BETTER, WORSE, EQUIVALENT, INCONCLUSIVE = "better", "worse", "equivalent", "inconclusive"
NOT_EVIDENCE, UNVERIFIED, CHANGED = "not evidence", "unverified", "changed"
# Each verdict's mark, the study report's: an unverified "better" is "⚠?", a "?" that is not
# merely inconclusive and reads apart from it without colour.
MARKS = {BETTER: "✔", WORSE: "✘", EQUIVALENT: "=", INCONCLUSIVE: "?", NOT_EVIDENCE: "⚠",
         UNVERIFIED: "⚠?", CHANGED: "~"}

# The legend's order (the help screen's glossary says what each word means).
LEGEND = (BETTER, WORSE, EQUIVALENT, INCONCLUSIVE, NOT_EVIDENCE, UNVERIFIED, CHANGED)


def theme_colors(variables: Mapping[str, str]) -> dict[str, str]:
    """Verdict (one per `engine.verdicts` word), warning, muted and accent styles from the
    App's theme variables (the text-* variants are the ones tuned for text on the theme's
    background)."""
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
        "muted": "dim",
        # within the margin: unchanged for practical purposes (neutral, not dim: it is a finding)
        EQUIVALENT: pick("text-primary", "primary", default="blue"),
        # neither a change nor equivalence shown
        INCONCLUSIVE: "dim",
        # a lower toxicity/bias from a broken model
        NOT_EVIDENCE: "bold " + pick("text-warning", "warning", default="yellow"),
        # a lower toxicity/bias from a model with no quality measure
        UNVERIFIED: "dim " + pick("text-warning", "warning", default="yellow"),
        # a significant change of a metric with no good direction
        CHANGED: pick("text-accent", "accent", default="cyan"),
    }


STATUS_STYLE = {"done": "better", "failed": "worse", "cancelled": "muted", "running": "accent",
                "queued": "", "cancelling": "warning"}


def status_text(status: str, colors: Mapping[str, str]) -> Text:
    key = STATUS_STYLE.get(status, "")
    return Text(status, style=colors.get(key, "") if key else "")


def verdict_text(delta: float | None, verdict: str, colors: Mapping[str, str]) -> Text:
    """The delta coloured by verdict, with the verdict's mark that also reads without colour."""
    if delta is None:
        return Text("")
    mark = MARKS.get(verdict, "")
    return Text(signed(delta) + (f" {mark}" if mark else ""),
                style=colors.get(verdict, "") if verdict else "")


# what a delta no paired test judged is marked with (a subset's, or a metric without a paired
# form): a description of the change, not a verdict on it
UNTESTED = "descriptive"


def delta_text(delta: float | None, verdict: str, colors: Mapping[str, str]) -> Text:
    """`verdict_text`; a delta without a verdict is marked `UNTESTED` (muted), so that a delta
    never stands without saying what it means."""
    if delta is None or verdict:
        return verdict_text(delta, verdict, colors)
    return Text.assemble(signed(delta), (f" {UNTESTED}", colors.get("muted", "dim")))


def verdict_legend(colors: Mapping[str, str]) -> Text:
    """`✔ better ✘ worse = equivalent ? inconclusive ...`, each in its colour (short, so that
    a title line with it fits two rows at 80 columns)."""
    text = Text()
    for verdict in LEGEND:
        text.append(f"{MARKS[verdict]} {verdict}", style=colors.get(verdict, ""))
        text.append(" ")
    text.append("(paired)", style=colors.get("muted", "dim"))
    return text


def verdict_detail(verdict: str, *, margin: float | None = None, margin_relative: bool | None = None,
                   margin_absolute: float | None = None, items_needed: int | None = None,
                   n: int | None = None, undecided: bool = False) -> str:
    """A compact line on one verdict: its mark and word, the equivalence margin in force (a
    relative one also in the metric's units) and, for an inconclusive one, how many items would
    decide it (`equivalence.sizing`: equivalence shown at the settings' power if the true change
    is 0), when that is more than it had."""
    if not verdict:
        return ""
    parts = [f"{MARKS.get(verdict, '')} {verdict}".strip()]
    if margin is not None:     # as `engine.margins.Margin.words` writes it
        words = f"+-{margin:.0%}" if margin_relative else f"+-{margin:g}"
        if margin_relative and margin_absolute is not None:
            words += f" (= +-{margin_absolute:.4g})"
        parts.append(f"margin {words}")
    elif verdict in (EQUIVALENT, INCONCLUSIVE):
        parts.append("no equivalence margin")
    if undecided:
        parts.append("undecided by resampling")
    elif verdict == INCONCLUSIVE and items_needed and items_needed > (n or 0):
        # (a sizing at or under the items it had: the observed change, not the count, keeps it
        # undecided; the sentence says so)
        parts.append(f"~{items_needed:,} items would decide" + (f" (now {n:,})" if n else ""))
    return " · ".join(parts)
