"""Comparing two models on the same units, as pure functions: paired bootstrap differences
(`PairedDiff`, with their replicates for equivalence tests and sizing), per-item flips with
McNemar's exact test, and the multiple-comparison adjustments (Holm, Benjamini-Hochberg).
The bootstrap machinery is `engine.evaluation.metrics`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from engine.evaluation import intervals
from engine.evaluation.metrics import bootstrap


@dataclass(frozen=True)
class PairedDiff:
    """stat(b) - stat(a) on the same units, with its bootstrap interval and two-sided p-value.

    `replicates`: the paired bootstrap replicates of the difference (for equivalence tests and
    sizing, `engine.evaluation.equivalence`). `distance`: for a metric with a target value (e.g.
    CrowS-Pairs' 50), the paired change of the distance to the target, |stat(b) - target| -
    |stat(a) - target|, on the same resamples (the quantity "closer to the target" is tested on)."""

    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    replicates: np.ndarray | None = field(default=None, compare=False, repr=False)
    distance: "PairedDiff | None" = field(default=None, compare=False, repr=False)


# -- comparing two models ----------------------------------------------------------------------
def paired_bootstrap_diff(a: Sequence[float], b: Sequence[float], *, n_boot: int = 1000,
                          confidence: float = 0.95, seed: int = 0,
                          statistic: Callable[[np.ndarray], np.ndarray] | None = None,
                          target: float | None = None) -> PairedDiff:
    """Is b different from a? `a[i]` and `b[i]` are per-unit values of two models on the same
    unit (e.g. per-prompt max toxicity of the base and the compressed model).

    diff = stat(b) - stat(a) (stat = mean over units unless `statistic`, vectorised over
    axis 1, is given). Units are resampled jointly, keeping the pairing. The p-value is the
    two-sided bootstrap p: 2 * min(P*(diff <= 0), P*(diff >= 0)) with the +1 correction,
    capped at 1; a p below 1 - confidence corresponds to a CI excluding 0. With `target`,
    `distance` holds the same test of |stat(b) - target| - |stat(a) - target| on the same
    resamples."""
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired values differ in shape: {a_arr.shape} vs {b_arr.shape}")
    if a_arr.size == 0:
        return PairedDiff(math.nan, math.nan, math.nan, math.nan, 0)
    stat = statistic or (lambda x: x.mean(axis=1))
    diff = float(stat(b_arr[None, :])[0] - stat(a_arr[None, :])[0])
    reps, _ = bootstrap(lambda idx: stat(b_arr[idx]) - stat(a_arr[idx]), a_arr.size,
                        n_boot=n_boot, confidence=confidence, seed=seed)
    distance = None
    if target is not None:
        def far(x: np.ndarray) -> np.ndarray:
            return np.abs(stat(x) - target)
        point = float(far(b_arr[None, :])[0] - far(a_arr[None, :])[0])
        dist_reps, _ = bootstrap(lambda idx: far(b_arr[idx]) - far(a_arr[idx]), a_arr.size,
                                 n_boot=n_boot, confidence=confidence, seed=seed)
        distance = paired_from_replicates(point, dist_reps, int(a_arr.size), confidence)
    found = paired_from_replicates(diff, reps, int(a_arr.size), confidence)
    return dataclasses.replace(found, distance=distance)


def paired_from_replicates(point: float, replicates: np.ndarray, n: int,
                           confidence: float = 0.95) -> PairedDiff:
    """A paired difference from bootstrap replicates of it drawn elsewhere (e.g. a stratified
    or ratio statistic): percentile CI and the same two-sided bootstrap p-value as
    `paired_bootstrap_diff`. Non-finite replicates are dropped."""
    reps = np.asarray(replicates, dtype=float)
    reps = reps[np.isfinite(reps)]
    if not n or reps.size == 0:
        return PairedDiff(math.nan, math.nan, math.nan, math.nan, 0)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(reps, [alpha, 1 - alpha])
    below = (np.count_nonzero(reps <= 0) + 1) / (reps.size + 1)
    above = (np.count_nonzero(reps >= 0) + 1) / (reps.size + 1)
    return PairedDiff(point, float(low), float(high), float(min(1.0, 2 * min(below, above))), n,
                      reps)


# -- per-item flips and multiple comparisons ---------------------------------------------------
@dataclass(frozen=True)
class Flips:
    """How many paired items changed class between model a and model b.

    `up`: items in the class under b but not under a (e.g. prompts whose max toxicity crossed
    0.5 upward); `down`: the reverse; `share` = (up + down) / n. `p_value`: exact McNemar
    test of up vs down (is the change asymmetric?)."""

    n: int
    up: int
    down: int
    p_value: float

    @property
    def changed(self) -> int:
        return self.up + self.down

    @property
    def share(self) -> float:
        return self.changed / self.n if self.n else math.nan


def mcnemar_exact(up: int, down: int) -> float:
    """Exact two-sided McNemar p-value: under no asymmetry the up/down split of the u + d
    discordant pairs is Binomial(u + d, 1/2); p = min(1, 2 * P(X <= min(u, d)))."""
    total = up + down
    if total == 0:
        return 1.0
    low = min(up, down)
    tail = math.fsum(math.comb(total, i) for i in range(low + 1)) / 2.0 ** total
    return min(1.0, 2.0 * tail)


def flip_counts(a: Mapping, b: Mapping) -> Flips:
    """Flips between per-item classes `a` and `b` ({item: bool}) over the items both have."""
    common = sorted(set(a) & set(b))
    up = sum(1 for k in common if b[k] and not a[k])
    down = sum(1 for k in common if a[k] and not b[k])
    return Flips(len(common), up, down, mcnemar_exact(up, down))


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (controls the family-wise error rate): sort the m p-values,
    p_(i) -> max over j <= i of min(1, (m - j + 1) p_(j)), in the original order. NaNs are
    left out of the family and stay NaN."""
    indexed = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    indexed.sort()
    m_total = len(indexed)
    out = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m_total - rank) * p))
        out[i] = running
    return out


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (controls the false discovery rate): p_(i) ->
    min over j >= i of min(1, m p_(j) / j), in the original order; NaNs stay NaN."""
    indexed = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    indexed.sort()
    m_total = len(indexed)
    out = [math.nan] * len(p_values)
    running = 1.0
    for rank in range(m_total - 1, -1, -1):
        p, i = indexed[rank]
        running = min(running, min(1.0, m_total * p / (rank + 1)))
        out[i] = running
    return out


ADJUSTERS: dict[str, Callable[[Sequence[float]], list[float]]] = {
    "holm": holm_adjust, "bh": benjamini_hochberg, "none": lambda p: list(p)}


def paired_perplexity_diff(a: Mapping, b: Mapping, *, block: int = 1, n_boot: int = 1000,
                           confidence: float = 0.95, seed: int = 0) -> PairedDiff:
    """Change in perplexity exp(sum NLL / sum tokens) between two models on the same units:
    `a[k]` and `b[k]` are (NLL sum, token count) of unit k; units both have are resampled
    jointly (a paired ratio bootstrap). With `block` > 1 the units both have, in key order,
    are grouped into non-overlapping blocks of `block` consecutive units (overlapping
    windows, see `perplexity`) and blocks are resampled, the same blocks for both models;
    `block` = 1 (independent units, e.g. prompts) resamples units. n = units."""
    keys = sorted(set(a) & set(b))
    if not keys:
        return paired_from_replicates(math.nan, np.array([]), 0, confidence)
    nll_a, tok_a = (intervals.block_sums([a[k][i] for k in keys], block) for i in (0, 1))
    nll_b, tok_b = (intervals.block_sums([b[k][i] for k in keys], block) for i in (0, 1))

    def ppl(nll, tok, idx):
        return np.exp(nll[idx].sum(-1) / tok[idx].sum(-1))
    every = np.arange(nll_a.size)
    point = float(ppl(nll_b, tok_b, every) - ppl(nll_a, tok_a, every))
    reps, _ = bootstrap(lambda idx: ppl(nll_b, tok_b, idx) - ppl(nll_a, tok_a, idx), nll_a.size,
                        n_boot=n_boot, confidence=confidence, seed=seed)
    return paired_from_replicates(point, reps, len(keys), confidence)
