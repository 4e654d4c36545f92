"""The `detoxify` scorer: Detoxify's release models (from the torch hub cache) or a Detoxify
training checkpoint read with `torch.load(weights_only=True)` (tensors and plain values only;
a checkpoint whose pickle would run code is refused), and writing such a checkpoint."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from engine.errors import ScorerError
from engine.evaluation.scorer_base import (file_digest, short_reason, library_version, default_batch_size,
                                           length_sorted_chunks)


DETOXIFY_VARIANTS = ("original", "unbiased", "multilingual", "original-small", "unbiased-small")
# the labels of Detoxify's "original" (Jigsaw 2018) models
DETOXIFY_CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]


# -- Detoxify ----------------------------------------------------------------------------------
def save_detoxify_checkpoint(model, model_folder: Path, path: Path,
                             classes: Sequence[str] = tuple(DETOXIFY_CLASSES)) -> Path:
    """Write `model` (a BertForSequenceClassification with one logit per class, its config
    and tokenizer saved in `model_folder`) as a checkpoint in the dict format Detoxify's
    `load_checkpoint` reads, so it loads through the real `Detoxify` class."""
    import torch

    torch.save({"config": {"arch": {"args": {"model_type": str(model_folder),
                                             "model_name": "BertForSequenceClassification",
                                             "tokenizer_name": "BertTokenizer",
                                             "num_classes": len(classes)}},
                           "dataset": {"args": {"classes": list(classes)}}},
                "state_dict": model.state_dict()}, path)
    return path


# Detoxify's own renames of its classes (detoxify.detoxify.load_checkpoint)
DETOXIFY_RENAMES = {"toxic": "toxicity", "identity_hate": "identity_attack",
                    "severe_toxic": "severe_toxicity"}


def load_detoxify_checkpoint(path: Path, device: str = "cpu", *, mmap: bool = False) -> dict:
    """A Detoxify checkpoint file read with `torch.load(weights_only=True)`: tensors, plain
    dicts, lists, strings and numbers only, so a pickle that would run code (a `__reduce__`
    naming os.system, say) is refused before any of it runs. Detoxify itself would unpickle
    it with weights_only=False; a study file shared by someone else can name such a path, so
    compfair never lets it. Also checks the layout Detoxify needs (config + state_dict, a
    transformers *ForSequenceClassification class and tokenizer). ScorerError, one line."""
    import pickle
    import zipfile

    import torch
    try:
        use_mmap = mmap and zipfile.is_zipfile(path)       # read tensors lazily (submit check)
        loaded = torch.load(path, map_location=device, weights_only=True, mmap=use_mmap)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found:
            raise ScorerError(f"detoxify checkpoint {str(path)!r} is refused: it holds more than "
                              f"tensors and plain values (it names {found.group(1)}); compfair reads "
                              "checkpoints with torch.load(weights_only=True) and never runs code "
                              "from them") from None
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(exc))
        raise ScorerError(f"detoxify checkpoint {str(path)!r} cannot be loaded: not a torch "
                          f"checkpoint ({detail.group(1) if detail else short_reason(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - not a torch file, truncated: one line
        raise ScorerError(f"detoxify checkpoint {str(path)!r} cannot be loaded: {short_reason(exc)}") from None
    args = ((loaded.get("config") or {}).get("arch") or {}).get("args") \
        if isinstance(loaded, dict) and isinstance(loaded.get("config"), dict) else None
    classes = _get_path(loaded, "config", "dataset", "args", "classes")
    if not (isinstance(args, dict) and isinstance(loaded.get("state_dict"), dict)
            and isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise ScorerError(f"detoxify checkpoint {str(path)!r} is not a Detoxify checkpoint (it needs "
                          "config.arch.args, config.dataset.args.classes and a state_dict)")
    model_name, tokenizer_name = args.get("model_name"), args.get("tokenizer_name")
    if not (isinstance(model_name, str) and model_name.endswith("ForSequenceClassification")
            and isinstance(tokenizer_name, str) and tokenizer_name.endswith(("Tokenizer", "TokenizerFast"))
            and isinstance(args.get("model_type"), str) and isinstance(args.get("num_classes"), int)):
        raise ScorerError(f"detoxify checkpoint {str(path)!r} names model {model_name!r} and tokenizer "
                          f"{tokenizer_name!r}; expected a transformers *ForSequenceClassification "
                          "class, a *Tokenizer, a model_type and num_classes")
    return loaded


def _get_path(data, *keys):
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _detoxify_from_checkpoint(detoxify_cls, path: Path, device: str):
    """A `Detoxify` object built as its `load_checkpoint` would, from a checkpoint read by
    `load_detoxify_checkpoint` (weights only) instead of its own unsafe torch.load."""
    from detoxify.detoxify import get_model_and_tokenizer
    loaded = load_detoxify_checkpoint(path, device)
    args = loaded["config"]["arch"]["args"]
    model, tokenizer = get_model_and_tokenizer(
        **{k: args[k] for k in ("model_type", "model_name", "tokenizer_name", "num_classes")},
        state_dict=loaded["state_dict"])
    detoxify = detoxify_cls.__new__(detoxify_cls)
    detoxify.model, detoxify.tokenizer, detoxify.device = model, tokenizer, device
    detoxify.class_names = [DETOXIFY_RENAMES.get(c, c) for c in loaded["config"]["dataset"]["args"]["classes"]]
    detoxify.model.to(device)
    return detoxify


def detoxify_cached_checkpoint(variant: str = "original") -> Path | None:
    """The torch hub cache file Detoxify would download for `variant`, if it is there."""
    import torch
    from detoxify.detoxify import MODEL_URLS

    url = MODEL_URLS.get(variant)
    if url is None:
        return None
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    return path if path.exists() else None


class DetoxifyScorer:
    """Detoxify (Hanu & Unitary, 2020) multi-label BERT-family classifiers; reads the `label`
    class (default "toxicity") after Detoxify's own name standardisation."""

    def __init__(self, variant_or_checkpoint: str = "original", *, device: str = "cpu",
                 label: str | None = None, batch_size: int | None = None):
        try:
            from detoxify import Detoxify
        except ImportError as exc:
            raise ScorerError(f"scorer 'detoxify' needs the detoxify package: {short_reason(exc)}") from exc
        self.batch_size = batch_size or default_batch_size(device)
        checkpoint = None
        if variant_or_checkpoint in DETOXIFY_VARIANTS:
            variant = variant_or_checkpoint
            identity = variant
        else:
            checkpoint = Path(variant_or_checkpoint).expanduser()
            if not checkpoint.is_file():
                raise ScorerError(f"detoxify variant or checkpoint {variant_or_checkpoint!r} is neither "
                                  f"one of {', '.join(DETOXIFY_VARIANTS)} nor an existing file")
            variant = "checkpoint"
            identity = f"{checkpoint.name} sha256:{file_digest(checkpoint)}"
        try:
            if checkpoint is None:     # the project's own release file, from the torch hub cache
                self._model = Detoxify(variant, device=device)
            else:                      # a path (perhaps from a shared study file): tensors only
                self._model = _detoxify_from_checkpoint(Detoxify, checkpoint, device)
        except ScorerError:
            raise
        except Exception as exc:  # noqa: BLE001 - download, format, config: one-line reason
            where = str(checkpoint) if checkpoint else f"variant {variant!r}"
            raise ScorerError(f"detoxify {where} cannot be loaded: {short_reason(exc)}") from exc
        self._model.model.eval()
        classes = list(self._model.class_names)
        self.label = label or "toxicity"
        if self.label not in classes:
            raise ScorerError(f"detoxify has no class {self.label!r} (classes: {', '.join(classes)})")
        self.key = self.label
        self.name = f"detoxify:{variant}" if checkpoint is None else f"detoxify:{checkpoint}"
        self.version = f"detoxify {library_version('detoxify')}, {identity}, class {self.label}"

    def _predict(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Every class for every text: length-sorted batches under inference mode, results
        put back in the texts' order."""
        import torch

        out: dict[str, np.ndarray] = {}
        with torch.inference_mode():
            for chunk in length_sorted_chunks(texts, self.batch_size):
                # Detoxify squeezes a batch of one to scalars; make every column a list again.
                for name, values in self._model.predict([texts[i] for i in chunk]).items():
                    column = out.setdefault(name, np.zeros(len(texts)))
                    column[chunk] = values if isinstance(values, list) else [values]
        return out

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        return self._predict(texts)[self.label]

    def score_details(self, texts: Sequence[str]) -> list[dict[str, float]]:
        if not texts:
            return []
        columns = self._predict(texts)
        return [{name: float(values[i]) for name, values in columns.items()} for i in range(len(texts))]
