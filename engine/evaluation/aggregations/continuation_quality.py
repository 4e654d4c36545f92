"""Layer 5 (evaluation): the continuation quality of a generation run (toxicity, BOLD): per
prompt (`prompt_quality`) and as metric rows (`quality_metrics`). Called by the generation
suites' aggregations and paired comparisons (`engine.evaluation.suites.generation`)."""

from __future__ import annotations

import math

from engine.evaluation import intervals, metrics as m, quality as q
from engine.evaluation.aggregate import (EMPTY_REASON, HIGHER, LOWER, QUALITY_TEXT_METRICS, absent_row,
                                         all_empty, by_item)


def prompt_quality(samples: list[dict]) -> dict[str, float | None]:
    """One prompt's quality figures from its k stored samples: NLL sum and token count under
    the reference model (None when not scored), distinct-1/2/3 over its continuations, and its
    share of degenerate continuations."""
    scored = [s for s in samples if s.get("continuation_tokens") is not None]
    tokens = sum(s["continuation_tokens"] for s in scored)
    nll_sum = math.fsum(s["continuation_nll"] * s["continuation_tokens"] for s in scored
                        if s["continuation_tokens"])
    texts = [s.get("completion") or "" for s in samples]
    return {"nll_sum": nll_sum if scored else None, "tokens": tokens if scored else None,
            **{f"distinct_{n}": q.distinct_n(texts, n) for n in (1, 2, 3)},
            "degenerate_share": sum(q.is_degenerate(t) for t in texts) / len(texts)}


def quality_metrics(rows: list[dict], subset: str, kw: dict) -> list[dict]:
    """Continuation quality of a generation run (or one subset of it), each over prompts:

    - `continuation_perplexity`: exp(total NLL / total tokens) of the continuations under the
      reference model (token-weighted; prompts resampled; empty continuations add no tokens);
    - `distinct_1/2/3`: mean over prompts of the prompt's distinct-n (`quality.distinct_n`),
      over prompts that have an n-gram;
    - `degenerate_share`: mean over prompts of the share of degenerate continuations
      (`quality.is_degenerate`: nearly empty or looping); when no prompt or every prompt has
      only degenerate continuations, the exact interval of 0 or n of n prompts
      (`intervals.exact_at_boundary`) instead of the bootstrap's zero-width one.

    Absent (no row) when nothing was scored, never a zero with a zero-width interval; when
    every continuation is empty, the four text figures are absent with `EMPTY_REASON`."""
    per = [prompt_quality(samples) for samples in by_item(rows).values()]
    shares = [p["degenerate_share"] for p in per]
    degenerate = intervals.exact_at_boundary(m.mean_estimate(shares, **kw), shares, kw["confidence"])
    if per and all_empty(rows):
        return [absent_row(name, subset, EMPTY_REASON) for name in QUALITY_TEXT_METRICS] + [
            degenerate.row("degenerate_share", subset, LOWER)]
    out = []
    with_tokens = [p for p in per if p["tokens"]]
    if with_tokens:
        ppl = m.perplexity([p["nll_sum"] for p in with_tokens], [p["tokens"] for p in with_tokens], **kw)
        out.append(ppl.row("continuation_perplexity", subset, LOWER))
    for n in (1, 2, 3):
        values = [p[f"distinct_{n}"] for p in per if p[f"distinct_{n}"] is not None]
        if values:
            out.append(m.mean_estimate(values, **kw).row(f"distinct_{n}", subset, HIGHER))
    if per:
        out.append(degenerate.row("degenerate_share", subset, LOWER))
    return out
