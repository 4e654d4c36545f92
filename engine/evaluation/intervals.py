"""Interval helpers for the cases a plain percentile bootstrap over independent units gets wrong.

Pure functions (numbers in, numbers out); `metrics` and `aggregate` call them.

- **Shares at the boundary.** For a share of binary units (toxicity probability, stereotype
  score, degenerate share when each prompt is 0 or 1), 0 of n or n of n makes every bootstrap
  resample identical, so the percentile interval has zero width ([0, 0] for 0 of 40), as if
  the share were known exactly. There `boundary_share_interval` gives the exact
  Clopper-Pearson interval instead (0 of 40 at 95%: [0, 0.0881]). Everywhere else the
  bootstrap interval is kept.
- **Overlapping windows.** Strided sliding windows (perplexity: context 128, stride 64) share
  context with their neighbours, so their NLLs are not independent and resampling single
  windows understates the uncertainty. `window_block_size` derives how many consecutive
  windows overlap, and `block_sums` groups them into non-overlapping blocks, which are then
  resampled as the units (a non-overlapping block bootstrap, Carlstein 1986).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np


def clopper_pearson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson, 1934) two-sided interval for a binomial proportion: `successes`
    of `n` trials at `confidence`. With alpha = 1 - confidence, the bounds are the alpha/2 and
    1 - alpha/2 quantiles of Beta(x, n - x + 1) and Beta(x + 1, n - x), with low = 0 at x = 0
    and high = 1 at x = n. The boundary cases have a closed form,
    x = 0: [0, 1 - (alpha/2)^(1/n)], x = n: [(alpha/2)^(1/n), 1],
    used as is; other x need scipy (`scipy.stats.beta`). (nan, nan) when n = 0."""
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be within 0..{n}, got {successes}")
    tail = (1.0 - confidence) / 2.0
    if successes == 0:
        return 0.0, 1.0 - tail ** (1.0 / n)
    if successes == n:
        return tail ** (1.0 / n), 1.0
    from scipy.stats import beta      # only for interior counts, which compfair does not need
    return (float(beta.ppf(tail, successes, n - successes + 1)),
            float(beta.ppf(1.0 - tail, successes + 1, n - successes)))


def boundary_share_interval(values: Sequence[float] | np.ndarray,
                            confidence: float = 0.95) -> tuple[float, float] | None:
    """The Clopper-Pearson interval of a share of binary units when every unit is 0 (0 of n)
    or every unit is 1 (n of n), the case in which a bootstrap interval has zero width; None
    otherwise (mixed units, values other than 0 and 1, or no units), meaning: keep the
    bootstrap interval."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return None
    if np.all(arr == 0.0):
        return clopper_pearson(0, int(arr.size), confidence)
    if np.all(arr == 1.0):
        return clopper_pearson(int(arr.size), int(arr.size), confidence)
    return None


def exact_at_boundary(estimate, values: Sequence[float] | np.ndarray, confidence: float = 0.95):
    """`estimate` (a `metrics.Estimate` of the mean of binary `values`) with its interval
    replaced by `boundary_share_interval(values, confidence)` when all units are 0 or all are
    1; unchanged (the bootstrap interval) otherwise."""
    exact = boundary_share_interval(values, confidence)
    if exact is None:
        return estimate
    return dataclasses.replace(estimate, ci_low=exact[0], ci_high=exact[1])


def window_block_size(windows: Sequence[tuple[float, float]]) -> int:
    """How many consecutive sliding windows to resample together: b = ceil(length / stride),
    with length = end - begin of the first window and stride = the begin difference of the
    first two windows (`windows` = (begin, end) pairs in window order). Windows i and i + b no
    longer overlap. 1 when there is one window (or none), or when windows do not overlap
    (stride >= length, or a non-positive stride, which is not a strided evaluation)."""
    if len(windows) < 2:
        return 1
    (begin0, end0), (begin1, _) = windows[0], windows[1]
    length, stride = end0 - begin0, begin1 - begin0
    if stride <= 0 or length <= stride:
        return 1
    return int(math.ceil(length / stride))


def block_sums(values: Sequence[float] | np.ndarray, block: int) -> np.ndarray:
    """Sums of consecutive, non-overlapping groups of `block` values, in order: values
    [v0, v1, ..., v(n-1)] -> [v0 + ... + v(b-1), vb + ... + v(2b-1), ...]; a last group of fewer
    than `block` values is kept as a (shorter) block. `block` = 1 returns the values unchanged.
    Applied to NLL sums and token counts alike, so that a block's perplexity contribution is
    its total NLL over its total tokens."""
    arr = np.asarray(values, dtype=float)
    if block < 1:
        raise ValueError(f"block size must be >= 1, got {block}")
    if block == 1 or arr.size == 0:
        return arr
    starts = np.arange(0, arr.size, block)
    return np.add.reduceat(arr, starts)

