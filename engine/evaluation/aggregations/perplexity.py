"""Layer 5 (evaluation): the perplexity suite's aggregation: held-out perplexity with a block
bootstrap over overlapping windows (`window_block`), and the KL divergence from and top-1
agreement with the baseline. Called by `engine.evaluation.suites.perplexity.PerplexitySuite`."""

from __future__ import annotations

from typing import Any

from engine.evaluation import intervals, metrics as m
from engine.evaluation.aggregate import HIGHER, LOWER, absent_row, scores_of


def window_block(rows: list[dict]) -> int:
    """The block size b for the bootstrap of a perplexity run's windows (stored rows, any
    order): `intervals.window_block_size` of their (begin, end) in window order."""
    rows = sorted(rows, key=lambda r: r["item_index"])
    return intervals.window_block_size([(scores_of(r)["begin"], scores_of(r)["end"]) for r in rows])


def perplexity_metrics(rows: list[dict], *, n_boot: int, confidence: float,
                       seed: int) -> tuple[list[dict], dict]:
    """Held-out perplexity over a run's windows. Neighbouring windows overlap (context
    length > stride), so the CI resamples non-overlapping blocks of b = ceil(context / stride)
    consecutive windows (`window_block`; b = 1 when windows do not overlap), not single
    windows; b is recorded in the summary as `ci_block_windows`.

    When the windows were also compared with the model's baseline (rows with `kl_sum` and
    `top1_agree`): `kl_divergence` = total KL / tokens (mean KL(P_baseline || P_model) per
    scored token, nats) and `top1_agreement` = total agreeing tokens / tokens, with the same
    block bootstrap (a ratio of block sums). If only some windows carry them (a resumed run
    whose baseline changed or was skipped), both are absent with the reason."""
    rows = sorted(rows, key=lambda r: r["item_index"])
    scores = [scores_of(r) for r in rows]
    nll = [s["nll_sum"] for s in scores]
    tokens = [s["n_tokens"] for s in scores]
    block = window_block(rows)
    kw = dict(n_boot=n_boot, confidence=confidence, seed=seed)
    ppl = m.perplexity(nll, tokens, block=block, **kw)
    total = int(sum(tokens))
    out = [ppl.row("perplexity", "", LOWER),
           {"name": "tokens", "subset": "", "value": float(total), "ci_low": None, "ci_high": None,
            "n": len(rows), "higher_is_better": None}]
    summary: dict[str, Any] = {"perplexity": ppl.value, "windows": len(rows), "tokens": total,
                               "ci_block_windows": block}
    compared = sum("kl_sum" in s for s in scores)
    if compared == len(rows) and rows:
        token_blocks = intervals.block_sums(tokens, block)
        for name, key, better in (("kl_divergence", "kl_sum", LOWER), ("top1_agreement", "top1_agree", HIGHER)):
            est = m.ratio_estimate(intervals.block_sums([s[key] for s in scores], block), token_blocks, **kw)
            est = m.Estimate(est.value, est.ci_low, est.ci_high, len(rows))     # n = windows
            out.append(est.row(name, "", better))
            summary[name] = est.value
    elif compared:
        reason = (f"only {compared} of {len(rows)} windows were compared with the baseline (a resumed "
                  "run whose baseline changed or was skipped)")
        out += [absent_row(name, "", reason) for name in ("kl_divergence", "top1_agreement")]
    return out, summary
