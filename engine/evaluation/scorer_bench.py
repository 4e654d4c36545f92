"""Throughput of one toxicity scorer: texts per second in one batched call and called once per
text (the scorer named as `load_scorer` takes it, e.g. `offline`, `bilstm`, `profanity`)."""

from __future__ import annotations

import time
from typing import Any


def measure_scorer_throughput(name: str, texts: list[str], *, per_text_texts: int = 200,
                              device: str = "cpu", repeats: int = 3) -> dict[str, Any]:
    """Batched texts/s (best of `repeats` calls on all `texts`, after a warm-up) and per-text
    texts/s (one call per text on the first `per_text_texts`), with the largest difference
    between the two ways' scores. Loading the scorer is timed apart (`load_s`)."""
    from engine.evaluation.scorers import load_scorer  # on use: numpy

    if not texts:
        raise ValueError("measure_scorer_throughput needs at least one text")
    started = time.perf_counter()
    scorer, note = load_scorer(name, device=device)
    load_s = time.perf_counter() - started
    scorer.score(texts[:8])                                         # warm-up
    batched_s = float("inf")
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        batched = scorer.score(texts)
        batched_s = min(batched_s, time.perf_counter() - started)
    few = texts[:max(1, per_text_texts)]
    started = time.perf_counter()
    one_by_one = [float(scorer.score([t])[0]) for t in few]
    per_text_s = time.perf_counter() - started
    difference = max(abs(a - float(b)) for a, b in zip(one_by_one, batched[:len(few)]))
    return {"scorer": scorer.name, "scorer_version": scorer.version, "note": note,
            "texts": len(texts), "load_s": round(load_s, 3),
            "batched_s": round(batched_s, 4), "batched_texts_per_s": len(texts) / batched_s,
            "per_text_texts": len(few), "per_text_s": round(per_text_s, 4),
            "per_text_texts_per_s": len(few) / per_text_s,
            "ratio": (per_text_s / len(few)) / (batched_s / len(texts)),
            "max_abs_difference": difference}
