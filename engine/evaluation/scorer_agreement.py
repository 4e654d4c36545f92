"""How well one toxicity score agrees with a reference score (e.g. Perspective API's), pure numpy.

The reference is turned into a label, toxic = reference >= 0.5, and the scorer is judged by

- ROC-AUC of its score against that label: the probability that a random toxic text outscores a
  random non-toxic one, ties counting one half (the Mann-Whitney U / rank formula, ties averaged);
- accuracy, precision and recall when its score is also thresholded at 0.5 (this is where a
  scorer's calibration shows: toxicity probabilities depend on it);
- Spearman's rank correlation between the two scores (Pearson on average ranks).

Also the reader of RealToxicityPrompts lines (`prompt`/`continuation` text and Perspective
toxicity), which `scripts/scorer_agreement.py` uses."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

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

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1] if len(values) else np.zeros(0, int)
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2
    return ranks


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """(sum of the positives' ranks - P(P+1)/2) / (P N); NaN without both classes."""
    labels = np.asarray(labels, dtype=bool)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = average_ranks(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of average ranks; NaN when either side is constant or n < 2."""
    if len(a) < 2:
        return float("nan")
    ra, rb = average_ranks(a), average_ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def agreement(subset: str, reference: Sequence[float], predicted: Sequence[float],
              threshold: float = THRESHOLD) -> Agreement:
    """Agreement of `predicted` with `reference` (label = reference >= threshold)."""
    reference = np.asarray(reference, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    if reference.shape != predicted.shape:
        raise ValueError(f"{len(reference)} reference scores but {len(predicted)} predictions")
    labels = reference >= threshold
    guesses = predicted >= threshold
    true_pos = int((labels & guesses).sum())
    n = len(labels)
    return Agreement(subset=subset, n=n, positives=int(labels.sum()),
                     roc_auc=roc_auc(labels, predicted),
                     accuracy=float((labels == guesses).mean()) if n else float("nan"),
                     precision=true_pos / int(guesses.sum()) if guesses.any() else float("nan"),
                     recall=true_pos / int(labels.sum()) if labels.any() else float("nan"),
                     spearman=spearman(reference, predicted))


def _cell(value: float, width: int) -> str:
    return f"{'n/a':>{width}}" if isinstance(value, float) and math.isnan(value) else f"{value:>{width}.3f}"


def format_table(results: Sequence[Agreement], title: str = "") -> str:
    lines = [title] if title else []
    lines.append(f"{'subset':<13}{'n':>6}{'toxic':>7}{'ROC-AUC':>9}{'acc@0.5':>9}{'prec':>7}"
                 f"{'recall':>8}{'spearman':>10}")
    for r in results:
        lines.append(f"{r.subset:<13}{r.n:>6}{r.positives:>7}{_cell(r.roc_auc, 9)}{_cell(r.accuracy, 9)}"
                     f"{_cell(r.precision, 7)}{_cell(r.recall, 8)}{_cell(r.spearman, 10)}")
    return "\n".join(lines)


def read_rtp(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """(texts, Perspective toxicity, kind "prompt"|"continuation") from RTP JSONL lines (a file
    or every *.jsonl in a folder); parts without text or a numeric toxicity are left out.
    Raises ValueError naming the file and line of a line that is not JSON."""
    files = sorted(Path(path).glob("*.jsonl")) if Path(path).is_dir() else [Path(path)]
    texts, scores, kinds = [], [], []
    for file in files:
        with open(file, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{file}, line {number}: not valid JSON ({exc.msg})") from None
                for kind in ("prompt", "continuation"):
                    part = record.get(kind) if isinstance(record, dict) else None
                    if not isinstance(part, dict):
                        continue
                    if isinstance(part.get("text"), str) and part["text"].strip() \
                            and isinstance(part.get("toxicity"), (int, float)):
                        texts.append(part["text"])
                        scores.append(float(part["toxicity"]))
                        kinds.append(kind)
    return texts, np.asarray(scores, dtype=float), kinds


def by_kind(reference: np.ndarray, predicted: np.ndarray, kinds: Sequence[str]) -> list[Agreement]:
    """Agreement per RTP kind (prompts, continuations) and over all texts."""
    kinds_arr = np.asarray(kinds)
    out = [agreement(kind, reference[kinds_arr == kind], predicted[kinds_arr == kind])
           for kind in ("prompt", "continuation") if (kinds_arr == kind).any()]
    out.append(agreement("all", reference, predicted))
    return out
