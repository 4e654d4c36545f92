"""Equivalence, sizing and the Monte Carlo error of bootstrap p-values: the statistics behind
the five verdict words (`engine.verdicts`), as pure functions of bootstrap replicates.

Conventions: a paired difference d = stat(b) - stat(a) comes with `replicates`, its paired
bootstrap distribution (`metrics.paired_bootstrap_diff`), from which every test here is a
percentile-bootstrap test (inverting the percentile interval):

- difference: the two-sided p of `metrics.paired_bootstrap_diff` (is d != 0?);
- equivalence within +-margin (TOST, Schuirmann 1987): two one-sided tests of
  H0: d <= -margin and H0: d >= +margin; p = the larger of the two one-sided p-values. p < alpha
  exactly when the (1 - 2 alpha) percentile interval lies inside (-margin, +margin).

Sizing uses the normal approximation with sigma = the bootstrap standard error x sqrt(n), the
standard deviation of one unit's contribution to the difference (for a mean over items, the
standard deviation of the per-item differences)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

_Z = NormalDist()
DEFAULT_POWER = 0.8
MAX_ITEMS = 10_000_000          # beyond this a "needed" count says nothing useful


def one_sided_p(replicates: np.ndarray, bound: float, side: str) -> float:
    """Bootstrap p of H0: d <= bound (side "above": the evidence is d > bound) or
    H0: d >= bound (side "below"), with the +1 correction: (#{reps on H0's side} + 1) / (B + 1)."""
    reps = _finite(replicates)
    if reps.size == 0:
        return math.nan
    on_h0 = np.count_nonzero(reps <= bound) if side == "above" else np.count_nonzero(reps >= bound)
    return float((on_h0 + 1) / (reps.size + 1))


def tost_p(replicates: np.ndarray, margin: float) -> float:
    """Equivalence p-value within +-`margin` (TOST on the bootstrap distribution): the larger of
    P*(d <= -margin) and P*(d >= +margin), each +1-corrected. NaN without replicates or with a
    non-positive margin."""
    if not margin > 0:
        return math.nan
    return max(one_sided_p(replicates, -margin, "above"), one_sided_p(replicates, margin, "below"))


def no_spread(replicates: np.ndarray) -> bool:
    """Whether the replicates are all equal (every resample gives the same difference)."""
    reps = _finite(replicates)
    return reps.size > 0 and float(reps.min()) == float(reps.max())


def no_change_p(n: int, margin: float, item_range: float = 1.0) -> float:
    """Equivalence p when none of the n paired items changed (a bootstrap of identical items
    has no spread and would call anything equivalent). An item moves the mean by at most
    item_range / n, so |change| >= margin needs a share s0 = margin / item_range of items to
    differ; the exact p of seeing 0 of n differ under that share is (1 - s0)^n. (0 of 40 with
    a 0.02 margin on a 0..1 scale: p = 0.45, not equivalent.)"""
    if n < 1 or not margin > 0 or not item_range > 0:
        return math.nan
    share = min(1.0, margin / item_range)
    return float((1.0 - share) ** n)


def equivalence_interval(replicates: np.ndarray, alpha: float) -> tuple[float, float]:
    """The (1 - 2 alpha) percentile interval of d: inside +-margin exactly when TOST at level
    alpha declares equivalence (up to the +1 correction)."""
    reps = _finite(replicates)
    if reps.size == 0:
        return math.nan, math.nan
    low, high = np.quantile(reps, [alpha, 1 - alpha])
    return float(low), float(high)


def unit_sd(replicates: np.ndarray, n: int) -> float:
    """sigma, the standard deviation of one unit's contribution to d: the bootstrap standard
    error x sqrt(n)."""
    reps = _finite(replicates)
    if reps.size < 2 or n < 1:
        return math.nan
    return float(np.std(reps, ddof=1) * math.sqrt(n))


def items_for_equivalence(sigma: float, margin: float, *, alpha: float = 0.05,
                          power: float = DEFAULT_POWER, true_diff: float = 0.0) -> int | None:
    """Units needed for TOST at level `alpha` to declare equivalence within +-`margin` with
    probability `power` when the true difference is `true_diff` (normal approximation):
    the smallest n with Phi((m - |d|)/se - z) + Phi((m + |d|)/se - z) - 1 >= power, se = sigma/sqrt(n),
    z = z_{1-alpha}. For d = 0 this is n = ((z_{1-alpha} + z_{1-(1-power)/2}) sigma / m)^2.
    None when it cannot be reached (|d| >= m, sigma unknown) or needs more than MAX_ITEMS."""
    if not (margin > 0 and sigma >= 0 and math.isfinite(sigma)) or abs(true_diff) >= margin:
        return None
    if sigma == 0:
        return 1
    z = _Z.inv_cdf(1 - alpha)
    d = abs(true_diff)

    def achieved(n: float) -> float:
        se = sigma / math.sqrt(n)
        return _Z.cdf((margin - d) / se - z) + _Z.cdf((margin + d) / se - z) - 1
    return _smallest(achieved, power)


def items_for_difference(sigma: float, effect: float, *, alpha: float = 0.05,
                         power: float = DEFAULT_POWER) -> int | None:
    """Units needed for the two-sided test at level `alpha` to detect a true difference of
    `effect` with probability `power`: n = ((z_{1-alpha/2} + z_{power}) sigma / effect)^2,
    rounded up. None when sigma is unknown or the effect is 0."""
    if not (math.isfinite(sigma) and sigma >= 0) or effect == 0:
        return None
    n = ((_Z.inv_cdf(1 - alpha / 2) + _Z.inv_cdf(power)) * sigma / abs(effect)) ** 2
    return None if n > MAX_ITEMS else max(1, math.ceil(n))


def _smallest(achieved, power: float) -> int | None:
    """The smallest integer n >= 1 with achieved(n) >= power (achieved increasing in n)."""
    if achieved(1) >= power:
        return 1
    high = 2
    while achieved(high) < power:
        high *= 2
        if high > MAX_ITEMS:
            return None
    low = high // 2
    while high - low > 1:
        mid = (low + high) // 2
        if achieved(mid) >= power:
            high = mid
        else:
            low = mid
    return high


def p_monte_carlo_error(p_value: float, n_boot: int) -> float:
    """Standard error of a bootstrap p-value from `n_boot` replicates: a p estimated as a share
    q of the replicates (p = q, or 2q for a two-sided p) has sd sqrt(q(1-q)/B) (x2)."""
    if not (math.isfinite(p_value) and n_boot > 0):
        return math.nan
    q = min(p_value, 1.0)
    return math.sqrt(max(q * (1 - q), 1.0 / n_boot) / n_boot)


def near_alpha(p_adjusted: float, p_raw: float, n_boot: int, alpha: float, spread: float = 3.0) -> bool:
    """Whether alpha lies within `spread` Monte Carlo standard errors of the adjusted p (the
    raw p's error scaled by the adjustment's factor): more replicates could change the verdict."""
    if not (math.isfinite(p_adjusted) and math.isfinite(p_raw)) or p_raw <= 0:
        return False
    return abs(p_adjusted - alpha) <= spread * (p_adjusted / p_raw) * p_monte_carlo_error(p_raw, n_boot)


def format_p(value: float | None, alpha: float | None = None) -> str:
    """A p-value in words that never reads as zero and never contradicts its test: three
    decimals (0.034), one significant digit below 0.001 (0.0002), and more digits when rounding
    would put it on the other side of (or on) `alpha` (0.0496, not 0.050)."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if value < 0.001:
        return f"{value:.1g}"
    for digits in range(3, 8):
        text = f"{value:.{digits}f}"
        if alpha is None or ((float(text) < alpha) == (value < alpha) and float(text) != alpha):
            return text
    return f"{value:.8f}"


@dataclass(frozen=True)
class Sizing:
    """How many units would decide a comparison: `equivalence` units for TOST within the margin
    at `power` if the true change is 0; `difference` units to detect a change the size of the
    margin (two-sided, level alpha). `sigma` is the per-unit standard deviation used."""

    sigma: float
    margin: float
    equivalence: int | None
    difference: int | None
    power: float = DEFAULT_POWER

    def record(self) -> dict:
        return {"sigma": self.sigma, "margin": self.margin, "items_for_equivalence": self.equivalence,
                "items_for_difference": self.difference, "power": self.power}


def sizing(replicates: np.ndarray, n: int, margin: float, *, alpha: float = 0.05,
           power: float = DEFAULT_POWER) -> Sizing:
    """The `Sizing` of a comparison from its paired bootstrap replicates over n units."""
    sigma = unit_sd(replicates, n)
    return Sizing(sigma, margin, items_for_equivalence(sigma, margin, alpha=alpha, power=power),
                  items_for_difference(sigma, margin, alpha=alpha, power=power), power)


def _finite(replicates) -> np.ndarray:
    reps = np.asarray(replicates if replicates is not None else [], dtype=float)
    return reps[np.isfinite(reps)]
