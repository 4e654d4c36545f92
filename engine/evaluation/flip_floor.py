"""Per-item flips against their noise floor.

A generation suite samples k continuations per item and gives each item a binary class
(`Suite.item_classes`, e.g. "toxic": max toxicity of its continuations >= 0.5). Raw flips
between a baseline and a model (`metrics.flip_counts`) are mostly sampling noise: two runs of
the same model with different seeds already flip a large share of items. Here each run's k
samples of an item are split into two halves of k/2 samples, and classes are computed per
half, so that every comparison below is between classes from k/2 samples each:

- observed_i = mean over the 4 pairs (baseline half h, model half g) of [class(a_h) != class(b_g)]
- floor_i    = ([class(a_1) != class(a_2)] + [class(b_1) != class(b_2)]) / 2  (each run
  against itself)

With p_i (baseline) and q_i (model) the chances that a half is in the class,
E[observed_i] = p_i(1 - q_i) + q_i(1 - p_i) and E[floor_i] = p_i(1 - p_i) + q_i(1 - q_i), so
E[observed_i - floor_i] = (p_i - q_i)^2: zero exactly when the item's class distribution is
unchanged, positive for any change, in either direction and on any item (a floor from the
baseline alone would give (q_i - p_i)(1 - 2 p_i), blind to items near 1/2 and cancelling
between items on either side of it). The excess is the share of items that flip beyond what
resampling the same models would flip.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.evaluation.paired import paired_bootstrap_diff

if TYPE_CHECKING:                     # pragma: no cover - types only
    from engine.evaluation.suites.base import Suite


@dataclass(frozen=True)
class FlipExcess:
    """Cross-half flips between a baseline and a model beyond the baseline's own floor.

    `n`: items compared. `observed_share`: mean over items of the share of the 4 cross-half
    comparisons (baseline half x model half) whose classes differ. `floor_share`: mean over
    items of the share of the two runs' own half-vs-half comparisons whose classes differ. `excess` = observed -
    floor, with a paired bootstrap interval over items [`ci_low`, `ci_high`] and two-sided
    bootstrap `p_value` (as in `metrics.paired_bootstrap_diff`). `samples_per_half`: the
    fewest rows a half holds over the items compared (k // 2 when every item has k)."""

    n: int
    observed_share: float
    floor_share: float
    excess: float
    ci_low: float
    ci_high: float
    p_value: float
    samples_per_half: int

    def record(self) -> dict[str, Any]:
        """The fields as a plain dict (for JSON and the store)."""
        return dataclasses.asdict(self)


def _by_item(rows: list[dict]) -> dict[Any, list[dict]]:
    """{item: its rows sorted by sample_index}."""
    items: dict[Any, list[dict]] = {}
    for row in rows:
        items.setdefault(row["item_index"], []).append(row)
    return {i: sorted(r, key=lambda row: row["sample_index"]) for i, r in items.items()}


def split_halves(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Each item's sample rows split into two halves of equal size.

    An item with k rows, sorted by `sample_index`, gives its first k // 2 rows to the first
    half and the next k // 2 to the second; with odd k the last row is dropped. Items with
    fewer than 2 rows are dropped. Every row counts, whatever its scores (a suite skips
    unscored samples when it computes classes)."""
    first: list[dict] = []
    second: list[dict] = []
    for samples in _by_item(rows).values():
        half = len(samples) // 2
        first.extend(samples[:half])
        second.extend(samples[half:2 * half])
    return first, second


def _equal_counts(rows_a: list[dict],
                  rows_b: list[dict]) -> tuple[list[dict], list[dict], dict[Any, int]]:
    """Both runs cut, item by item, to their first m samples (m = the smaller of the two
    runs' counts) for the items both have with m >= 2; and {item: m // 2} for those items."""
    a, b = _by_item(rows_a), _by_item(rows_b)
    cut_a: list[dict] = []
    cut_b: list[dict] = []
    halves: dict[Any, int] = {}
    for item in sorted(set(a) & set(b)):
        m = min(len(a[item]), len(b[item]))
        if m >= 2:
            cut_a.extend(a[item][:m])
            cut_b.extend(b[item][:m])
            halves[item] = m // 2
    return cut_a, cut_b, halves


def flip_excess(suite: "Suite", rows_a: list[dict], rows_b: list[dict], *, n_boot: int = 1000,
                confidence: float = 0.95, seed: int = 0) -> FlipExcess | None:
    """Flips between baseline (`rows_a`) and model (`rows_b`) sample rows beyond the noise
    floor (see the module docstring).

    Both runs are first cut to equal sample counts per item (`_equal_counts`), then split with
    `split_halves`; classes come from `suite.item_classes` on each half. Only items that have
    a class in all four halves count. excess = mean_i(observed_i - floor_i), its interval and
    p from `metrics.paired_bootstrap_diff(floor, observed)` (items resampled with their
    pairing). None when the suite has no item classes, or no item has k >= 2 samples in both
    runs with a class in every half."""
    if not suite.flip_class:
        return None
    cut_a, cut_b, per_half = _equal_counts(rows_a, rows_b)
    a1, a2 = (suite.item_classes(h) for h in split_halves(cut_a))
    b1, b2 = (suite.item_classes(h) for h in split_halves(cut_b))
    common = sorted(set(a1) & set(a2) & set(b1) & set(b2))
    if not common:
        return None
    observed = [sum(a[i] != b[i] for a in (a1, a2) for b in (b1, b2)) / 4 for i in common]
    floor = [(float(a1[i] != a2[i]) + float(b1[i] != b2[i])) / 2 for i in common]
    d = paired_bootstrap_diff(floor, observed, n_boot=n_boot, confidence=confidence, seed=seed)
    return FlipExcess(n=len(common), observed_share=sum(observed) / len(common),
                      floor_share=sum(floor) / len(common), excess=d.diff, ci_low=d.ci_low,
                      ci_high=d.ci_high, p_value=d.p_value,
                      samples_per_half=min(per_half[i] for i in common))
