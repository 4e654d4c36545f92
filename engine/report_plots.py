"""The report's plots: each fairness headline against the share of parameters removed, and
the quality / toxicity trade-off (held-out and continuation perplexity against expected
maximum toxicity)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from engine.report_entries import Headline, headlines
from engine.evaluation.suites import suites

COLOURS = {"teacher": "black", "base": "grey", "distill": "tab:blue", "prune": "tab:orange",
           "quantize": "tab:green"}


def _error_bar(value: float, low: float | None, high: float | None) -> list[list[float]] | None:
    """Matplotlib error-bar lengths; a percentile interval need not contain the point estimate
    (e.g. a maximum), so a side that would be negative is drawn as zero."""
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return None
    return [[max(value - low, 0.0)], [max(high - value, 0.0)]]


def _plain_log_axis(axis) -> None:
    """Log-scale tick labels as plain numbers at 1-2-5 steps, no crowded minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _kind(entry, teacher) -> str:
    return "teacher" if entry is teacher else entry.kind


def _teacher_last(entries, teacher) -> list:
    """The entries in drawing order: the teacher last, so that its marker is on top of a
    model at the same spot (an int8 copy often lands on the teacher's values)."""
    return [e for e in entries if e is not teacher] + [e for e in entries if e is teacher]


def _point(ax, entry, teacher, x: float, y: float, **errors) -> None:
    """One model's point with its error bars and label; the teacher's a larger star drawn over
    the others, its label below the point (another model at the same spot labels above)."""
    is_teacher = entry is teacher
    ax.errorbar([x], [y], fmt="*" if is_teacher else "o", markersize=11 if is_teacher else 6,
                color=COLOURS.get(_kind(entry, teacher), "grey"), capsize=3,
                zorder=4 if is_teacher else 3, **errors)
    ax.annotate(entry.label, (x, y), fontsize=7, xytext=(3, -9) if is_teacher else (3, 3),
                textcoords="offset points", fontweight="bold" if is_teacher else "normal")


def _floor_at_zero(ax, values: list[float]) -> None:
    """A y-axis of values that cannot be negative stops at zero (its margin went below)."""
    if values and min(values) >= 0 and ax.get_ylim()[0] < 0:
        ax.set_ylim(bottom=0)


def _fairness_panels(plt, folder: Path, entries, teacher, compression, value) -> Path | None:
    panels = [h for h in headlines() if h.metric.role == "fairness" and any(e.runs.get(h.suite) for e in entries)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, h in zip(axes[0], panels):
        shown = []
        for entry in _teacher_last(entries, teacher):
            x = compression(entry, teacher)
            v, low, high = value(entry, h)
            if x is None or v is None:
                continue
            _point(ax, entry, teacher, x, v, yerr=_error_bar(v, low, high))
            shown += [v, *(b for b in (low, high) if b is not None)]
        _floor_at_zero(ax, shown)
        if h.target is not None:
            ax.axhline(h.target, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("share of teacher's non-zero parameters removed")
        ax.set_title(h.title, fontsize=9)
    fig.tight_layout()
    path = folder / "fairness_vs_compression.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _tradeoff(plt, folder: Path, entries, teacher, value) -> Path | None:
    generation = [x for x in sorted(suites(), key=lambda x: x.order) if x.generates_text and x.headlines()]
    if not generation:
        return None
    target = generation[0]
    emt = Headline(target.name, target.headlines()[0])
    axes_spec = [(h, f"{h.title} (log; lower is better)") for h in headlines() if h.metric.role == "quality"]
    if target.metric("continuation_perplexity"):
        axes_spec.append((Headline(target.name, target.metric("continuation_perplexity")),
                          "continuation perplexity under the reference model (log)"))
    panels = []
    for quality, label in axes_spec:
        points = [(e, value(e, quality), value(e, emt)) for e in entries]
        points = [(e, p, t) for e, p, t in points if p[0] is not None and t[0] is not None]
        if points:
            panels.append((label, points))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (label, points) in zip(axes[0], panels):
        for entry, (p, plo, phi), (t, tlo, thi) in sorted(points, key=lambda pt: pt[0] is teacher):
            _point(ax, entry, teacher, p, t, xerr=_error_bar(p, plo, phi), yerr=_error_bar(t, tlo, thi))
        _floor_at_zero(ax, [v for _, _, (t, lo, hi) in points for v in (t, lo, hi) if v is not None])
        ax.set_xscale("log")      # perplexities: a log axis, never below zero
        _plain_log_axis(ax.xaxis)
        ax.set_xlabel(label)
        ax.set_ylabel(emt.title)
        ax.set_title("quality / toxicity trade-off", fontsize=9)
    fig.tight_layout()
    path = folder / "tradeoff.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def make_plots(folder: Path, entries, teacher, compression: Callable, value: Callable) -> list[Path]:
    """Write the report's PNG plots into `folder`; returns their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    made = [_fairness_panels(plt, folder, entries, teacher, compression, value),
            _tradeoff(plt, folder, entries, teacher, value)]
    return [p for p in made if p is not None]
