#!/usr/bin/env python
"""How well does an offline toxicity scorer agree with Perspective API?

RealToxicityPrompts lines carry Perspective scores for the prompt and for the original
continuation (`prompt.toxicity`, `continuation.toxicity`). This script scores the same texts with
a compfair scorer (default: `profanity`, alt-profanity-check) and reports, per text kind and
overall:

- ROC-AUC of the scorer's probability against the label "Perspective toxicity >= 0.5"
  (rank-based, ties averaged);
- accuracy, precision and recall when the scorer's probability is thresholded at 0.5;
- Spearman correlation between the two scores.

Usage:
    .venv/bin/python scripts/scorer_agreement.py [--data ../shared/data/rtp] [--scorer profanity]
        [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.evaluation.scorers import load_scorer  # noqa: E402

log = logging.getLogger("scorer_agreement")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "rtp"
THRESHOLD = 0.5


@dataclass
class Agreement:
    subset: str
    n: int
    positives: int
    roc_auc: float
    accuracy: float
    precision: float
    recall: float
    spearman: float


def read_scored_texts(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """(texts, Perspective toxicity, kind 'prompt'|'continuation') from RTP JSONL lines."""
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    texts, scores, kinds = [], [], []
    for file in files:
        with open(file, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SystemExit(f"{file}, line {number}: not valid JSON ({exc.msg})")
                for kind in ("prompt", "continuation"):
                    part = record.get(kind) or {}
                    if isinstance(part.get("text"), str) and part["text"].strip() \
                            and isinstance(part.get("toxicity"), (int, float)):
                        texts.append(part["text"])
                        scores.append(float(part["toxicity"]))
                        kinds.append(kind)
    return texts, np.asarray(scores), kinds


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2
    return ranks


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative (Mann-Whitney U)."""
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = average_ranks(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(average_ranks(a), average_ranks(b))[0, 1])


def agreement(subset: str, reference: np.ndarray, predicted: np.ndarray) -> Agreement:
    labels = reference >= THRESHOLD
    guesses = predicted >= THRESHOLD
    true_pos = int((labels & guesses).sum())
    return Agreement(subset=subset, n=len(labels), positives=int(labels.sum()),
                     roc_auc=roc_auc(labels, predicted),
                     accuracy=float((labels == guesses).mean()),
                     precision=true_pos / max(int(guesses.sum()), 1),
                     recall=true_pos / max(int(labels.sum()), 1),
                     spearman=spearman(reference, predicted))


def measure(data: Path, scorer_name: str = "profanity") -> tuple[list[Agreement], dict]:
    texts, reference, kinds = read_scored_texts(data)
    if not texts:
        raise SystemExit(f"no Perspective-scored texts found in {data}")
    scorer, note = load_scorer(scorer_name)
    log.info("scoring %d texts with %s (%s)%s", len(texts), scorer.name, scorer.version,
             f"; {note}" if note else "")
    start = time.perf_counter()
    predicted = scorer.score(texts)              # one batched call
    seconds = time.perf_counter() - start
    kinds_arr = np.asarray(kinds)
    results = [agreement(kind, reference[kinds_arr == kind], predicted[kinds_arr == kind])
               for kind in ("prompt", "continuation")]
    results.append(agreement("all", reference, predicted))
    info = {"data": str(data), "scorer": scorer.name, "scorer_version": scorer.version,
            "texts": len(texts), "scoring_seconds": round(seconds, 3)}
    return results, info


def format_table(results: list[Agreement], info: dict) -> str:
    lines = [f"{info['scorer']} ({info['scorer_version']}) vs Perspective, label = Perspective "
             f"toxicity >= {THRESHOLD}; {info['texts']} texts from {info['data']}, scored in "
             f"{info['scoring_seconds']} s",
             f"{'subset':<13}{'n':>6}{'toxic':>7}{'ROC-AUC':>9}{'acc@0.5':>9}{'prec':>7}{'recall':>8}{'spearman':>10}"]
    for r in results:
        lines.append(f"{r.subset:<13}{r.n:>6}{r.positives:>7}{r.roc_auc:>9.3f}{r.accuracy:>9.3f}"
                     f"{r.precision:>7.3f}{r.recall:>8.3f}{r.spearman:>10.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="RTP JSONL file or folder with Perspective scores (default: %(default)s)")
    parser.add_argument("--scorer", default="profanity", help="a compfair scorer name (default: profanity)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.data.exists():
        log.error("data %s not found (the real RTP lines live in ../shared/data/rtp)", args.data)
        return 2
    results, info = measure(args.data, args.scorer)
    print(format_table(results, info))
    if args.json:
        args.json.write_text(json.dumps({**info, "results": [asdict(r) for r in results]}, indent=2))
        log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
