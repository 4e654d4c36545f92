"""`compfair plan`: how many items would decide a comparison, and what running them costs.

For each paired headline metric of a finished run's suite (and any metric given a margin with
`--margin`), the per-item standard deviation sigma of the paired difference is measured, and
`engine.evaluation.equivalence` turns it into the items needed for equivalence within the
margin (TOST, true change 0) and to detect a change of the margin's size, at
`statistics.alpha` (unadjusted: a Holm family of m tests needs alpha / m, i.e. more items) and
the asked power. sigma comes from

- `against`, a compared run of the same suite on the same items: the observed paired
  difference (`aggregate.paired_difference`), as a verdict's "inconclusive" sizing does;
- otherwise, for generation suites, the baseline's own noise: each prompt's k samples split into
  two halves (`flip_floor.split_halves`), half 2 against half 1. That is the variance of two
  independent draws of the same model at k/2 samples each: a conservative stand-in for the
  paired variance of an unchanged model at k. Deterministic (likelihood) suites have no such
  noise and need `against`.

The cost is seconds per item measured on the run(s) (`planning_cost`) x items x models."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

from engine.errors import NotFound, PlanError, SettingsError, UserError
from engine.evaluation.suites import MetricSpec, Suite, get_suite
from engine.margins import Margin, parse_margin
from engine.planning_cost import RunCost, run_cost
from engine.settings import Settings, load_settings
from engine.store import Store

MODELS = 2                      # the baseline and the compressed model both run the items
PAIRED, NOISE_FLOOR = "paired difference", "noise floor"


@dataclass(frozen=True)
class MetricPlan:
    """The sizing of one metric and its cost. `items_*`: None when not reachable (sigma unknown,
    a relative margin without a baseline value, or more than `equivalence.MAX_ITEMS`)."""

    metric: str
    title: str
    unit: str                    # what an item is: prompts, pairs, windows, documents
    n: int
    sigma: float
    sigma_source: str            # PAIRED or NOISE_FLOOR
    margin: float | None         # absolute, in the metric's units
    margin_words: str
    alpha: float
    power: float
    items_for_equivalence: int | None
    items_for_difference: int | None
    samples_per_item: int
    seconds_per_item: float | None     # per model (the mean over the measured runs)
    seconds_source: str
    device: str
    models: int = MODELS

    def seconds(self, items: int | None) -> float | None:
        """Time to run `items` items on every model."""
        if items is None or self.seconds_per_item is None:
            return None
        return items * self.seconds_per_item * self.models

    def record(self) -> dict:
        """The plan as a JSON-ready dict (with the derived times and generations)."""
        out = asdict(self)
        eq_items, diff_items = self.items_for_equivalence, self.items_for_difference
        out.update(seconds_for_equivalence=self.seconds(eq_items),
                   seconds_for_difference=self.seconds(diff_items),
                   generations_per_model=(eq_items * self.samples_per_item
                                          if eq_items is not None and self.samples_per_item > 1 else None))
        return out


def parse_power(value: float | None, settings: Settings) -> float:
    """The power in force: `value`, else settings' `statistics.power`; PlanError outside [0.5, 1)."""
    power = settings.statistics.power if value is None else value
    if not (isinstance(power, (int, float)) and 0.5 <= power < 1):
        raise PlanError(f"--power {value!r} must be in [0.5, 1), e.g. 0.8 or 0.9")
    return float(power)


def parse_margin_options(options: Sequence[str], suite: Suite) -> dict[str, Margin]:
    """`["expected_max_toxicity=0.03", "perplexity=5%"]` -> {metric: Margin}; PlanError naming
    the option for a metric without a paired test in `suite` or a bad value."""
    known = sorted(m.name for m in suite.metrics if m.paired)
    out: dict[str, Margin] = {}
    for option in options:
        name, sep, raw = option.partition("=")
        name, raw = name.strip(), raw.strip()
        if not sep or not name or not raw:
            raise PlanError(f"--margin {option!r} must be METRIC=VALUE, e.g. expected_max_toxicity=0.02 "
                            "or perplexity=5%")
        if name not in known:
            raise PlanError(f"--margin {option!r}: {name!r} is not a paired metric of the {suite.name} "
                            f"suite; known: {', '.join(known)}")
        try:
            out[name] = parse_margin(name, raw if raw.endswith("%") else float(raw), "--margin")
        except (ValueError, SettingsError):
            raise PlanError(f"--margin {option!r}: the value must be a positive number (absolute, in "
                            "the metric's units) or a percentage such as 5% (relative)") from None
    return out


def finished_run(store: Store, run_id: int) -> dict:
    """The run `run_id`, which must exist and be finished."""
    run = store.run(run_id)
    if run is None:
        raise NotFound(f"run {run_id} does not exist (see `compfair runs`)")
    if run["status"] != "done":
        raise PlanError(f"run {run_id} is {run['status']}, not finished: plan needs a finished run")
    return run


def planned_metrics(suite: Suite, settings: Settings, margins: dict[str, Margin]) -> list[tuple[MetricSpec, Margin]]:
    """The metrics to size, with the margin in force: the suite's paired headline metrics and
    those given a margin (all paired ones when the suite has no headline), without margin-less ones."""
    paired = [m for m in suite.metrics if m.paired]
    chosen = [m for m in paired if m.headline or m.name in margins] or paired
    out = []
    for spec in chosen:
        margin = margins.get(spec.name) or settings.margins.for_metric(spec)
        if margin is not None:
            out.append((spec, margin))
    return out


def _samples(store: Store, run: dict, against: dict | None, suite: Suite) -> tuple[list, list, str]:
    """(rows a, rows b, sigma source): the two runs, or the baseline's two halves."""
    rows = store.samples(run["id"])
    if against is not None:
        return rows, store.samples(against["id"]), PAIRED
    if not suite.generates_text:
        raise PlanError(f"run {run['id']} is a {suite.name} run: a deterministic suite's paired variance "
                        "needs a compared run (--against RUN2)")
    first, second = _split(rows)
    if not first:
        raise PlanError(f"run {run['id']} has fewer than 2 samples per prompt: its noise floor needs "
                        "k >= 2, or a compared run (--against RUN2)")
    return first, second, NOISE_FLOOR


def _split(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    from engine.evaluation.flip_floor import split_halves  # on use: numpy
    return split_halves(rows)


def plan(store: Store, run_id: int, *, against: int | None = None, margins: Sequence[str] = (),
         power: float | None = None, settings: Settings | None = None) -> list[MetricPlan]:
    """The `MetricPlan` of each planned metric of run `run_id` (the baseline), sigma from the
    paired difference to run `against`, else from the baseline's half-vs-half noise floor."""
    settings = settings or load_settings(store.home.root)
    power = parse_power(power, settings)
    run = finished_run(store, run_id)
    other = finished_run(store, against) if against is not None else None
    if other is not None and other["suite"] != run["suite"]:
        raise PlanError(f"runs {run_id} ({run['suite']}) and {against} ({other['suite']}) are of "
                        "different suites: --against needs a run of the same suite on the same items")
    suite = get_suite(run["suite"])
    chosen = planned_metrics(suite, settings, parse_margin_options(margins, suite))
    if not chosen:
        raise PlanError(f"run {run_id} ({suite.name}) has no paired metric with a margin to plan; "
                        "give one with --margin METRIC=VALUE")
    rows_a, rows_b, source = _samples(store, run, other, suite)
    cost = run_cost(run, other)
    baseline = {m["name"]: m["value"] for m in store.metrics(run_id) if m["subset"] == ""}
    return [_metric_plan(suite, spec, margin, rows_a, rows_b, source, baseline.get(spec.name),
                         settings, power, cost) for spec, margin in chosen]


def _metric_plan(suite: Suite, spec: MetricSpec, margin: Margin, rows_a: list, rows_b: list,
                 source: str, baseline: float | None, settings: Settings, power: float,
                 cost: RunCost) -> MetricPlan:
    """One metric's sizing from the paired difference of `rows_a` and `rows_b`."""
    from engine.evaluation import equivalence as eq  # on use: numpy
    from engine.evaluation.aggregate import paired_difference  # on use: numpy
    stats = settings.statistics
    try:
        diff = paired_difference(suite, spec.name, rows_a, rows_b, n_boot=stats.bootstrap_samples,
                                 confidence=stats.confidence, seed=stats.seed)
    except ValueError as exc:          # no common items, or no per-item form of the metric
        raise PlanError(f"{spec.name}: {exc}") from None
    absolute = margin.absolute(baseline)
    size = (eq.sizing(diff.replicates, diff.n, absolute, alpha=stats.alpha, power=power)
            if absolute is not None and diff.replicates is not None else None)
    sigma = size.sigma if size is not None else math.nan
    unit = "prompts" if suite.generates_text else suite.unit
    return MetricPlan(spec.name, spec.title, unit, diff.n, sigma, source, absolute, margin.words(),
                      stats.alpha, power, size.equivalence if size else None,
                      size.difference if size else None, cost.samples_per_item,
                      cost.seconds_per_item, cost.source, cost.device)
