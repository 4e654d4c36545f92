"""Layer 5 (evaluation): the `lm-eval` suite (declared by `engine.catalog.lm_eval_info`): lm-evaluation-harness tasks run on any compfair model, through
compfair's own loader (lm-eval's `HFLM` wraps the already loaded model and tokenizer, so
pruned, head-pruned and quantized models run as compfair loads them).

`data` names the tasks: a comma-separated list of lm-eval task names (`hellaswag,arc_easy`)
and/or paths to task YAML files (each file's folder joins lm-eval's include path and its `task:`
is run), e.g. `compfair submit eval --suite lm-eval --task hellaswag,arc_easy` (`--task` and a study's
`task =` are the same as `data`). `max_prompts`
is lm-eval's `limit` (documents per task), `seed` its random seeds, `batch_size` HFLM's.

Every document's per-sample metric values (lm-eval's logged samples) are stored as a sample
row (`domain` = the task), and each metric is their mean with a bootstrap CI over documents:
subset = the task for the task's own figure, subset "" for all the run's documents pooled (the
size-weighted mean lm-eval reports for a group). A metric whose per-document value is not a
number (corpus-level metrics such as BLEU or word perplexity) gets lm-eval's own aggregate
with the normal interval value +- z x stderr, from the row of its task marked `aggregate`.
No metric is a headline: lm-eval figures show in `show`, `compare`, the exports and model
cards, not as a column of every runs listing and report table."""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from pathlib import Path
from statistics import NormalDist

from engine.catalog.lm_eval_info import AGGREGATE_KEY, LmEvalInfo, parse_tasks as _parse_tasks
from engine.evaluation.suites.base import Suite, register
from engine.errors import JobFailed

log = logging.getLogger(__name__)


def _scores(row: dict) -> dict:
    value = row.get("scores")
    return (json.loads(value) if value else {}) if isinstance(value, str) else (value or {})


@register
class LmEvalSuite(LmEvalInfo, Suite):
    def check_inputs(self, spec) -> None:
        """Task names are checked by lm-eval when the job runs (its task index is slow to build)."""

    def load(self, spec, data=None):
        from engine.evaluation.data import SuiteData  # on use: numpy
        names, folders = _parse_tasks(spec.data if data is None else data)
        files = [(str(p), p.read_text()) for f in folders for p in sorted(Path(f).glob("*.y*ml"))]
        # the task names and local task files as `text` (what the run's fingerprint covers): the
        # documents are lm-eval's to load, so the run has no item count until it has run
        return SuiteData(suite=self.name, mode="path" if folders else "hub",
                         source="lm-eval:" + ",".join(names),
                         text=json.dumps({"tasks": names, "files": files}, sort_keys=True))

    def run_settings(self, spec, lm) -> dict:
        try:
            from importlib.metadata import version
            return {"lm_eval_version": version("lm-eval")}
        except Exception:  # noqa: BLE001 - not installed: the run fails with its own message
            return {}

    def run(self, ctx, spec, lm, run_id, data, scorer) -> dict:
        if ctx.store.sample_keys(run_id):
            return {}                      # resumed after lm-eval finished: the rows are stored
        try:
            from lm_eval import simple_evaluate
            from lm_eval.models.huggingface import HFLM
            from lm_eval.tasks import TaskManager
        except ImportError as exc:
            raise JobFailed(f"suite lm-eval needs the lm-eval package (pip install "
                            f"'compfair[lm-eval]'): {exc}") from None
        names, folders = _parse_tasks(spec.data)
        ctx.progress(0, 1, f"lm-eval {','.join(names)}", force=True)
        wrapped = HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=spec.batch_size or 1)
        out = simple_evaluate(model=wrapped, tasks=names, limit=spec.max_prompts, log_samples=True,
                              task_manager=TaskManager(include_path=folders or None),
                              random_seed=spec.seed, numpy_random_seed=spec.seed,
                              torch_random_seed=spec.seed, fewshot_random_seed=spec.seed,
                              bootstrap_iters=0)
        ctx.store.add_samples(run_id, _rows(out))
        return {"lm_eval_results": out.get("results", {})}

    def aggregate(self, rows, *, n_boot, confidence, seed):
        return lm_eval_metrics(rows, n_boot=n_boot, confidence=confidence, seed=seed)

    def per_item(self, metric, rows, subset=""):
        out = {}
        for row in rows:
            value = _scores(row).get("metrics", {}).get(metric)
            if self.in_subset(row, subset) and isinstance(value, (int, float)):
                out[row["key"]] = float(value)
        return dict(sorted(out.items()))


def _rows(out: dict) -> list[dict]:
    """One sample row per document (its numeric per-document metrics), and per task one row
    `aggregate` with lm-eval's own figures and stderrs."""
    rows, index = [], 0
    higher = out.get("higher_is_better", {})
    for task, samples in sorted(out.get("samples", {}).items()):
        for sample in samples:
            values = {k: float(v) for k, v in sample.items() if k in sample.get("metrics", ())
                      and isinstance(v, (int, float)) and not isinstance(v, bool)}
            rows.append({"key": f"{task}:{sample['doc_id']}", "item_index": index, "sample_index": 0,
                         "domain": task, "group_name": "document",
                         "prompt": str(sample.get("arguments", ""))[:2000],
                         "completion": json.dumps(sample.get("filtered_resps"), default=str)[:2000],
                         "scores": {"metrics": values, "higher": higher.get(task, {})}})
            index += 1
        result = out.get("results", {}).get(task, {})
        figures = {k.split(",")[0]: v for k, v in result.items() if "," in k}
        rows.append({"key": f"{task}:{AGGREGATE_KEY}", "item_index": index, "sample_index": 0,
                     "domain": task, "group_name": AGGREGATE_KEY,
                     "scores": {"results": figures, "higher": higher.get(task, {}),
                                "n": len(samples)}})
        index += 1
    return rows


def lm_eval_metrics(rows: list[dict], *, n_boot: int, confidence: float, seed: int):
    """Metric rows: per task and pooled, the mean of each numeric per-document metric with a
    bootstrap CI; lm-eval's aggregate +- z stderr for the others (per task only)."""
    from engine.evaluation.metrics import mean_estimate  # on use: numpy
    docs = [r for r in rows if r.get("group_name") != AGGREGATE_KEY]
    aggregates = {r["domain"]: _scores(r) for r in rows if r.get("group_name") == AGGREGATE_KEY}
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    higher: dict[str, bool | None] = {}
    for row in docs:
        scores = _scores(row)
        higher.update(scores.get("higher", {}))
        for metric, value in scores.get("metrics", {}).items():
            values[(metric, row["domain"])].append(value)
            values[(metric, "")].append(value)
    out = []
    for (metric, subset), vals in sorted(values.items()):
        hib = higher.get(metric)
        estimate = mean_estimate(vals, n_boot=n_boot, confidence=confidence, seed=seed)
        out.append(estimate.row(metric, subset, None if hib is None else int(bool(hib))))
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    for task, agg in sorted(aggregates.items()):
        for metric, value in agg.get("results", {}).items():
            if metric.endswith("_stderr") or (metric, task) in values or not isinstance(value, (int, float)):
                continue
            stderr = agg["results"].get(f"{metric}_stderr")
            has_ci = isinstance(stderr, (int, float)) and math.isfinite(stderr)
            hib = agg.get("higher", {}).get(metric)
            out.append({"name": metric, "subset": task, "value": float(value),
                        "ci_low": value - z * stderr if has_ci else None,
                        "ci_high": value + z * stderr if has_ci else None, "n": agg.get("n"),
                        "higher_is_better": None if hib is None else int(bool(hib))})
    return out, {"tasks": sorted({r["domain"] for r in docs}), "documents": len(docs)}
