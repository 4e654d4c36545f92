"""What one item costs to run, measured on finished runs (for `engine.planning`).

A generation run's summary records `generation_seconds` (sampling and scoring the
continuations, for the `generated_now` continuations of its last go) and `quality_seconds`
(their fluency under the reference model): those are preferred, as they leave out loading the
model and waiting in the queue. Any other run is timed by its wall clock, `finished_at -
created_at` over its items (which includes loading, and the downtime of a resumed run)."""

from __future__ import annotations

import json
from dataclasses import dataclass

SUMMARY_SOURCE = "generation_seconds + quality_seconds of the run summary"
WALL_SOURCE = "wall clock of the run (finished_at - created_at)"


@dataclass(frozen=True)
class RunCost:
    """Seconds per item per model (None when the runs say nothing usable), where the figure
    came from, the device(s) it was measured on and the samples per item (k; 1 for suites that
    do not sample)."""

    seconds_per_item: float | None
    source: str
    device: str
    samples_per_item: int


def _json(text) -> dict:
    if isinstance(text, dict):
        return text
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {}


def samples_per_item(run: dict) -> int:
    """k: the run's samples per item (its setting, else stored samples / items; 1 if unknown)."""
    k = _json(run.get("settings")).get("samples_per_prompt")
    if isinstance(k, int) and k > 0:
        return k
    if run.get("n_samples") and run.get("n_items"):
        return max(1, round(run["n_samples"] / run["n_items"]))
    return 1


def _from_summary(run: dict) -> float | None:
    """Seconds per item from the summary's generation and quality timings, or None."""
    summary = _json(run.get("summary"))
    seconds = summary.get("generation_seconds")
    if not isinstance(seconds, (int, float)) or seconds <= 0:
        return None
    seconds += summary.get("quality_seconds") or 0.0
    generated = summary.get("generated_now")
    items = (generated / samples_per_item(run) if isinstance(generated, (int, float))
             else run.get("n_items"))
    return seconds / items if items else None


def _from_wall_clock(run: dict) -> float | None:
    """Seconds per item from the run's created_at and finished_at, or None."""
    start, end, items = run.get("created_at"), run.get("finished_at"), run.get("n_items")
    if start is None or end is None or not items or end < start:
        return None
    return (end - start) / items


def run_cost(run: dict, other: dict | None = None) -> RunCost:
    """The cost of one item on one model, the mean over `run` and `other` (when given): every
    run timed from its summary when all have those timings, else by wall clock."""
    runs = [r for r in (run, other) if r is not None]
    measured = [_from_summary(r) for r in runs]
    source = SUMMARY_SOURCE
    if any(m is None for m in measured):
        measured, source = [_from_wall_clock(r) for r in runs], WALL_SOURCE
    known = [m for m in measured if m is not None]
    devices = sorted({r.get("device") or "cpu" for r in runs})
    return RunCost(sum(known) / len(known) if known else None, source if known else "not measured",
                   " / ".join(devices), samples_per_item(run))
