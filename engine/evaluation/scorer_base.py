"""What every toxicity scorer is (the `ToxicityScorer` protocol: `name`, `version`, `key`,
batched `score` and `score_details`) and the helpers the scorers share: package versions,
file digests for weights identity, length-sorted batches, the default batch size."""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
from engine.errors import first_line


class ToxicityScorer(Protocol):
    name: str       # what the run records, e.g. "detoxify:original"
    version: str    # library version and weights identity
    key: str        # the entry of `score_details` that is the toxicity score

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """Toxicity probabilities in [0, 1], one per text."""

    def score_details(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Every class probability per text (may be the toxicity alone)."""


def library_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def length_sorted_chunks(texts: Sequence[str], size: int) -> list[list[int]]:
    """Indices of `texts` in chunks of `size`, longest first: texts of similar length share a
    padded batch (less padding than arrival order). Callers put results back by index."""
    order = sorted(range(len(texts)), key=lambda i: (-len(texts[i]), i))
    return [order[i:i + size] for i in range(0, len(order), size)]


def default_batch_size(device: str) -> int:
    return 256 if str(device).startswith("cuda") else 64


def short_reason(exc: BaseException) -> str:
    return first_line(exc, 200)
