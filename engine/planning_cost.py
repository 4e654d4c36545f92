"""What one item costs to run, measured on finished runs (for `engine.planning`).

A generation run's summary records `generation_seconds` (sampling and scoring the
continuations, for the `generated_now` continuations of its last go) and `quality_seconds`
(their fluency under the reference model): those are preferred, as they leave out loading the
model and waiting in the queue. Any other run is timed by its wall clock, `finished_at -
created_at` over its items (which includes loading, and the downtime of a resumed run)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from engine.catalog.suite_info import get_suite_info
from engine.errors import SpecError

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


# -- what a submission would cost (the New-job form's estimate line and its confirmation) -------
CONFIRM_JOBS = 20                  # more jobs than this in one submit: ask first
CONFIRM_SECONDS = 3600.0           # an estimated time above an hour: ask first
CONFIRM_GENERATIONS = 1_000_000    # more generations than this (measured or not): ask first
RECENT_RUNS = 50                   # the finished runs of a suite its throughput is measured on


@dataclass(frozen=True)
class Throughput:
    """What the finished runs of one suite (or jobs of one compression kind) measured: seconds
    per generation (per item for a suite that does not sample; per job for a compression kind),
    the items of a run over all its prompts (None when no such run), and how many were timed."""

    seconds_per_unit: float | None
    full_items: int | None
    runs: int


@dataclass(frozen=True)
class JobLoad:
    """One job's work: `suite` (None for a compression job, `kind` says which), the items it
    evaluates (None: all of them, count not known beforehand) and samples per item (k)."""

    kind: str
    suite: str | None
    items: int | None
    samples: int = 1


@dataclass(frozen=True)
class SubmitEstimate:
    """The jobs, generations (items x k over the jobs; None when an item count is unknown) and
    seconds (None when a part is not measured) of a submission, and where the time came from."""

    jobs: int
    generations: int | None
    seconds: float | None
    measured_on: int                # finished runs/jobs the time is measured on
    unmeasured: tuple[str, ...]     # suites or kinds with nothing measured

    def reasons(self) -> list[str]:
        """Why a submission this size asks for confirmation (empty: it does not)."""
        out = []
        if self.jobs > CONFIRM_JOBS:
            out.append(f"{self.jobs:,} jobs (more than {CONFIRM_JOBS})")
        if self.generations is not None and self.generations > CONFIRM_GENERATIONS:
            out.append(f"{self.generations:,} generations (more than {CONFIRM_GENERATIONS:,})")
        if self.seconds is not None and self.seconds > CONFIRM_SECONDS:
            out.append(f"about {duration_text(self.seconds)} (more than {duration_text(CONFIRM_SECONDS)})")
        return out

    @property
    def needs_confirmation(self) -> bool:
        return bool(self.reasons())

    def text(self) -> str:
        """One line: `est. 500 jobs · 6,000 generations · ~2h10m (measured on 4 runs here)`."""
        gens = "all prompts (count unknown)" if self.generations is None else \
            f"{self.generations:,} generation{'s' if self.generations != 1 else ''}"
        if self.seconds is not None and not self.unmeasured:
            when = f"~{duration_text(self.seconds)} (measured on {self.measured_on} finished run" \
                   f"{'s' if self.measured_on != 1 else ''} here)"
        elif self.unmeasured:
            when = f"time unknown: nothing measured yet for {', '.join(self.unmeasured)}"
        else:
            when = "time unknown: item count unknown"
        return f"est. {self.jobs:,} job{'s' if self.jobs != 1 else ''} · {gens} · {when}"


def duration_text(seconds: float) -> str:
    """`45s`, `12m`, `3h20m`, `4d2h`: a rough duration."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


def estimate_submission(loads: list[JobLoad], measured: dict[str, Throughput]) -> SubmitEstimate:
    """The cost of queueing `loads`, from `measured` (keyed by suite, or by kind for
    compression jobs): generations = items x k summed over the eval jobs (an item count left
    unknown is taken from the suite's measured full runs), seconds = generations x seconds per
    generation (+ a compression job's measured seconds). Pure."""
    generations: int | None = 0
    seconds: float | None = 0.0
    unmeasured: list[str] = []
    for load in loads:
        key = load.suite or load.kind
        cost = measured.get(key) or Throughput(None, None, 0)
        if cost.seconds_per_unit is None:
            unmeasured.append(key)
        if load.suite is None:             # a compression job: timed per job
            seconds = None if seconds is None or cost.seconds_per_unit is None \
                else seconds + cost.seconds_per_unit
            continue
        items = load.items if load.items is not None else cost.full_items
        units = None if items is None else items * max(1, load.samples)
        generations = None if generations is None or units is None else generations + units
        seconds = None if seconds is None or units is None or cost.seconds_per_unit is None \
            else seconds + units * cost.seconds_per_unit
    runs = sum(measured[k].runs for k in {l.suite or l.kind for l in loads} if k in measured)
    return SubmitEstimate(len(loads), generations, seconds, runs,
                          tuple(dict.fromkeys(unmeasured)))


def _median(values: list[float]) -> float | None:
    values = sorted(values)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def suite_throughput(runs: list[dict]) -> Throughput:
    """A suite's throughput from its finished runs (newest first): the median seconds per
    generation (`run_cost` / k), and the items of the newest run over all its prompts."""
    per_generation = []
    for run in runs:
        cost = run_cost(run)
        if cost.seconds_per_item is not None:
            per_generation.append(cost.seconds_per_item / cost.samples_per_item)
    full = next((r["n_items"] for r in runs if r.get("n_items")
                 and _json(r.get("settings")).get("max_prompts") is None), None)
    return Throughput(_median(per_generation), full, len(per_generation))


def measured_throughput(store) -> dict[str, Throughput]:
    """Per suite (and per compression kind) what the store's finished runs and jobs measured
    (the last `RECENT_RUNS` of each)."""
    out: dict[str, Throughput] = {}
    rows = store.query("SELECT suite, settings, summary, created_at, finished_at, n_items, "
                       "n_samples, device FROM runs WHERE status = 'done' ORDER BY id DESC")
    by_suite: dict[str, list[dict]] = {}
    for row in rows:
        runs = by_suite.setdefault(row["suite"], [])
        if len(runs) < RECENT_RUNS:
            runs.append(dict(row))
    for suite, runs in by_suite.items():
        out[suite] = suite_throughput(runs)
    jobs = store.query("SELECT kind, started_at, finished_at FROM jobs WHERE status = 'done' AND "
                       "kind != 'eval' AND started_at IS NOT NULL AND finished_at >= started_at "
                       "ORDER BY id DESC LIMIT 500")
    by_kind: dict[str, list[float]] = {}
    for job in jobs:
        by_kind.setdefault(job["kind"], []).append(job["finished_at"] - job["started_at"])
    for kind, times in by_kind.items():
        out[kind] = Throughput(_median(times[:RECENT_RUNS]), None, len(times[:RECENT_RUNS]))
    return out


def job_load(spec) -> JobLoad:
    """What one spec asks of the machine (its items, k, suite), without reading data."""
    suite = getattr(spec, "suite", None) if spec.kind == "eval" else None
    k = getattr(spec, "samples_per_prompt", 1) if suite is not None and _generates(suite) else 1
    return JobLoad(spec.kind, suite, getattr(spec, "max_prompts", None), k)


def _generates(suite: str) -> bool:
    try:
        return get_suite_info(suite).generates_text
    except SpecError:
        return False


def estimate_specs(store, specs) -> SubmitEstimate:
    """`estimate_submission` of `specs` from what the store measured."""
    return estimate_submission([job_load(s) for s in specs], measured_throughput(store))
