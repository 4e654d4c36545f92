"""Toxicity scorers (pluggable, each with a `name` and `version` recorded with every run) and
VADER sentiment.

Scorer names (`EvalSpec.scorer`):

- `detoxify` / `detoxify:original|unbiased|multilingual|original-small|unbiased-small`, or
  `detoxify:/path/to/checkpoint.ckpt` (a Detoxify training checkpoint, loaded offline with
  `torch.load(weights_only=True)`: tensors and plain values only, so a checkpoint whose pickle
  would run code is refused, at submit and in the job, and its payload never runs).
- `profanity`: alt-profanity-check's calibrated linear SVM (ships its model; offline).
- `hf:<hub id or folder>`: a Hugging Face sequence-classification model; the score is the
  probability of `label` (`EvalSpec.scorer_label`; default: a label containing "toxic").
- `bilstm`: the Jigsaw-trained BiLSTM of the `toxic-comment-classifier` wheel (its Keras weights
  run in torch; `engine/evaluation/bilstm_scorer.py`), `toxic` output. Offline.
- `offline`: the plain mean of `bilstm`'s `toxic` and `profanity`'s probability: parameter-free
  (nothing fitted or tuned), and the two make different errors, so the mean ranks texts better
  than either (ROC-AUC against Perspective on the RTP texts: see the README).
- `auto`: detoxify (original) when its checkpoint is in the torch hub cache, else `offline`,
  else (the BiLSTM wheel or h5py missing) `profanity`.

Every scorer maps a list of texts to an array of toxicity probabilities in [0, 1] and is always
called batched. `ScorerError` carries a one-line reason (unknown name, weights not loadable).

This module chooses a scorer by name (`load_scorer`), checks a name before a job is queued
(`check_scorer_name`), builds the `offline` mean and reports what is installed
(`offline_scorers`). The scorers themselves: `detoxify_scorer`, `hf_classifier_scorer`,
`lexical_scorers` (profanity, VADER) and `bilstm_scorer`; `scorer_base` has their protocol."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from engine.errors import ScorerError, SpecError
from engine.evaluation.detoxify_scorer import (DETOXIFY_VARIANTS, DetoxifyScorer, detoxify_cached_checkpoint,
                                               load_detoxify_checkpoint)
from engine.evaluation.hf_classifier_scorer import HFClassifierScorer, check_hf_scorer
from engine.evaluation.lexical_scorers import ProfanityScorer
from engine.evaluation.scorer_base import ToxicityScorer, library_version
from engine.evaluation.bilstm_scorer import BiLSTMScorer, bilstm_status

log = logging.getLogger(__name__)


# -- the offline default: mean of two ------------------------------------------------------------
class MeanScorer:
    """The plain mean of several scorers' toxicity probabilities (no weights, nothing fitted);
    `score_details` gives the mean as `toxicity` and each component's score under its name."""

    key = "toxicity"

    def __init__(self, name: str, components: Sequence[ToxicityScorer]):
        self.name = name
        self.components = list(components)
        self.version = "mean of " + "; ".join(f"{c.name} ({c.version})" for c in self.components)

    def _columns(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.asarray(c.score(texts), dtype=float) for c in self.components]

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        return np.mean(self._columns(texts), axis=0)

    def score_details(self, texts: Sequence[str]) -> list[dict[str, float]]:
        if not texts:
            return []
        columns = self._columns(texts)
        mean = np.mean(columns, axis=0)
        return [{"toxicity": float(mean[i]), **{c.name: float(col[i]) for c, col in zip(self.components, columns)}}
                for i in range(len(texts))]


def bilstm_scorer(device: str = "cpu") -> ToxicityScorer:
    return BiLSTMScorer(device=device)


def offline_scorer(device: str = "cpu") -> MeanScorer:
    """`offline`: mean of `bilstm` (toxic) and `profanity`."""
    return MeanScorer("offline", [bilstm_scorer(device), ProfanityScorer()])


# -- choosing one ------------------------------------------------------------------------------
def load_scorer(name: str, *, label: str | None = None, device: str = "cpu") -> tuple[ToxicityScorer, str]:
    """Build the scorer `name`; returns it and a note on what `auto` chose ("" otherwise)."""
    name = (name or "auto").strip()
    if name == "auto":
        cached = detoxify_cached_checkpoint("original")
        if cached is not None:
            try:
                return DetoxifyScorer("original", device=device, label=label), \
                    f"auto chose detoxify:original (weights cached at {cached})"
            except ScorerError as exc:
                reason = f"detoxify weights are cached but did not load ({exc})"
                log.warning("auto: %s", reason)
        else:
            reason = "detoxify weights are not in the torch hub cache"
        try:
            return offline_scorer(device), f"auto chose offline (mean of bilstm and profanity): {reason}"
        except ScorerError as exc:
            note = f"auto chose profanity (alt-profanity-check): {reason}, and offline is unavailable ({exc})"
            log.warning(note)
            return ProfanityScorer(), note
    if name == "profanity":
        return ProfanityScorer(), ""
    if name == "bilstm":
        return bilstm_scorer(device), ""
    if name == "offline":
        return offline_scorer(device), ""
    if name == "detoxify" or name.startswith("detoxify:"):
        target = name.partition(":")[2] or "original"
        return DetoxifyScorer(target, device=device, label=label), ""
    if name.startswith("hf:") and name[3:].strip():
        check_hf_scorer(name[3:].strip())       # a folder or hub id that can load, in one line
        return HFClassifierScorer(name[3:].strip(), label=label, device=device), ""
    raise ScorerError(f"toxicity scorer {name!r} is unknown; use auto, offline, bilstm, profanity, "
                      "detoxify[:variant or checkpoint path] or hf:<model id or folder>")


# the scorer names `load_scorer` accepts without an argument (detoxify[:x] and hf:<x> take one)
PLAIN_SCORERS = ("auto", "offline", "bilstm", "profanity")


def check_scorer_name(name: str | None) -> None:
    """Refuse a scorer name `load_scorer` would not accept, before a job is queued: a
    `SpecError` on field "scorer" (bad input, exit 2). Loads no model; a detoxify
    checkpoint path is read with weights_only=True (memory-mapped, torch imported only then),
    so a file that is not one, or whose pickle would run code, is refused before queueing."""
    name = (name or "auto").strip()
    if name.startswith("hf:") and name[3:].strip():
        check_hf_scorer(name[3:].strip())
        return
    if name in PLAIN_SCORERS:
        return
    if name == "detoxify" or name.startswith("detoxify:"):
        target = name.partition(":")[2] or "original"
        if target in DETOXIFY_VARIANTS:
            return
        if Path(target).expanduser().is_file():
            try:        # weights only (memory-mapped): a pickle that would run code is refused now
                load_detoxify_checkpoint(Path(target).expanduser(), mmap=True)
            except ScorerError as exc:
                raise SpecError(str(exc), "scorer") from None
            return
        raise SpecError(f"detoxify variant or checkpoint {target!r} is neither one of "
                        f"{', '.join(DETOXIFY_VARIANTS)} nor an existing file", "scorer")
    raise SpecError(f"toxicity scorer {name!r} is unknown; use auto, offline, bilstm, profanity, "
                    "detoxify[:variant or checkpoint path] or hf:<model id or folder>", "scorer")


def offline_scorers() -> dict[str, str]:
    """What each scorer needs, checked without loading models or touching the network."""
    import importlib.util

    def installed(module: str) -> bool:
        return importlib.util.find_spec(module) is not None

    out = {"profanity": f"available (alt-profanity-check {library_version('alt-profanity-check')})"
           if installed("profanity_check") else "missing: pip install alt-profanity-check"}
    if not installed("detoxify"):
        out["detoxify"] = "missing: pip install detoxify"
    else:
        cached = detoxify_cached_checkpoint("original")
        out["detoxify"] = (f"original weights cached ({cached})" if cached else
                           "weights not cached: needs network once (or detoxify:<checkpoint path>)")
    out["bilstm"] = bilstm_status()
    out["offline"] = ("available (mean of bilstm and profanity)"
                      if out["bilstm"].startswith("available") and out["profanity"].startswith("available")
                      else "missing: needs bilstm and profanity")
    out["auto"] = ("detoxify" if "cached (" in out["detoxify"] else
                   "offline" if out["offline"].startswith("available") else "profanity")
    out["vader"] = (f"available (vaderSentiment {library_version('vaderSentiment')})"
                    if installed("vaderSentiment") else "missing: pip install vaderSentiment")
    return out
