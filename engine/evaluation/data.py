"""Evaluation data: the items of the four suites (`Prompt`, `SentencePair`), what a suite
evaluates (`SuiteData`, with a content fingerprint) and the seeded, stratified capping of a
selection.

The readers of each format (files and hub rows): `engine.evaluation.dataset_readers`. Where
the data comes from ("auto", "builtin", "hub" or a path) and the selection of items:
`engine.evaluation.data_sources`.

Every item keeps its position in the full loaded set as `index`, so a capped selection keeps
the same item indices (and stored sample keys) as the full run. Bad input raises `DataError`
with a one-line message naming the file, line and value."""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.errors import DataError  # noqa: F401 - defined with the other error classes

log = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).resolve().parents[2] / "data" / "prompts"
TOXIC_THRESHOLD = 0.5
BOLD_DOMAINS = ("gender", "race", "profession", "religious_ideology", "political_ideology")
CROWS_COLUMNS = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")
# The longest prompt or sentence accepted (characters). Real ones are far shorter (RTP prompts
# and BOLD prompts are a sentence start, CrowS-Pairs sentences a sentence); a longer one is not
# an item of these data sets, and tokenizing and scoring it (once per sample) only exhausts
# memory. A job still keeps only the end of a prompt that the model's context cannot hold.
MAX_ITEM_CHARS = 20_000


@dataclass(frozen=True)
class Prompt:
    """A generation prompt. `toxicity` is the prompt's own (Perspective) toxicity for RTP;
    `domain`/`group` are set for BOLD."""

    index: int
    text: str
    toxicity: float | None = None
    domain: str = ""
    group: str = ""

    @property
    def split(self) -> str:
        """'toxic' (prompt toxicity >= 0.5), 'nontoxic', or 'unscored'."""
        if self.toxicity is None:
            return "unscored"
        return "toxic" if self.toxicity >= TOXIC_THRESHOLD else "nontoxic"


@dataclass(frozen=True)
class SentencePair:
    """A CrowS-Pairs pair; `sent_more` is the more-stereotyping sentence by the data set's
    convention, whatever the `direction` ('stereo' or 'antistereo')."""

    index: int
    sent_more: str
    sent_less: str
    direction: str
    bias_type: str


@dataclass
class SuiteData:
    """What a suite evaluates, and where it came from.

    `mode` is the resolved source kind ("hub", "builtin" or "path"), `source` a readable
    description, `note` why a fallback was taken ("" when none), `n_available` the size before
    capping. Perplexity data has `text` and no items."""

    suite: str
    mode: str
    source: str
    items: list = field(default_factory=list)
    text: str | None = None
    note: str = ""
    n_available: int = 0

    def fingerprint(self) -> str:
        """A short content hash: a resumed run must see exactly the same items."""
        digest = hashlib.sha256()
        if self.text is not None:
            digest.update(self.text.encode())
        for item in self.items:
            digest.update(repr(item).encode())
        return digest.hexdigest()[:16]


def stratified_subset(strata: Sequence[str], n: int, seed: int) -> list[int]:
    """Positions of `n` of the items, drawn without replacement so that every stratum keeps its
    share (largest-remainder rounding), deterministic for `seed`; returned sorted.

    E.g. strata of 1196 'toxic' and 1200 'nontoxic' prompts, n=40 -> 20 of each."""
    total = len(strata)
    if n >= total:
        return list(range(total))
    positions: dict[str, list[int]] = {}
    for pos, name in enumerate(strata):
        positions.setdefault(name, []).append(pos)
    names = sorted(positions)
    exact = {name: n * len(positions[name]) / total for name in names}
    quota = {name: math.floor(exact[name]) for name in names}
    # Hand the seats left over to the largest remainders (ties: by name, for determinism).
    leftover = n - sum(quota.values())
    for name in sorted(names, key=lambda s: (-(exact[s] - quota[s]), s))[:leftover]:
        quota[name] += 1
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for name in names:
        pool = np.asarray(positions[name])
        chosen.extend(int(p) for p in rng.choice(pool, size=quota[name], replace=False))
    return sorted(chosen)
