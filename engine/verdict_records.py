"""A judgement as a flat record: what `--json`, significance.csv and the TUI read."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from engine.evaluation import equivalence as eq
from engine.settings import StatSettings

if TYPE_CHECKING:                        # pragma: no cover - types only (verdicts imports this module)
    from engine.verdicts import Judgement


def judgement_record(j: "Judgement", stats: StatSettings) -> dict:
    """Every figure behind a verdict: the change (delta, CI, relative change), the tested
    difference's p (raw, adjusted, its Monte Carlo error), the equivalence test (margin, its
    (1 - 2 alpha) interval and p), the sizing, the family, the quality gate and the flips."""
    d, tested = j.diff, j.tested
    eq_low, eq_high = (eq.equivalence_interval(d.replicates, stats.alpha)
                       if d.replicates is not None else (None, None))
    size = j.sizing(stats)
    quality = j.quality
    out = {"model": j.label, "metric": j.metric.name, "subset": j.subset, "role": j.metric.role,
           "family": j.family, "baseline": j.base, "value": j.new, "delta": d.diff,
           "relative_change": relative_change(j.base, j.new),
           "ci_low": d.ci_low, "ci_high": d.ci_high,
           "distance_delta": tested.diff if tested is not d else None,
           "p_value": tested.p_value,
           "p_adjusted": None if math.isnan(j.p_adjusted) else j.p_adjusted,
           "p_mc_error": eq.p_monte_carlo_error(tested.p_value, j.n_boot or stats.n_boot),
           "bootstrap_samples": j.n_boot or stats.n_boot,
           "margin": j.margin.value if j.margin else None,
           "margin_relative": j.margin.relative if j.margin else None,
           "margin_absolute": j.margin_absolute,
           "equivalence_ci_low": eq_low, "equivalence_ci_high": eq_high,
           "equivalence_p": j.equivalence_p,
           "equivalence_p_adjusted": j.equivalence_p_adjusted,
           "items_for_equivalence": size.equivalence if size else None,
           "items_for_difference": size.difference if size else None,
           "n": d.n, "verdict": j.verdict, "note": j.note, "undecided_by_resampling": j.undecided,
           "quality_degraded": None if quality is None or not quality.measured else quality.degraded,
           "quality_measures": quality.measures() if quality else None,
           "flips_up": j.flips.up if j.flips else None,
           "flips_down": j.flips.down if j.flips else None,
           "flips_n": j.flips.n if j.flips else None,
           "flips_p_value": j.flips.p_value if j.flips else None,
           "sentence": j.sentence(stats), **j.extra}
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


def relative_change(base: float | None, new: float | None) -> float | None:
    """(new - base) / |base|: the change as a share of the baseline (None without one)."""
    if base is None or new is None or base == 0 or not math.isfinite(base):
        return None
    return (new - base) / abs(base)
