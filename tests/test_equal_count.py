"""Equal-count fluent-only toxicity: exact subset expectations, and a simulation with known
truth (same toxicity distribution, different fluent counts)."""

from __future__ import annotations

import itertools
import math
import random
import statistics

import numpy as np
import pytest

from engine.evaluation.equal_count import (EqualCountDiff, any_at_least_at_count,
                                           equal_count_values, expected_max_at_count,
                                           paired_at_equal_count)
from engine.evaluation.paired import paired_bootstrap_diff


def _random_sets(seed: int = 0):
    rng = random.Random(seed)
    for _ in range(40):
        n = rng.randint(1, 8)
        # coarse grid so ties (and values exactly at the 0.5 threshold) occur often
        yield [rng.choice([0.0, 0.1, 0.25, 0.5, 0.5, 0.7, 0.9, 1.0]) for _ in range(n)]


def test_exact_expectations_match_brute_force():
    for values in _random_sets():
        for c in range(1, len(values) + 1):
            subsets = list(itertools.combinations(values, c))
            emax = math.fsum(max(s) for s in subsets) / len(subsets)
            anyp = sum(any(x >= 0.5 for x in s) for s in subsets) / len(subsets)
            assert expected_max_at_count(values, c) == pytest.approx(emax, rel=1e-12, abs=1e-15)
            assert any_at_least_at_count(values, c) == pytest.approx(anyp, rel=1e-12, abs=1e-15)
            anyp3 = sum(any(x >= 0.3 for x in s) for s in subsets) / len(subsets)
            assert any_at_least_at_count(values, c, threshold=0.3) == pytest.approx(anyp3)


def test_endpoints_and_bad_counts():
    rng = random.Random(1)
    for n in (1, 2, 5, 30, 300):
        values = [rng.random() for _ in range(n)]
        assert expected_max_at_count(values, n) == max(values)
        assert expected_max_at_count(values, 1) == pytest.approx(statistics.fmean(values))
        assert any_at_least_at_count(values, n) == float(max(values) >= 0.5)
        assert any_at_least_at_count(values, 1) == pytest.approx(
            sum(v >= 0.5 for v in values) / n)
        assert 0.0 <= expected_max_at_count(values, max(1, n // 2)) <= 1.0   # stable at n=300
    for c in (0, -1, 4):
        with pytest.raises(ValueError):
            expected_max_at_count([0.1, 0.2, 0.3], c)
        with pytest.raises(ValueError):
            any_at_least_at_count([0.1, 0.2, 0.3], c)


def _rows(per_item: dict[int, list[float | None]]) -> list[dict]:
    return [{"item_index": i, "sample_index": s, "toxicity": t}
            for i, vals in per_item.items() for s, t in enumerate(vals)]


def test_equal_count_values_pairs_items_at_min_count():
    a = _rows({0: [0.1, 0.9, 0.3, None], 1: [0.2], 2: [None], 3: [0.6], 5: [0.2, 0.6, 0.7]})
    b = _rows({0: [0.4, None], 1: [0.8, 0.1], 2: [0.5], 4: [0.9], 5: [0.3, 0.4]})
    va, vb = equal_count_values("expected_max_toxicity", a, b)
    assert list(va) == list(vb) == [0, 1, 5]                 # 2 unscored in a, 3/4 one-sided
    assert va[0] == pytest.approx((0.1 + 0.9 + 0.3) / 3) and vb[0] == 0.4     # c = 1
    assert va[1] == 0.2 and vb[1] == pytest.approx(0.45)                       # c = 1
    assert va[5] == pytest.approx(2 / 3) and vb[5] == 0.4                      # c = 2
    pa, pb = equal_count_values("toxicity_probability", a, b)
    assert pa == {0: pytest.approx(1 / 3), 1: 0.0, 5: 1.0} and pb == {0: 0.0, 1: 0.5, 5: 0.0}
    with pytest.raises(ValueError, match="expected_max_toxicity"):
        equal_count_values("mean_toxicity", a, b)
    out = paired_at_equal_count("expected_max_toxicity", a, b, n_boot=50)
    assert isinstance(out, EqualCountDiff) and out.diff.n == 3
    assert out.mean_count == pytest.approx(4 / 3)
    empty = paired_at_equal_count("toxicity_probability", a, [], n_boot=50)
    assert empty.diff.n == 0 and math.isnan(empty.mean_count)


# -- simulation with known truth -------------------------------------------------------------
N_PROMPTS, K = 200, 8


def _simulate(seed: int, shift: float = 0.0) -> tuple[list[dict], list[dict]]:
    """Two models with the same per-prompt toxicity distribution (b's shifted by `shift`);
    a keeps 4-8 'fluent' samples per prompt, b 1-2, dropped at random."""
    rng = np.random.default_rng(seed)
    means = rng.beta(1.0, 4.0, N_PROMPTS)
    conc = 4.0
    rows_a: list[dict] = []
    rows_b: list[dict] = []
    for i, mu in enumerate(means):
        ta = rng.beta(mu * conc + 1e-3, (1 - mu) * conc + 1e-3, K)
        tb = np.clip(rng.beta(mu * conc + 1e-3, (1 - mu) * conc + 1e-3, K) + shift, 0, 1)
        keep_a = rng.choice(K, rng.integers(4, K + 1), replace=False)
        keep_b = rng.choice(K, rng.integers(1, 3), replace=False)
        rows_a += [{"item_index": i, "sample_index": int(s), "toxicity": float(ta[s])}
                   for s in keep_a]
        rows_b += [{"item_index": i, "sample_index": int(s), "toxicity": float(tb[s])}
                   for s in keep_b]
    return rows_a, rows_b


def _naive(rows_a: list[dict], rows_b: list[dict], metric: str, seed: int):
    """The current fluent-only comparison: each model's per-prompt max over what it kept."""
    def per_item(rows):
        out: dict[int, list[float]] = {}
        for r in rows:
            out.setdefault(r["item_index"], []).append(r["toxicity"])
        red = max if metric == "expected_max_toxicity" else (lambda v: float(max(v) >= 0.5))
        return {i: red(v) for i, v in out.items()}
    va, vb = per_item(rows_a), per_item(rows_b)
    items = sorted(set(va) & set(vb))
    return paired_bootstrap_diff([va[i] for i in items], [vb[i] for i in items],
                                 n_boot=500, seed=seed)


@pytest.mark.parametrize("metric", ["expected_max_toxicity", "toxicity_probability"])
def test_equal_count_removes_count_confound(metric):
    seeds = range(100)
    naive_drops = covers = 0
    for seed in seeds:
        rows_a, rows_b = _simulate(seed)
        naive = _naive(rows_a, rows_b, metric, seed)
        naive_drops += naive.ci_high < 0
        fair = paired_at_equal_count(metric, rows_a, rows_b, n_boot=500, seed=seed)
        assert 1.0 <= fair.mean_count <= 2.0
        covers += fair.diff.ci_low <= 0 <= fair.diff.ci_high
    assert naive_drops >= 80, naive_drops          # the confound: a "drop" with no real change
    assert covers >= 90, covers                    # equal counts: no drop, ~95% coverage


@pytest.mark.parametrize("metric", ["expected_max_toxicity", "toxicity_probability"])
def test_equal_count_detects_real_shift(metric):
    detected = 0
    for seed in range(30):
        rows_a, rows_b = _simulate(1000 + seed, shift=0.2)
        fair = paired_at_equal_count(metric, rows_a, rows_b, n_boot=500, seed=seed)
        detected += fair.diff.ci_low > 0
    assert detected >= 25, detected
