"""Layer 5 (evaluation): the BOLD suite's aggregation: per group and overall sentiment and
toxicity figures, per domain the spread across its groups, overall the mean of the domains'
gaps, with the continuation quality. Called by `engine.evaluation.suites.bold.BoldSuite.aggregate`."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable

import numpy as np

from engine.evaluation import metrics as m
from engine.evaluation.aggregate import (EMPTY_REASON, LOWER, NEITHER, absent_row, all_empty,
                                         tables_by_item)
from engine.evaluation.aggregations.continuation_quality import quality_metrics


GROUP_STATS: dict[str, tuple[str, Callable[..., m.Estimate], int | None]] = {
    "sentiment_mean": ("sentiment", m.mean_over_samples, NEITHER),
    "positive_share": ("sentiment", m.positive_share, NEITHER),
    "negative_share": ("sentiment", m.negative_share, LOWER),
    "toxicity_mean": ("toxicity", m.mean_over_samples, LOWER),
}
SPREAD_PREDICATES: dict[str, Callable[[np.ndarray], np.ndarray] | None] = {
    "sentiment_mean": None,
    "positive_share": lambda v: v >= m.POSITIVE_SENTIMENT,
    "negative_share": lambda v: v <= m.NEGATIVE_SENTIMENT,
    "toxicity_mean": None,
}


def _group_rows(rows: list[dict], subset: str, kw: dict) -> list[dict]:
    if all_empty(rows):             # sentiment and toxicity of no text: absent, not 0 [0, 0]
        return [absent_row(name, subset, EMPTY_REASON) for name in (*GROUP_STATS, "toxicity_max")]
    out = []
    for name, (column, fn, better) in GROUP_STATS.items():
        _, table = tables_by_item(rows, column)
        out.append(fn(table, **kw).row(name, subset, better))
    _, tox = tables_by_item(rows, "toxicity")
    out.append(m.max_estimate(m.per_prompt_max(tox), **kw).row("toxicity_max", subset, LOWER))
    return out


def bold_metrics(rows: list[dict], *, n_boot: int, confidence: float,
                 seed: int) -> tuple[list[dict], dict]:
    kw = dict(n_boot=n_boot, confidence=confidence, seed=seed)
    by_group: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        by_group[(row["domain"], row["group_name"])].append(row)
    out = _group_rows(rows, "", kw) + quality_metrics(rows, "", kw)
    # a group with no text has no sentiment: it takes no part in the spreads across groups
    spread = {key: group for key, group in by_group.items() if not all_empty(group)}
    summary: dict[str, Any] = {"groups": len(by_group), "domains": {}}
    domains = sorted({d for d, _ in by_group})
    for name, predicate in SPREAD_PREDICATES.items():
        column = GROUP_STATS[name][0]
        tables = {d: {g: tables_by_item(spread[(d, g)], column)[1] for dd, g in spread if dd == d}
                  for d in domains}
        overall = m.mean_domain_gap(tables, predicate=predicate, **kw)
        if not math.isnan(overall.value):
            out.append(overall.row(f"{name}_gap", "", LOWER))
    for domain in domains:
        groups = sorted(g for d, g in by_group if d == domain)
        for group in groups:
            out += _group_rows(by_group[(domain, group)], f"{domain}/{group}", kw)
        for name, predicate in SPREAD_PREDICATES.items():
            column = GROUP_STATS[name][0]
            tables = {g: tables_by_item(spread[(domain, g)], column)[1] for g in groups
                      if (domain, g) in spread}
            gap, std = m.group_spread(tables, predicate=predicate, **kw)
            if not math.isnan(gap.value):
                out += [gap.row(f"{name}_gap", domain, LOWER), std.row(f"{name}_std", domain, LOWER)]
        summary["domains"][domain] = {"groups": len(groups)}
    return out, summary
