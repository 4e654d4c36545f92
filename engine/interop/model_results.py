"""Each model's results as the exporters read them: per model, its latest finished run of
every suite, with that run's settings and metrics.

Every compfair metric is a point value with a bootstrap confidence interval at the run's
`confidence` level (0.95 unless the eval spec said otherwise). Tools that expect a standard
error get `stderr_from_ci`: the interval's width over 2 z, where z is the normal quantile of
the two-sided level (1.96 at 95%); for a skewed statistic such as perplexity this is the
normal approximation of an interval that is not symmetric, and is labelled so where written."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Sequence

from engine.store import Store, loads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Metric:
    """One stored metric: `name`, `subset` ("" for all items), `value`, its CI bounds
    (None when the statistic has no interval, e.g. a token count), `n` (units it is over) and
    `higher_is_better` (None when neither)."""

    name: str
    subset: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int | None
    higher_is_better: bool | None


@dataclass(frozen=True)
class RunResult:
    """A finished evaluation run: its id, suite, scorer, data source, item and sample counts,
    its full settings (the eval spec as resolved) and its metrics."""

    run_id: int
    job_id: int
    suite: str
    scorer: str | None
    data_source: str | None
    n_items: int | None
    n_samples: int | None
    finished_at: float | None
    settings: dict[str, Any]
    metrics: tuple[Metric, ...]

    @property
    def confidence(self) -> float:
        value = self.settings.get("confidence")
        return float(value) if isinstance(value, (int, float)) and 0 < value < 1 else 0.95


@dataclass(frozen=True)
class ModelResults:
    """One model (its `models` row, lineage root last) with its latest run of each suite."""

    model: dict[str, Any]
    lineage: tuple[dict[str, Any], ...]
    runs: tuple[RunResult, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return str(self.model.get("name") or self.model.get("source") or f"model-{self.model['id']}")


def stderr_from_ci(low: float | None, high: float | None, confidence: float = 0.95) -> float | None:
    """The standard error a normal interval of this width at `confidence` would have:
    (high - low) / (2 z), z = the (1 + confidence) / 2 normal quantile; None without a CI."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return None
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    return (high - low) / (2 * z)


def _metric(row: dict) -> Metric:
    hib = row.get("higher_is_better")
    return Metric(name=row["name"], subset=row.get("subset") or "", value=row["value"],
                  ci_low=row["ci_low"], ci_high=row["ci_high"], n=row["n"],
                  higher_is_better=None if hib is None else bool(hib))


def _run(store: Store, row: dict) -> RunResult:
    return RunResult(run_id=row["id"], job_id=row["job_id"], suite=row["suite"], scorer=row["scorer"],
                     data_source=row["data_source"], n_items=row["n_items"], n_samples=row["n_samples"],
                     finished_at=row["finished_at"], settings=loads(row["settings"], {}) or {},
                     metrics=tuple(_metric(m) for m in store.metrics(row["id"])))


def model_results(store: Store, run_ids: Sequence[int] | None = None,
                  model_ids: Sequence[int] | None = None) -> list[ModelResults]:
    """Every model with a finished run (of `run_ids` / `model_ids` when given), each with its
    latest finished run per suite; an older run of the same suite is left out, and logged."""
    rows = store.query("SELECT * FROM runs WHERE status = 'done' AND model_id IS NOT NULL "
                       "ORDER BY model_id, suite, finished_at, id")
    if run_ids:
        rows = [r for r in rows if r["id"] in set(run_ids)]
    if model_ids:
        rows = [r for r in rows if r["model_id"] in set(model_ids)]
    latest: dict[int, dict[str, dict]] = {}
    for row in rows:
        previous = latest.setdefault(row["model_id"], {}).get(row["suite"])
        if previous is not None:
            log.info("model %s: run %s of suite %s replaces older run %s", row["model_id"],
                     row["id"], row["suite"], previous["id"])
        latest[row["model_id"]][row["suite"]] = row
    out = []
    for model_id, by_suite in latest.items():
        model = store.model(model_id)
        if model is None:
            continue
        out.append(ModelResults(model=model, lineage=tuple(store.lineage(model_id)),
                                runs=tuple(_run(store, r) for _, r in sorted(by_suite.items()))))
    return out


def one_model(store: Store, model_id: int) -> ModelResults:
    """`model_results` for one model, runs or none."""
    found = model_results(store, model_ids=[model_id])
    if found:
        return found[0]
    model = store.model(model_id)
    return ModelResults(model=model, lineage=tuple(store.lineage(model_id)))
