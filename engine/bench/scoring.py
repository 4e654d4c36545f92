"""Phase 3, scoring alone: the compfair texts scored one call per text and in one batched call,
with the offline profanity scorer and with Detoxify (its cached weights, or a BERT-base-shaped
random checkpoint that costs the same to run)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from engine.bench.measure import phase
from engine.bench.options import BenchSettings, Say
from engine.compression.builtin_corpus import builtin_texts
from engine.errors import ScorerError
from engine.evaluation.scorer_bench import measure_scorer_throughput


def _score_pair(name: str, scorer, texts: list[str], say: Say) -> dict:
    """Texts/s of one scorer called once per text and once on all texts (same scores?)."""
    say(f"scoring: {name}, {len(texts)} texts per-text and batched")
    scorer.score(texts[:2])                                       # warm-up
    started = time.perf_counter()
    one_by_one = [float(scorer.score([t])[0]) for t in texts]
    per_text = time.perf_counter() - started
    started = time.perf_counter()
    batched = scorer.score(texts)
    batched_s = time.perf_counter() - started
    agree = max((abs(a - float(b)) for a, b in zip(one_by_one, batched)), default=0.0)
    return {"texts": len(texts), "per_text_s": round(per_text, 4), "batched_s": round(batched_s, 4),
            "per_text_texts_per_s": len(texts) / per_text, "batched_texts_per_s": len(texts) / batched_s,
            "ratio": per_text / batched_s, "max_abs_difference": agree}


def _detoxify_scorer(scratch: Path, device: str, texts: list[str]):
    """The real Detoxify class: cached `original` weights, else a BERT-base-shaped random
    checkpoint (same architecture and cost; the scores are meaningless)."""
    from engine.evaluation.detoxify_scorer import (DETOXIFY_CLASSES, DetoxifyScorer, detoxify_cached_checkpoint,  # on use: numpy
                                                   save_detoxify_checkpoint)

    if detoxify_cached_checkpoint("original") is not None:
        return DetoxifyScorer("original", device=device), "detoxify:original (cached weights)"
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForSequenceClassification


    folder = scratch / "bert-base-random"
    folder.mkdir(parents=True, exist_ok=True)
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(builtin_texts() + list(texts), vocab_size=30522, show_progress=False)
    wordpiece.save_model(str(folder))
    config = BertConfig(num_labels=len(DETOXIFY_CLASSES))            # bert-base-uncased shape
    config.save_pretrained(folder)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    checkpoint = save_detoxify_checkpoint(model, folder, scratch / "detoxify-bert-base-random.ckpt")
    del model
    return (DetoxifyScorer(str(checkpoint), device=device),
            "detoxify (BERT-base shape, random weights: original weights not cached)")


OFFLINE_TEXTS = 2000


def scoring(texts: list[str], settings: BenchSettings, device, scratch: Path, say: Say) -> dict:
    """The scoring-alone phase: profanity, the offline default (bilstm + profanity), and
    Detoxify unless `settings.detoxify` is off."""
    from engine.evaluation.lexical_scorers import ProfanityScorer  # on use: numpy

    out: dict[str, Any] = {}
    with phase(out, say, "scoring alone"):
        try:
            out["profanity"] = _score_pair("profanity", ProfanityScorer(), texts, say)
        except ScorerError as exc:
            out["profanity"] = {"skipped": str(exc)}
        try:
            # the offline default, on at least 2,000 texts (the generated ones, cycled)
            many = (texts * (-(-OFFLINE_TEXTS // max(len(texts), 1))))[:max(OFFLINE_TEXTS, len(texts))]
            say("scoring alone: offline (bilstm + profanity mean)")
            out["offline"] = measure_scorer_throughput("offline", many, per_text_texts=min(200, len(many)))
        except (ScorerError, ImportError, ValueError) as exc:
            out["offline"] = {"skipped": str(exc).splitlines()[0]}
        if settings.detoxify:
            try:
                scorer, note = _detoxify_scorer(scratch, str(device), texts)
                n = settings.detoxify_texts or (len(texts) if device.type == "cuda" else min(len(texts), 64))
                out["detoxify"] = {"scorer": note, **_score_pair("detoxify", scorer, texts[:n], say)}
                del scorer
            except (ScorerError, ImportError) as exc:
                out["detoxify"] = {"skipped": str(exc).splitlines()[0]}
    return out
