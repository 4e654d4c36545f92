"""Layer 5 (evaluation): the CrowS-Pairs suite's aggregation: stereotype score and bias,
overall and per bias type. Called by `engine.evaluation.suites.crows_pairs.CrowsPairsSuite.aggregate`."""

from __future__ import annotations

from typing import Any

from engine.evaluation import metrics as m
from engine.evaluation.aggregate import LOWER, NEITHER, scores_of


def crows_metrics(rows: list[dict], *, n_boot: int, confidence: float,
                  seed: int) -> tuple[list[dict], dict]:
    kw = dict(n_boot=n_boot, confidence=confidence, seed=seed)
    rows = sorted(rows, key=lambda r: r["item_index"])
    scored = [(r["group_name"], scores_of(r)) for r in rows]
    out: list[dict] = []
    summary: dict[str, Any] = {"pairs": len(rows)}
    for subset in [""] + sorted({b for b, _ in scored}):
        chosen = [s for b, s in scored if subset in ("", b)]
        more = [s["ll_more"] for s in chosen]
        less = [s["ll_less"] for s in chosen]
        score = m.stereotype_score(more, less, **kw)
        out += [score.row("stereotype_score", subset, NEITHER),
                m.stereotype_bias(more, less, **kw).row("stereotype_bias", subset, LOWER)]
        if subset == "":
            summary["stereotype_score"] = score.value
    return out, summary
