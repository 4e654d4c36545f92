"""Layer 5 (evaluation): from a run's stored sample rows to its metric rows (and a short summary).

Always computed from what the store holds, never from in-memory state, so a resumed run and an
uninterrupted one aggregate identically, and anyone can recompute a run's metrics from the DB.

`suite_metrics(suite, rows)` asks the suite for its own aggregation (each built-in suite's is
a module of `engine.evaluation.aggregations`: `toxicity`, `bold`, `crows_pairs`, `perplexity`,
and `continuation_quality` for the generation suites; lm-eval's is in its suite module) and
drops undefined values; `paired_difference(suite, ...)` is the one paired comparison. This
module also holds the helpers those aggregations share. It never imports a suite: callers pass
the suite, or a name looked up in the catalog (`engine.catalog`, layer 3), which returns the
implementation once `engine.evaluation.suites` is imported.

Metric names and subsets (subset "" = overall):

- toxicity: `expected_max_toxicity`, `toxicity_probability`, `mean_toxicity` for subsets "",
  "toxic", "nontoxic" (prompt toxicity >= 0.5 or not; unscored prompts only count overall).
- bold: per group (subset "domain/group") and overall: `sentiment_mean`, `positive_share`,
  `negative_share`, `toxicity_mean`, `toxicity_max`; per domain (subset "domain"): the spread
  across its groups, `<metric>_gap` and `<metric>_std` for sentiment_mean, positive_share,
  negative_share and toxicity_mean; overall (subset ""), `<metric>_gap` is the mean of the
  domains' gaps (`metrics.mean_domain_gap`), BOLD's one-number bias summary.
- crows_pairs: `stereotype_score` (percent, ideal 50) and `stereotype_bias` (|score - 50|),
  overall and per bias type (subset = bias type).
- perplexity: `perplexity` (plus `tokens`, the number of tokens scored, without a CI); its CI
  resamples blocks of b = ceil(context / stride) consecutive windows (`perplexity_metrics`)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import TYPE_CHECKING, Iterable

import numpy as np

from engine.catalog.suite_info import get_suite_info
from engine.evaluation import metrics as m, paired

if TYPE_CHECKING:                     # pragma: no cover - types only
    from engine.evaluation.suites.base import Suite

LOWER, HIGHER, NEITHER = 0, 1, None
UNDEFINED_REASON = "undefined: no valid items (or non-finite values) to compute it from"
EMPTY_REASON = ("every continuation is empty (the model ended each at once): there is no text "
                "to score")
TEXT_METRICS = ("expected_max_toxicity", "toxicity_probability", "mean_toxicity")
QUALITY_TEXT_METRICS = ("continuation_perplexity", "distinct_1", "distinct_2", "distinct_3")


def all_empty(rows: Iterable[dict]) -> bool:
    """Whether every stored continuation among `rows` is empty (or blank): scoring them would
    measure the scorer on no text, not the model. Rows without a completion field (scores given
    directly) are not empty."""
    return all("completion" in r and not (r["completion"] or "").strip() for r in rows)


def absent_row(name: str, subset: str, reason: str) -> dict:
    """A metric row that `drop_undefined` leaves out, listing `reason` in the summary."""
    return {"name": name, "subset": subset, "value": math.nan, "reason": reason}


def scores_of(row: dict) -> dict:
    value = row.get("scores")
    if isinstance(value, str):
        return json.loads(value) if value else {}
    return value or {}


def tables_by_item(rows: Iterable[dict], column: str) -> tuple[list[int], np.ndarray]:
    by_item: dict[int, list[float | None]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: (r["item_index"], r["sample_index"])):
        by_item[row["item_index"]].append(row[column])
    items = sorted(by_item)
    return items, m.table_from_groups([by_item[i] for i in items])


# -- shared by the generation suites' aggregations -------------------------------------------
def by_item(rows: Iterable[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: (r["item_index"], r["sample_index"])):
        out[row["item_index"]].append(row)
    return out


def _suite(suite: "Suite | str") -> "Suite":
    """The suite itself, or the registered suite of that name (its implementation, once
    `engine.evaluation.suites` is imported)."""
    return get_suite_info(suite) if isinstance(suite, str) else suite  # type: ignore[return-value]


def suite_metrics(suite: "Suite | str", rows: list[dict], *, n_boot: int = 1000, confidence: float = 0.95,
                  seed: int = 0) -> tuple[list[dict], dict]:
    """The metric rows (for `Store.finish_run`) and a summary for a run of `suite` (the
    suite's own aggregation)."""
    if not rows:
        raise ValueError(f"a {suite if isinstance(suite, str) else suite.name} run with no stored "
                         "samples has no metrics")
    metrics, summary = _suite(suite).aggregate(rows, n_boot=n_boot, confidence=confidence, seed=seed)
    return drop_undefined(metrics, summary)


def drop_undefined(metrics: list[dict], summary: dict) -> tuple[list[dict], dict]:
    """Leave out metric rows whose value is undefined (NaN/inf: zero valid items, or a statistic
    that does not exist for this data), listing them in the summary under "absent" with the
    reason, so that a metric is never stored as NaN or shown as a confident number."""
    kept, absent = [], []
    for row in metrics:
        value = row.get("value")
        if value is None or not math.isfinite(value):
            absent.append({"name": row["name"], "subset": row["subset"],
                           "reason": row.get("reason") or UNDEFINED_REASON})
            continue
        for bound in ("ci_low", "ci_high"):
            if row.get(bound) is not None and not math.isfinite(row[bound]):
                row = {**row, bound: None}
        kept.append(row)
    return kept, ({**summary, "absent": absent} if absent else summary)


# -- comparing two runs on the same items --------------------------------------------------------
def paired_difference(suite: "Suite | str", metric: str, rows_a: list[dict], rows_b: list[dict], *,
                      subset: str = "", n_boot: int = 1000, confidence: float = 0.95,
                      seed: int = 0) -> paired.PairedDiff:
    """metric(run b) - metric(run a) on the items both runs evaluated, with a paired bootstrap
    CI and p-value (see `metrics.paired_bootstrap_diff`; suites whose metric is not a mean over
    items resample their own way). Typically a = the base model, b = its compressed version,
    both run with the same data, settings and scorer. The one paired comparison of compfair:
    the report, `compfair compare` and the TUI all call it."""
    return _suite(suite).paired(metric, rows_a, rows_b, subset=subset, n_boot=n_boot,
                                confidence=confidence, seed=seed)
