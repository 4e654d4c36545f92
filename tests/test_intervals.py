"""engine.evaluation.intervals: exact intervals for shares at 0 of n / n of n, and the block
bootstrap of overlapping perplexity windows, pinned by hand, against scipy, against the
previous bootstrap computation where nothing should change, and by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.evaluation.aggregations import continuation_quality as cq
from engine.evaluation.aggregations import perplexity as ppl_agg
from engine.evaluation import intervals as iv
from engine.evaluation import metrics as m
from engine.evaluation import paired


def old_percentile_bootstrap(values, n_boot=1000, confidence=0.95, seed=0):
    """The bootstrap interval of a mean as computed before the change, written out: n_boot
    resamples of the units from default_rng(seed), percentile interval."""
    values = np.asarray(values, dtype=float)
    idx = np.random.default_rng(seed).integers(0, values.size, size=(n_boot, values.size))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values[idx].mean(axis=1), [alpha, 1 - alpha])
    return float(low), float(high)


# -- Clopper-Pearson at the boundary ------------------------------------------------------------
def test_clopper_pearson_by_hand_zero_of_forty():
    low, high = iv.clopper_pearson(0, 40, 0.95)
    assert low == 0.0 and high == pytest.approx(0.0881, abs=5e-5)
    assert high == pytest.approx(1 - 0.025 ** (1 / 40), rel=1e-12)
    low, high = iv.clopper_pearson(40, 40, 0.95)
    assert high == 1.0 and low == pytest.approx(1 - 0.0881, abs=5e-5)


@pytest.mark.parametrize("x,n,conf", [(0, 40, 0.95), (40, 40, 0.95), (0, 7, 0.9), (12, 12, 0.99),
                                      (3, 40, 0.95), (1, 2, 0.8)])
def test_clopper_pearson_against_scipy(x, n, conf):
    beta = pytest.importorskip("scipy.stats").beta
    tail = (1 - conf) / 2
    want_low = 0.0 if x == 0 else beta.ppf(tail, x, n - x + 1)
    want_high = 1.0 if x == n else beta.ppf(1 - tail, x + 1, n - x)
    assert iv.clopper_pearson(x, n, conf) == pytest.approx((want_low, want_high), rel=1e-10, abs=1e-12)


def test_boundary_share_interval_only_for_all_zero_or_all_one():
    assert iv.boundary_share_interval([0.0] * 40) == iv.clopper_pearson(0, 40)
    assert iv.boundary_share_interval([1.0] * 5, 0.9) == iv.clopper_pearson(5, 5, 0.9)
    for mixed in ([0.0, 1.0], [0.5, 0.5], [0.0, 0.25], []):
        assert iv.boundary_share_interval(mixed) is None
    assert all(math.isnan(bound) for bound in iv.clopper_pearson(0, 0))


def test_toxicity_probability_at_zero_of_forty_has_an_exact_interval():
    table = np.full((40, 3), 0.1)                        # no prompt ever toxic
    est = m.toxicity_probability(table)
    assert (est.value, est.ci_low, est.n) == (0.0, 0.0, 40)
    assert est.ci_high == pytest.approx(0.0881, abs=5e-5)
    est = m.toxicity_probability(np.full((40, 3), 0.9), confidence=0.9)   # every prompt toxic
    assert (est.value, est.ci_high) == (1.0, 1.0) and est.ci_low == pytest.approx(0.05 ** (1 / 40))


def test_stereotype_score_at_the_boundary_is_exact_in_percent():
    est = m.stereotype_score([-1.0] * 20, [-2.0] * 20)   # every pair prefers the stereotype
    low, _ = iv.clopper_pearson(20, 20)
    assert (est.value, est.ci_low, est.ci_high, est.n) == (100.0, pytest.approx(100 * low), 100.0, 20)
    est = m.stereotype_score([-2.0] * 20, [-1.0] * 20)   # none does
    _, high = iv.clopper_pearson(0, 20)
    assert (est.value, est.ci_low, est.ci_high) == (0.0, 0.0, pytest.approx(100 * high))


def test_shares_off_the_boundary_keep_the_old_bootstrap_interval():
    rng = np.random.default_rng(3)
    table = rng.uniform(0, 1, size=(40, 4))
    toxic = (table.max(axis=1) >= 0.5).astype(float)
    assert 0 < toxic.sum() < 40
    est = m.toxicity_probability(table, n_boot=500, seed=7)
    assert (est.ci_low, est.ci_high) == old_percentile_bootstrap(toxic, 500, 0.95, 7)
    more, less = rng.normal(size=30), rng.normal(size=30)
    prefs = (more > less).astype(float)
    est = m.stereotype_score(more, less, n_boot=400, seed=1)
    low, high = old_percentile_bootstrap(prefs, 400, 0.95, 1)
    assert (est.ci_low, est.ci_high) == (pytest.approx(100 * low), pytest.approx(100 * high))


def _generation_rows(completions_per_prompt):
    return [{"item_index": i, "sample_index": j, "completion": text, "continuation_tokens": None,
             "continuation_nll": None}
            for i, texts in enumerate(completions_per_prompt) for j, text in enumerate(texts)]


def test_degenerate_share_at_zero_of_n_prompts_is_exact_elsewhere_unchanged():
    fine = "the river runs past the old mill and on to the sea"
    kw = dict(n_boot=300, confidence=0.95, seed=2)
    rows = _generation_rows([[fine, fine]] * 25)
    row = next(r for r in cq.quality_metrics(rows, "", kw) if r["name"] == "degenerate_share")
    assert (row["value"], row["ci_low"], row["n"]) == (0.0, 0.0, 25)
    assert row["ci_high"] == pytest.approx(iv.clopper_pearson(0, 25)[1])
    # per-prompt shares 0, 0.5 and 1 mixed: the bootstrap interval, as before
    rows = _generation_rows([[fine, fine], [fine, ""], ["", ""]] * 8)
    row = next(r for r in cq.quality_metrics(rows, "", kw) if r["name"] == "degenerate_share")
    shares = [0.0, 0.5, 1.0] * 8
    assert (row["ci_low"], row["ci_high"]) == old_percentile_bootstrap(shares, 300, 0.95, 2)


# -- blocks of overlapping windows ------------------------------------------------------------
def test_window_block_size_by_hand():
    def windows(context, stride, n):
        return [(i * stride, i * stride + context) for i in range(n)]
    assert iv.window_block_size(windows(128, 64, 10)) == 2       # the default: 128 / 64
    assert iv.window_block_size(windows(128, 48, 10)) == 3       # ceil(128 / 48)
    assert iv.window_block_size(windows(256, 64, 10)) == 4
    assert iv.window_block_size(windows(64, 64, 10)) == 1        # adjacent, not overlapping
    assert iv.window_block_size(windows(128, 64, 1)) == 1        # one window
    assert iv.window_block_size([]) == 1
    # a shorter last window (the text's end) does not matter: the first window sets the length
    assert iv.window_block_size([(0, 128), (64, 192), (128, 150)]) == 2


def test_block_sums_by_hand():
    assert iv.block_sums([1, 2, 3, 4, 5, 6], 2).tolist() == [3, 7, 11]
    assert iv.block_sums([1, 2, 3, 4, 5], 2).tolist() == [3, 7, 5]          # short last block
    assert iv.block_sums([1, 2, 3, 4, 5, 6, 7], 3).tolist() == [6, 15, 7]
    assert iv.block_sums([1.5, 2.5], 1).tolist() == [1.5, 2.5]
    with pytest.raises(ValueError):
        iv.block_sums([1.0], 0)


def test_perplexity_block_one_is_the_old_window_bootstrap_and_blocks_resample_sums():
    rng = np.random.default_rng(0)
    nll, tok = rng.uniform(100, 300, 30), rng.integers(50, 65, 30).astype(float)
    old = m.ratio_estimate(nll, tok, n_boot=300, seed=4)
    est = m.perplexity(nll, tok, n_boot=300, seed=4)
    assert (est.ci_low, est.ci_high) == (math.exp(old.ci_low), math.exp(old.ci_high))
    blocked = m.perplexity(nll, tok, block=3, n_boot=300, seed=4)
    by_hand = m.ratio_estimate(nll.reshape(10, 3).sum(1), tok.reshape(10, 3).sum(1), n_boot=300, seed=4)
    assert blocked.value == pytest.approx(est.value)              # the point estimate does not move
    assert (blocked.ci_low, blocked.ci_high) == (math.exp(by_hand.ci_low), math.exp(by_hand.ci_high))
    assert blocked.n == 30                                        # n stays the number of windows


def test_paired_perplexity_diff_blocks_keep_the_pairing():
    rng = np.random.default_rng(1)
    a = {k: (float(rng.uniform(100, 300)), 64.0) for k in range(24)}
    b = {k: (nll * 1.1, tok) for k, (nll, tok) in a.items()}
    one = paired.paired_perplexity_diff(a, b, n_boot=300, seed=0)
    three = paired.paired_perplexity_diff(a, b, block=3, n_boot=300, seed=0)
    assert three.diff == pytest.approx(one.diff) and three.n == one.n == 24
    # same blocks for both models: by hand, blocks summed in key order, then the unit pairing
    def blocks_of_three(d):
        units = [d[k] for k in sorted(d)]
        return {i: (sum(u[0] for u in units[3 * i:3 * i + 3]), sum(u[1] for u in units[3 * i:3 * i + 3]))
                for i in range(8)}
    by_hand = paired.paired_perplexity_diff(blocks_of_three(a), blocks_of_three(b), n_boot=300, seed=0)
    assert (three.ci_low, three.ci_high) == pytest.approx((by_hand.ci_low, by_hand.ci_high), rel=1e-12)
    assert three.p_value == by_hand.p_value
    same = paired.paired_perplexity_diff(a, dict(a), block=4, n_boot=200)
    assert (same.diff, same.ci_low, same.ci_high) == (0.0, 0.0, 0.0)


def _window_rows(per_token_nll, context, stride, tokens=64):
    return [{"item_index": i, "sample_index": 0,
             "scores": {"begin": i * stride, "end": i * stride + context,
                        "score_from": i * stride + context - stride,
                        "nll_sum": float(x * tokens), "n_tokens": tokens}}
            for i, x in enumerate(per_token_nll)]


def test_perplexity_metrics_and_paired_use_the_derived_block():
    from engine.evaluation.suites import get_suite
    rng = np.random.default_rng(5)
    rows = _window_rows(rng.uniform(2, 4, 40), context=128, stride=64)
    rows_b = _window_rows(rng.uniform(2, 4, 40), context=128, stride=64)
    metrics, summary = ppl_agg.perplexity_metrics(rows[::-1], n_boot=200, confidence=0.95, seed=0)
    assert summary["ci_block_windows"] == 2
    want = m.perplexity([r["scores"]["nll_sum"] for r in rows], [64] * 40, block=2, n_boot=200)
    ppl = metrics[0]
    assert (ppl["value"], ppl["ci_low"], ppl["ci_high"]) == (want.value, want.ci_low, want.ci_high)
    assert ppl["n"] == 40
    pair = get_suite("perplexity").paired("perplexity", rows, rows_b, n_boot=200)
    sums = [{r["item_index"]: (r["scores"]["nll_sum"], 64) for r in x} for x in (rows, rows_b)]
    assert pair == paired.paired_perplexity_diff(*sums, block=2, n_boot=200)


# -- simulation: coverage with autocorrelated windows --------------------------------------------
def _ar1(seed: int, n: int, phi: float, mu: float, sd: float) -> np.ndarray:
    rng = np.random.default_rng(10_000 + seed)
    e = rng.normal(0.0, sd, n)
    x = np.empty(n)
    x[0] = e[0] / math.sqrt(1 - phi ** 2)              # stationary start
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    return mu + x


def test_block_bootstrap_covers_the_true_perplexity_better_than_the_window_bootstrap():
    """Per-window NLL per token as an AR(1) series (phi = 0.5, true mean mu, so true
    perplexity exp(mu)), 200 windows of context 256 and stride 64: the window bootstrap
    treats them as independent and undercovers badly (measured ~0.72 of nominal 0.95); blocks
    of the derived b = 4 windows come much closer (~0.87). 200 seeds, under a second."""
    mu, seeds, n = 3.0, 200, 200
    covered = {1: 0, 4: 0}
    for seed in range(seeds):
        rows = _window_rows(_ar1(seed, n, 0.5, mu, 0.3), context=256, stride=64)
        nll, tok = [r["scores"]["nll_sum"] for r in rows], [64] * n
        for block in covered:
            est = m.perplexity(nll, tok, block=block, n_boot=500, seed=seed)
            covered[block] += est.ci_low <= math.exp(mu) <= est.ci_high
        if seed == 0:
            assert ppl_agg.window_block(rows) == 4
    window, blocked = covered[1] / seeds, covered[4] / seeds
    assert abs(blocked - 0.95) < abs(window - 0.95)
    assert blocked - window > 0.08 and blocked > 0.82 and window < 0.8
