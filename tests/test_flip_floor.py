"""Per-item flips against their noise floor (engine.evaluation.flip_floor): pinned on hand
examples and a brute-force recomputation, then checked by simulation with a known truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.evaluation.flip_floor import FlipExcess, flip_excess, split_halves
from engine.evaluation.suites import get_suite

TOXICITY = get_suite("toxicity")


def row(item: int, sample: int, toxicity: float | None) -> dict:
    return {"item_index": item, "sample_index": sample, "toxicity": toxicity,
            "prompt_toxicity": 0.1, "completion": "x"}


def keys(rows: list[dict]) -> list[tuple[int, int]]:
    return sorted((r["item_index"], r["sample_index"]) for r in rows)


# -- by hand -------------------------------------------------------------------------------------
def test_split_halves_by_hand():
    rows = ([row(0, s, 0.1) for s in (3, 0, 2, 1, 4)]        # k = 5: sample 4 dropped
            + [row(1, s, 0.1) for s in (5, 0, 2)]            # samples 1, 3, 4 missing: 0 | 2
            + [row(2, 0, 0.1)]                               # one sample: dropped
            + [row(3, s, 0.1) for s in range(4)])            # 0, 1 | 2, 3
    first, second = split_halves(rows)
    assert keys(first) == [(0, 0), (0, 1), (1, 0), (3, 0), (3, 1)]
    assert keys(second) == [(0, 2), (0, 3), (1, 2), (3, 2), (3, 3)]
    assert split_halves([]) == ([], [])


def brute_force(rows_a: list[dict], rows_b: list[dict]) -> tuple[list[float], list[float]]:
    """Per-item (observed, floor) with plain loops, classes = max toxicity >= 0.5."""
    def halves(rows, item, m):
        mine = sorted((r for r in rows if r["item_index"] == item), key=lambda r: r["sample_index"])[:m]
        return mine[:m // 2], mine[m // 2:2 * (m // 2)]

    def toxic(half):
        scores = [r["toxicity"] for r in half if r["toxicity"] is not None]
        return None if not scores else max(scores) >= 0.5

    observed, floor = [], []
    for item in sorted({r["item_index"] for r in rows_a} & {r["item_index"] for r in rows_b}):
        m = min(sum(r["item_index"] == item for r in rows_a), sum(r["item_index"] == item for r in rows_b))
        if m < 2:
            continue
        a = [toxic(h) for h in halves(rows_a, item, m)]
        b = [toxic(h) for h in halves(rows_b, item, m)]
        if None in a or None in b:
            continue
        count = 0
        for x in a:
            for y in b:
                if x != y:
                    count += 1
        observed.append(count / 4)
        floor.append(((1.0 if a[0] != a[1] else 0.0) + (1.0 if b[0] != b[1] else 0.0)) / 2)
    return observed, floor


def test_flip_excess_matches_brute_force():
    rng = np.random.default_rng(7)
    rows_a = [row(i, s, float(rng.uniform(0, 0.9))) for i in range(30) for s in range(6)]
    rows_b = [row(i, s, float(rng.uniform(0, 1.0))) for i in range(30) for s in range(6)]
    rows_a += [row(30, s, 0.9 if s == 4 else 0.1) for s in range(6)]  # k 6 here, 4 in b: cut to
    rows_b += [row(30, s, 0.2) for s in range(4)]                     # 4, sample 4 (toxic) dropped
    rows_a += [row(31, s, None if s < 2 else 0.8) for s in range(4)]  # a half with no scores
    rows_b += [row(31, s, 0.8) for s in range(4)]
    rows_a += [row(32, s, 0.1) for s in range(4)]                     # not in b
    rows_b += [row(33, 0, 0.9)]                                       # one sample, not in a
    per_observed, per_floor = brute_force(rows_a, rows_b)
    n = len(per_observed)
    observed, floor = sum(per_observed) / n, sum(per_floor) / n
    got = flip_excess(TOXICITY, rows_a, rows_b, n_boot=300, seed=3)
    assert isinstance(got, FlipExcess)
    assert (got.n, got.samples_per_half) == (n, 2) == (31, 2)
    assert got.observed_share == pytest.approx(observed)
    assert got.floor_share == pytest.approx(floor)
    assert got.excess == pytest.approx(observed - floor)
    # the interval and p: the items' (observed, floor) pairs resampled with the same draws
    idx = np.random.default_rng(3).integers(0, n, size=(300, n))
    reps = np.array([sum(per_observed[j] - per_floor[j] for j in draw) / n for draw in idx.tolist()])
    assert (got.ci_low, got.ci_high) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])))
    tail = min(np.count_nonzero(reps <= 0), np.count_nonzero(reps >= 0)) + 1
    assert got.p_value == pytest.approx(min(1.0, 2 * tail / 301))
    assert got.ci_low <= got.excess <= got.ci_high and 0 < got.p_value <= 1
    assert got.record() == {"n": n, "observed_share": got.observed_share, "floor_share": got.floor_share,
                            "excess": got.excess, "ci_low": got.ci_low, "ci_high": got.ci_high,
                            "p_value": got.p_value, "samples_per_half": 2}


def test_flip_excess_none_without_classes_or_pairs_of_samples():
    rows = [row(i, s, 0.7) for i in range(5) for s in range(4)]
    assert flip_excess(get_suite("perplexity"), rows, rows) is None            # no item classes
    single = [row(i, 0, 0.7) for i in range(5)]
    assert flip_excess(TOXICITY, single, single) is None                       # k = 1
    assert flip_excess(TOXICITY, rows, [row(9, s, 0.1) for s in range(4)]) is None  # no shared item
    same = flip_excess(TOXICITY, rows, rows, n_boot=100)
    assert same is not None and (same.observed_share, same.floor_share, same.excess) == (0, 0, 0)


# -- simulation with a known truth ---------------------------------------------------------------
PROMPTS, K, SEEDS, ALPHA = 400, 8, 100, 0.05


def draw_rows(p_toxic: np.ndarray, rng: np.random.Generator) -> list[dict]:
    """K samples per prompt: toxic (score in [0.5, 1)) with the prompt's chance, else [0, 0.5)."""
    toxic = rng.random((p_toxic.size, K)) < p_toxic[:, None]
    scores = 0.5 * rng.random((p_toxic.size, K)) + np.where(toxic, 0.5, 0.0)
    return [row(i, s, v) for i, line in enumerate(scores.tolist()) for s, v in enumerate(line)]


def simulate(seed: int, shift: float) -> FlipExcess:
    """Per-prompt chances of a toxic sample from Beta(0.3, 3) (mean ~0.09, varying widely);
    the model's chances are the baseline's plus `shift` (0: the model is the baseline)."""
    rng = np.random.default_rng([seed, 1])
    p_toxic = rng.beta(0.3, 3.0, PROMPTS)
    rows_a = draw_rows(p_toxic, np.random.default_rng([seed, 2]))
    rows_b = draw_rows(np.minimum(1.0, p_toxic + shift), np.random.default_rng([seed, 3]))
    result = flip_excess(TOXICITY, rows_a, rows_b, n_boot=500, seed=seed)
    assert result is not None and result.n == PROMPTS and result.samples_per_half == K // 2
    return result


def test_null_truth_keeps_the_false_positive_rate_while_raw_flips_are_large():
    results = [simulate(seed, shift=0.0) for seed in range(SEEDS)]
    rejected = sum(r.p_value < ALPHA for r in results)
    assert rejected <= SEEDS * (ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / SEEDS))
    assert all((r.ci_low > 0 or r.ci_high < 0) == (r.p_value < ALPHA) for r in results)
    observed = np.mean([r.observed_share for r in results])
    assert observed > 0.15                                   # the same model "flips" many prompts
    assert abs(np.mean([r.excess for r in results])) < 0.01  # and none of it is beyond the floor


def test_a_real_shift_is_detected():
    results = [simulate(seed, shift=0.1) for seed in range(50)]
    assert sum(r.p_value < ALPHA for r in results) >= 0.8 * len(results)
    assert all(r.excess > 0 for r in results)
