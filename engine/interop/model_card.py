"""`compfair card MODEL`: a Hugging Face model card (README.md with YAML front matter) for a
registered model, written into its folder.

The front matter holds `base_model` (the lineage's root: a hub id where the root came from the
hub, else its source), `base_model_relation` ("quantized" for a quantized model, else absent),
`tags`, `compression` (the recipe: one step per ancestor, root first, with the method and the
job spec's parameters as stored), and `model-index`: one result per metric of the model's latest
finished run of each suite (all items, subset "" only), with `metric_args` holding the bootstrap
CI (`ci_low`, `ci_high`, `confidence`) and `n`, the units it is over. The body has the same
figures as a table, every subset included, and how they were measured."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from engine.interop.model_results import ModelResults, RunResult
from engine.store import loads
from engine.evaluation.suites import get_suite

log = logging.getLogger(__name__)
SUITE_DATASETS = {"toxicity": "RealToxicityPrompts protocol", "bold": "BOLD",
                  "crows_pairs": "CrowS-Pairs", "perplexity": "perplexity"}
QUANTIZE_METHODS = ("rtn", "gguf", "gptq", "torchao", "bnb", "awq")


def _metric_title(suite: str, name: str) -> str:
    try:
        spec = next((m for m in get_suite(suite).metrics if m.name == name), None)
        return spec.title if spec is not None else name
    except Exception:  # noqa: BLE001 - a suite whose plugin is not loaded here keeps the raw name
        return name


def recipe(model: ModelResults) -> list[dict[str, Any]]:
    """The compression steps that made the model, root first: each ancestor that was derived,
    with its method and the stored job parameters (paths and bookkeeping dropped)."""
    steps = []
    for row in reversed(model.lineage):
        if not row.get("parent_id"):
            continue
        params = loads(row.get("method_params"), {}) or {}
        kind = params.pop("kind", None)
        for key in ("model", "teacher", "name", "label", "device"):
            params.pop(key, None)
        steps.append({"name": row.get("name"), "kind": kind, "method": row.get("method"),
                      "params": params, "parameters": row.get("n_params"),
                      "nonzero_parameters": row.get("n_nonzero")})
    return steps


def _is_quantized(steps: list[dict]) -> bool:
    return any(s["kind"] == "quantize" or (s["method"] or "").split("-")[0] in QUANTIZE_METHODS
               for s in steps)


def _eval_results(model: ModelResults) -> list:
    from huggingface_hub import EvalResult
    results = []
    for run in model.runs:
        for m in run.metrics:
            if m.subset or m.value is None:
                continue
            args = {"confidence": run.confidence, "n": m.n, "ci_low": m.ci_low, "ci_high": m.ci_high,
                    "higher_is_better": m.higher_is_better, "scorer": run.scorer, "run_id": run.run_id}
            results.append(EvalResult(
                task_type="text-generation", task_name=f"compfair {run.suite}",
                dataset_type=run.data_source or run.suite,
                dataset_name=SUITE_DATASETS.get(run.suite, run.suite),
                metric_type=m.name, metric_name=_metric_title(run.suite, m.name),
                metric_value=m.value, metric_args=args))
    return results


def _body(model: ModelResults, steps: list[dict]) -> str:
    lines = [f"# {model.name}", ""]
    root = model.lineage[-1] if model.lineage else model.model
    if steps:
        lines += [f"Compressed from `{root.get('source')}` by compfair:", ""]
        lines += [f"1. {s['kind'] or ''} `{s['method']}` -> `{s['name']}` ({json.dumps(s['params'], sort_keys=True)})"
                  for s in steps]
    else:
        lines += [f"`{root.get('source')}` as evaluated by compfair (no compression)."]
    lines += ["", "## Evaluation (compfair)", "",
              "Each figure with its bootstrap confidence interval; `n` is the number of units "
              "(prompts, pairs or windows) it is over.", "",
              "| suite | metric | subset | value | CI | n | scorer |", "|---|---|---|---|---|---|---|"]
    for run in model.runs:
        lines += [_row(run, m) for m in run.metrics if m.value is not None]
    return "\n".join(lines) + "\n"


def _row(run: RunResult, m) -> str:
    ci = f"[{m.ci_low:.4g}, {m.ci_high:.4g}]" if m.ci_low is not None and m.ci_high is not None else ""
    return (f"| {run.suite} | {_metric_title(run.suite, m.name)} | {m.subset or 'all'} | "
            f"{m.value:.4g} | {ci} | {m.n if m.n is not None else ''} | {run.scorer or ''} |")


def build_card(model: ModelResults):
    """The `huggingface_hub.ModelCard` for `model`."""
    from huggingface_hub import ModelCard, ModelCardData
    steps = recipe(model)
    root = model.lineage[-1] if model.lineage else model.model
    data = ModelCardData(
        base_model=root.get("source") if steps else None, model_name=model.name,
        tags=["compfair", "compression"] + sorted({s["kind"] for s in steps if s["kind"]})
        + ["toxicity", "bias"], eval_results=_eval_results(model) or None,
        library_name="transformers", pipeline_tag="text-generation",
        compression=steps or None,
        base_model_relation="quantized" if _is_quantized(steps) else None)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{_body(model, steps)}")


def write_card(model: ModelResults, path: Path) -> Path:
    """Write the card to `path` (a file, or a folder: its README.md); returns the file."""
    target = path / "README.md" if path.is_dir() else path
    target.write_text(str(build_card(model)), encoding="utf-8")
    log.info("wrote model card %s", target)
    return target
