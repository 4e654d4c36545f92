"""`compfair export --format lm-eval -o DIR`: per model, a results JSON in
lm-evaluation-harness's schema (`lm_eval/result_schema.py`, as `EvaluationTracker.
save_results_aggregated` writes it: `DIR/<model_name_sanitized>/results_<date>.json`), so tools
that read lm-eval output (its `make_table`, the Open LLM Leaderboard parsers, W&B's lm-eval
integration) read compfair's.

Each compfair suite is a task `compfair_<suite>` (a subset such as RTP's `toxic` prompts is the
task `compfair_<suite>_<subset>`, listed under its suite in `group_subtasks`), each metric is
`"<metric>,none"` (`none`: lm-eval's name for "no filter") and its standard error
`"<metric>_stderr,none"` is derived from compfair's bootstrap CI (`records.stderr_from_ci`; "N/A"
where the metric has no interval, as lm-eval writes for a metric without a stderr). Everything
compfair knows beyond lm-eval's fields (the CI bounds themselves, the scorer, the run id, the
lineage) is kept in each task's `configs[task]["metadata"]`."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from engine.terminal_output import json_safe
from engine.interop.model_results import ModelResults, RunResult, model_results, stderr_from_ci
from engine.store import Store

log = logging.getLogger(__name__)
TASK_PREFIX = "compfair_"
FILTER = "none"
# how each suite produced its figures, in lm-eval's output_type vocabulary
OUTPUT_TYPES = {"perplexity": "loglikelihood_rolling", "crows_pairs": "multiple_choice"}


def sanitize_model_name(name: str) -> str:
    """lm-eval's `sanitize_model_name` (lm_eval/utils.py): the folder name of a model's results."""
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)


def task_name(suite: str, subset: str = "") -> str:
    return TASK_PREFIX + suite + (f"_{subset}" if subset else "")


def _task_config(run: RunResult, task: str, subset: str) -> dict[str, Any]:
    return {"task": task, "tag": ["compfair"], "dataset_path": run.data_source,
            "output_type": OUTPUT_TYPES.get(run.suite, "generate_until"), "num_fewshot": 0,
            "generation_kwargs": {k: run.settings.get(k) for k in ("max_new_tokens", "top_p", "temperature")
                                  if k in run.settings} if OUTPUT_TYPES.get(run.suite) is None else {},
            "repeats": run.settings.get("samples_per_prompt", 1) if run.suite not in OUTPUT_TYPES else 1,
            "metadata": {"version": 1.0, "compfair_suite": run.suite, "subset": subset,
                         "run_id": run.run_id, "job_id": run.job_id, "scorer": run.scorer,
                         "scorer_version": run.settings.get("scorer_version"),
                         "confidence": run.confidence,
                         "stderr": "from the bootstrap CI: (high - low) / (2 z)",
                         "ci": {}}}


def _run_tasks(run: RunResult, out: dict[str, Any]) -> None:
    """Add one run's metrics, one task per subset, to the results dict `out`."""
    subsets = sorted({m.subset for m in run.metrics}, key=lambda s: (s != "", s))
    parent = task_name(run.suite)
    for subset in subsets:
        task = task_name(run.suite, subset)
        metrics = [m for m in run.metrics if m.subset == subset]
        n = max((m.n or 0 for m in metrics), default=0) or (run.n_items or 0)
        entry: dict[str, Any] = {"alias": subset or task, "name": task,
                                 "sample_len": n}
        config = _task_config(run, task, subset)
        for m in metrics:
            stderr = stderr_from_ci(m.ci_low, m.ci_high, run.confidence)
            entry[f"{m.name},{FILTER}"] = m.value
            entry[f"{m.name}_stderr,{FILTER}"] = "N/A" if stderr is None else stderr
            config["metadata"]["ci"][m.name] = [m.ci_low, m.ci_high, m.n]
        out["results"][task] = entry
        out["configs"][task] = config
        out["versions"][task] = 1.0
        out["n-shot"][task] = 0
        out["higher_is_better"][task] = {m.name: m.higher_is_better for m in metrics}
        out["n-samples"][task] = {"original": run.n_items or n, "effective": n}
        if subset:
            out["group_subtasks"].setdefault(parent, []).append(task)
        else:
            out["group_subtasks"].setdefault(parent, [])


def results_dict(model: ModelResults, *, date: float | None = None) -> dict[str, Any]:
    """One model's results in lm-eval's aggregated-results schema."""
    out: dict[str, Any] = {"results": {}, "group_subtasks": {}, "configs": {}, "versions": {},
                           "n-shot": {}, "higher_is_better": {}, "n-samples": {}}
    for run in model.runs:
        _run_tasks(run, out)
    for key in ("results", "configs", "versions", "n-shot", "higher_is_better"):
        out[key] = dict(sorted(out[key].items()))
    row = model.model
    first = model.runs[0].settings if model.runs else {}
    path = row.get("path") or row.get("source")
    out["config"] = {"model": "compfair", "model_args": f"pretrained={path}",
                     "model_num_parameters": row.get("n_params"),
                     "model_dtype": first.get("resolved_dtype"), "model_revision": "main",
                     "model_sha": "", "batch_size": first.get("batch_size"), "batch_sizes": [],
                     "device": first.get("resolved_device"), "use_cache": None, "limit": None,
                     "bootstrap_iters": first.get("bootstrap_samples"), "gen_kwargs": None,
                     "random_seed": first.get("seed"), "numpy_seed": first.get("seed"),
                     "torch_seed": first.get("seed"), "fewshot_seed": None}
    stamp = date if date is not None else max((r.finished_at or 0 for r in model.runs), default=0)
    versions = first.get("versions", {}) if isinstance(first.get("versions"), dict) else {}
    out.update({"git_hash": None, "date": stamp, "model_source": "compfair",
                "model_name": model.name, "model_name_sanitized": sanitize_model_name(model.name),
                "transformers_version": versions.get("transformers"),
                "compfair_version": versions.get("compfair"),
                "compfair_lineage": [{"id": m["id"], "name": m.get("name"), "method": m.get("method")}
                                     for m in model.lineage],
                "task_hashes": {}, "total_evaluation_time_seconds": None})
    return out


def export(store: Store, folder: Path, run_ids: Sequence[int] | None = None,
           check: Callable[[list[Path]], None] | None = None) -> list[Path]:
    """Write one `results_<date>.json` per model under `folder/<model_name_sanitized>/`;
    returns the files written (none when no run has finished). `check(paths)` sees every
    folder and file first and may raise: then nothing is written (engine.output_guard)."""
    import json
    written = []
    date_id = datetime.now(timezone.utc).replace(tzinfo=None).isoformat().replace(":", "-")
    planned = []
    for model in model_results(store, run_ids):
        data = results_dict(model)
        target = folder / data["model_name_sanitized"]
        planned.append((data, target, target / f"results_{date_id}.json"))
    if check is not None:
        check([p for _, target, path in planned for p in (target, path)])
    for data, target, path in planned:
        target.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(json_safe(data), indent=2, ensure_ascii=False, default=str, allow_nan=False)
                        + "\n", encoding="utf-8")
        log.info("wrote %s (%d tasks)", path, len(data["results"]))
        written.append(path)
    return written
