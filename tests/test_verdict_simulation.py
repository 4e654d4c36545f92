"""The verdict rule against a KNOWN truth: synthetic paired per-item values (or sampled
continuations) with a chosen true change, judged by the same code the report and `compare` use
(`Judgement` + `verdict_families.decide_all`), over many simulation seeds.

What must hold (issue 27): a true zero effect with large n is *equivalent* in >= 95% of seeds; a
true effect exactly at the margin is called *equivalent* in at most alpha (+ Monte Carlo error);
a zero effect at small n is *inconclusive* with an items-needed count within 25% of the analytic
value; an effect of twice the margin is *better* or *worse*; the same model run twice with
different seeds is *better* or *worse* in at most alpha of seeds, and its flips stay at the floor."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from engine.evaluation import equivalence as eq
from engine.evaluation.flip_floor import flip_excess
from engine.evaluation.paired import paired_bootstrap_diff
from engine.evaluation.suites import get_suite
from engine.margins import Margin
from engine.settings import StatSettings
from engine.verdict_families import decide_all
from engine.verdicts import (BETTER, CHANGED, EQUIVALENT, INCONCLUSIVE, PRIMARY, UNVERIFIED, WORSE,
                             Judgement)

ALPHA = 0.05
STATS = StatSettings(bootstrap_samples=1000, alpha=ALPHA)
TOXICITY = get_suite("toxicity")
EMT = TOXICITY.metric("expected_max_toxicity")
CROWS = get_suite("crows_pairs").metric("stereotype_score")
MARGIN = 0.02


def mc_bound(rate: float, seeds: int) -> float:
    """The largest share of `seeds` consistent with a true `rate` (3 Monte Carlo sd above)."""
    return rate + 3 * math.sqrt(rate * (1 - rate) / seeds)


def judge(a: np.ndarray, b: np.ndarray, *, seed: int, spec=EMT, margin: float = MARGIN,
          stats: StatSettings = STATS) -> Judgement:
    """One judgement of b against a, decided alone (a family of one), as the report does."""
    def compute(n_boot: int, boot_seed: int):
        return paired_bootstrap_diff(a, b, n_boot=n_boot, seed=boot_seed,
                                     target=spec.target if spec.direction == "target" else None)
    j = Judgement("model", spec, "", float(a.mean()), float(b.mean()), compute(stats.n_boot, seed),
                  margin=Margin(margin), recompute=compute, family=PRIMARY)
    decide_all([j], stats)
    return j


def paired_values(n: int, effect: float, sd: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-item baseline values and the model's, differing by `effect` + N(0, sd) noise."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.1, 0.6, n)
    return a, a + effect + rng.normal(0.0, sd, n)


def test_a_true_zero_effect_with_large_n_is_equivalent():
    verdicts = [judge(*paired_values(2000, 0.0, 0.1, seed), seed=seed).verdict for seed in range(100)]
    assert sum(v == EQUIVALENT for v in verdicts) >= 95


def test_an_effect_exactly_at_the_margin_is_rarely_called_equivalent():
    seeds = 300
    called = 0
    for seed in range(seeds):
        sign = 1 if seed % 2 else -1                 # both edges of the margin
        called += judge(*paired_values(1500, sign * MARGIN, 0.1, seed), seed=seed).verdict == EQUIVALENT
    assert called / seeds <= mc_bound(ALPHA, seeds)


def test_a_zero_effect_at_small_n_is_inconclusive_with_the_analytic_items_needed():
    n, sd = 200, 0.3                                 # 90% CI half-width ~0.035 > the 0.02 margin
    analytic = ((NormalDist().inv_cdf(1 - ALPHA) + NormalDist().inv_cdf(1 - (1 - 0.8) / 2)) * sd / MARGIN) ** 2
    judged = [judge(*paired_values(n, 0.0, sd, seed), seed=seed) for seed in range(60)]
    inconclusive = [j for j in judged if j.verdict == INCONCLUSIVE]
    assert len(inconclusive) >= 0.9 * len(judged)
    assert all(j.verdict != EQUIVALENT for j in judged)
    needed = [j.sizing(STATS).equivalence for j in inconclusive]
    assert sum(abs(k / analytic - 1) <= 0.25 for k in needed) >= 0.95 * len(needed)
    record = inconclusive[0].record(STATS)
    assert record["items_for_equivalence"] == needed[0] and f"{needed[0]:,} items" in record["note"]


def test_an_effect_of_twice_the_margin_is_better_or_worse():
    worse = [judge(*paired_values(1500, 2 * MARGIN, 0.1, s), seed=s).verdict for s in range(50)]
    better = [judge(*paired_values(1500, -2 * MARGIN, 0.1, s), seed=s).verdict for s in range(50)]
    assert all(v == WORSE for v in worse)
    # a fairness "better" needs a quality measure: with none it is unverified, never better
    assert all(v == UNVERIFIED for v in better)


def test_a_target_metric_is_judged_on_the_distance_to_the_target():
    rng = np.random.default_rng(0)
    a = (rng.random(1500) < 0.40).astype(float) * 100      # 40% prefer the stereotype
    b = (rng.random(1500) < 0.60).astype(float) * 100      # 60%: as far from 50, other side
    crossed = judge(a, b, seed=1, spec=CROWS, margin=2.0)
    assert crossed.verdict == CHANGED and crossed.diff.p_value < 0.003      # the smallest p of 1,000
    closer = judge(a, (rng.random(1500) < 0.49).astype(float) * 100, seed=2, spec=CROWS, margin=2.0)
    assert closer.improves and closer.verdict == UNVERIFIED       # closer to 50, no quality figure


# -- the same model twice, sampled -----------------------------------------------------------
def sampled_rows(p_toxic: np.ndarray, k: int, rng: np.random.Generator) -> list[dict]:
    toxic = rng.random((p_toxic.size, k)) < p_toxic[:, None]
    scores = np.where(toxic, 0.5 + 0.5 * rng.random((p_toxic.size, k)), 0.5 * rng.random((p_toxic.size, k)))
    return [{"item_index": i, "sample_index": s, "toxicity": float(v), "prompt_toxicity": 0.1}
            for i, line in enumerate(scores.tolist()) for s, v in enumerate(line)]


@pytest.mark.parametrize("metric", ["expected_max_toxicity", "toxicity_probability"])
def test_the_same_model_with_another_seed_is_not_better_or_worse_and_flips_at_the_floor(metric):
    seeds, decided, beyond_floor = 80, 0, 0
    spec = TOXICITY.metric(metric)
    for seed in range(seeds):
        rng = np.random.default_rng([seed, 7])
        p_toxic = rng.beta(0.4, 3.0, 300)
        rows_a = sampled_rows(p_toxic, 8, np.random.default_rng([seed, 1]))
        rows_b = sampled_rows(p_toxic, 8, np.random.default_rng([seed, 2]))
        a, b = TOXICITY.per_item(metric, rows_a), TOXICITY.per_item(metric, rows_b)
        keys = sorted(a)
        j = judge(np.array([a[k] for k in keys]), np.array([b[k] for k in keys]), seed=seed, spec=spec,
                  margin=spec.margin)
        decided += j.verdict in (BETTER, WORSE, UNVERIFIED)
        if metric == "toxicity_probability":
            beyond_floor += flip_excess(TOXICITY, rows_a, rows_b, n_boot=500, seed=seed).p_value < ALPHA
    assert decided / seeds <= mc_bound(ALPHA, seeds)
    assert beyond_floor / seeds <= mc_bound(ALPHA, seeds)


# -- Monte Carlo error and printed p-values ----------------------------------------------------
def test_a_p_value_on_alpha_gets_more_replicates_and_is_never_printed_against_its_verdict():
    a, b = paired_values(400, 0.0, 0.1, 3)
    # shift b so that the raw p lands near 0.05 with 1,000 replicates
    se = np.std(b - a, ddof=1) / math.sqrt(a.size)
    b = b + 1.96 * se - (b - a).mean()
    j = judge(a, b, seed=0, spec=get_suite("toxicity").metric("mean_toxicity"), margin=0.001)
    assert j.n_boot > STATS.n_boot                        # refined: more replicates were drawn
    assert j.verdict in (WORSE, INCONCLUSIVE)
    printed = float(eq.format_p(j.p_adjusted, ALPHA))
    assert (printed < ALPHA) == (j.p_adjusted < ALPHA) and printed != ALPHA
    assert eq.format_p(0.04996, 0.05) == "0.04996" and eq.format_p(0.0504, 0.05) == "0.0504"
    assert eq.format_p(0.034, 0.05) == "0.034" and eq.format_p(0.0002) == "0.0002"


def test_sizing_functions_against_closed_forms():
    z = NormalDist().inv_cdf
    assert eq.items_for_difference(1.0, 0.1) == math.ceil(((z(0.975) + z(0.8)) / 0.1) ** 2)
    exact = ((z(0.95) + z(0.9)) / 0.1) ** 2
    assert abs(eq.items_for_equivalence(1.0, 0.1) - exact) <= 2
    assert eq.items_for_equivalence(1.0, 0.1, true_diff=0.1) is None
    reps = np.array([-0.03, 0.0, 0.01, 0.02, 0.05])
    assert eq.tost_p(reps, 0.04) == pytest.approx(2 / 6)     # one replicate >= +0.04
    assert eq.equivalence_interval(np.linspace(0, 1, 101), 0.05) == pytest.approx((0.05, 0.95))


def test_unchanged_items_are_equivalent_only_when_there_are_enough_of_them():
    zeros = np.zeros(40)
    few = judge(zeros, zeros.copy(), seed=0, spec=TOXICITY.metric("degenerate_share"), margin=0.02)
    assert few.verdict == INCONCLUSIVE                     # 0 of 40 seen: the rate may still be 5%
    assert few.equivalence_p == pytest.approx(0.98 ** 40)
    many = judge(np.zeros(1508), np.zeros(1508), seed=0, spec=CROWS, margin=2.0)
    assert many.verdict == EQUIVALENT                      # 0 of 1,508 pairs flipped
