"""The `hf:<hub id or folder>` scorer: any Hugging Face sequence-classification model, scored
as the probability of one label; and the check of an `hf:` reference before a job is queued."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from engine.errors import ScorerError, SpecError
from engine.evaluation.scorer_base import file_digest, short_reason, library_version, default_batch_size, length_sorted_chunks


TOXIC_LABEL_HINTS = ("toxic", "toxicity", "hate", "offensive")


# -- any HF sequence classifier ------------------------------------------------------------------
class HFClassifierScorer:
    """A Hugging Face sequence-classification model; the score is P(`label`): softmax over
    labels for single-label models, sigmoid for multi-label or one-logit models."""

    def __init__(self, ref: str, *, label: str | None = None, device: str = "cpu",
                 batch_size: int | None = None, max_length: int = 512):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        path = Path(ref).expanduser()
        load_from = str(path) if path.exists() else ref
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(load_from, local_files_only=offline)
            self._model = AutoModelForSequenceClassification.from_pretrained(
                load_from, local_files_only=offline).to(device).eval()
        except Exception as exc:  # noqa: BLE001 - missing, offline, wrong architecture
            raise ScorerError(f"classifier {ref!r} cannot be loaded: {short_reason(exc)}") from exc
        config = self._model.config
        labels = [str(config.id2label[i]) for i in range(config.num_labels)]
        self.label_index = self._pick_label(ref, labels, label)
        self.labels = labels
        self.key = labels[self.label_index]
        self.multi_label = config.problem_type == "multi_label_classification" or config.num_labels == 1
        self.device, self.max_length = device, max_length
        self.batch_size = batch_size or default_batch_size(device)
        self._torch = torch
        revision = getattr(config, "_commit_hash", None) or (
            f"config sha256:{file_digest(path / 'config.json')}" if (path / "config.json").exists() else "unknown")
        self.name = f"hf:{ref}"
        self.version = f"transformers {library_version('transformers')}, {revision}, label {labels[self.label_index]}"

    @staticmethod
    def _pick_label(ref: str, labels: list[str], wanted: str | None) -> int:
        if wanted is not None:
            for i, name in enumerate(labels):
                if name == wanted or name.lower() == wanted.lower():
                    return i
            if wanted.isdigit() and int(wanted) < len(labels):
                return int(wanted)
            raise ScorerError(f"classifier {ref!r} has no label {wanted!r} (labels: {', '.join(labels)})")
        if len(labels) == 1:
            return 0
        hits = [i for i, name in enumerate(labels)
                if any(h in name.lower() for h in TOXIC_LABEL_HINTS) and "non" not in name.lower()
                and "not" not in name.lower()]
        if len(hits) != 1:
            raise ScorerError(f"classifier {ref!r}: say which label to read with scorer_label "
                              f"(labels: {', '.join(labels)})")
        return hits[0]

    def _probabilities(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        out = np.zeros((len(texts), len(self.labels)))
        with torch.inference_mode():
            for chunk in length_sorted_chunks(texts, self.batch_size):
                enc = self._tokenizer([texts[i] for i in chunk], return_tensors="pt",
                                      padding=True, truncation=True, max_length=self.max_length)
                logits = self._model(**enc.to(self.device)).logits.float()
                probs = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
                out[chunk] = probs.cpu().numpy()
        return out

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return self._probabilities(texts)[:, self.label_index].astype(float) if texts else np.zeros(0)

    def score_details(self, texts: Sequence[str]) -> list[dict[str, float]]:
        probs = self._probabilities(texts)
        return [{name: float(row[i]) for i, name in enumerate(self.labels)} for row in probs]


def check_hf_scorer(ref: str) -> None:
    """`hf:<ref>` names an existing folder, or a well-formed hub id that is cached when
    HF_HUB_OFFLINE=1 (else the hub's own "Repo id must be in the form ..." would be the reason).
    A `SpecError` on field "scorer"."""
    path = Path(ref).expanduser()
    if ref.startswith((".", "/", "~")) or path.exists():
        if not path.is_dir():
            raise SpecError(f"hf scorer folder {str(path)!r} does not exist"
                            + (" (it is a file)" if path.exists() else ""), "scorer")
        return
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    try:
        validate_repo_id(ref)
    except HFValidationError:
        raise SpecError(f"hf scorer {ref!r} is neither an existing folder nor a hub id "
                        "(name or owner/name)", "scorer") from None
    if os.environ.get("HF_HUB_OFFLINE") == "1" and not isinstance(try_to_load_from_cache(ref, "config.json"), str):
        raise SpecError(f"hf scorer {ref!r} is not in the local Hugging Face cache and "
                        "HF_HUB_OFFLINE=1 forbids downloading it; give a local folder or download "
                        "it first", "scorer")
