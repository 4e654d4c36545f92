"""A study's report: one table of models x metrics with 95% CIs and deltas against the
teacher, a plain-words significance verdict for every compressed model and headline metric
(paired bootstrap over the same prompts), plots, and everything needed to reproduce it.

Written to a folder (report.md, metrics.csv, significance.csv, *.png) whose path is returned."""

from __future__ import annotations

import csv
import importlib.metadata
import json
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from engine import queue
from engine.evaluation import metrics as m
from engine.evaluation.aggregate import paired_difference
from engine.evaluation.suites import LOWER, MetricSpec, get_suite, suites
from engine.formatting import fmt_bytes, fmt_count
from engine.output import is_terminal, print_table
from engine.paths import safe_name
from engine.settings import Settings, StatSettings, load_settings
from engine.store import Store, loads
from engine.study import study_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Headline:
    """A figure of the report table: headline metric `metric` of a `suite` run (overall)."""

    suite: str
    metric: MetricSpec
    subset: str = ""

    @property
    def name(self) -> str:
        return self.metric.name

    @property
    def title(self) -> str:
        return self.metric.title

    @property
    def target(self) -> float | None:
        return self.metric.target


def headlines() -> tuple[Headline, ...]:
    """Every suite's headline metrics, quality suites first (the registry's report order)."""
    return tuple(Headline(s.name, m) for s in sorted(suites(), key=lambda s: s.order)
                 for m in s.headlines())


@dataclass
class ModelEntry:
    label: str
    kind: str
    params: dict
    model: dict | None = None
    compress_job: dict | None = None
    runs: dict[str, dict] = field(default_factory=dict)        # suite -> run row
    metrics: dict[str, dict] = field(default_factory=dict)     # suite -> {(name, subset): row}


@dataclass
class Report:
    study: str
    folder: Path
    entries: list[ModelEntry]
    significance: list[dict]
    complete: bool
    problems: list[str]
    table_rows: list[list[str]]
    table_columns: list[str]

    def summary(self) -> dict:
        return {"study": self.study, "folder": str(self.folder), "complete": self.complete,
                "problems": self.problems,
                "table": [dict(zip(self.table_columns, row)) for row in self.table_rows],
                "significance": self.significance}

    def print_table(self) -> None:
        print_table(self.table_columns, self.table_rows,
                    title=f"study {self.study}: value [95% CI] (delta vs teacher)")
        significant = [s for s in self.significance if s["significant"]]
        if is_terminal():
            for line in significant:
                print(f"  * {line['sentence']}")
        for problem in self.problems:
            log.warning(problem)


# -- gathering ----------------------------------------------------------------------------------
def _entries(store: Store, plan: dict) -> tuple[list[ModelEntry], list[str]]:
    problems = []
    entries: dict[str, ModelEntry] = {}
    order = plan.get("order") or sorted(plan["models"], key=lambda label: label != "teacher")
    for label in order:
        info = plan["models"][label]
        entry = ModelEntry(label, info["kind"], info.get("params", {}))
        if info.get("job_id"):
            job = queue.job(store, info["job_id"])
            entry.compress_job = job
            if job and job["status"] == "done":
                entry.model = store.model(queue.result_of(job).get("model_id"))
            elif job:
                problems.append(f"{label}: {job['kind']} job {job['id']} {job['status']}"
                                + (f": {job['error']}" if job["error"] else ""))
        entries[label] = entry
    for ev in plan["evals"]:
        job = queue.job(store, ev["job_id"])
        entry = entries[ev["model"]]
        run = store.run_for_job(ev["job_id"])
        if job is None or job["status"] != "done" or run is None:
            status = job["status"] if job else "missing"
            problems.append(f"{ev['model']}: {ev['suite']} job {ev['job_id']} {status}"
                            + (f": {job['error']}" if job and job["error"] else ""))
            continue
        entry.runs[ev["suite"]] = run
        entry.metrics[ev["suite"]] = {(x["name"], x["subset"]): x for x in store.metrics(run["id"])}
        if entry.model is None and run["model_id"]:
            entry.model = store.model(run["model_id"])
    return list(entries.values()), problems


def _value(entry: ModelEntry, h: Headline) -> tuple[float | None, float | None, float | None]:
    """(value, ci_low, ci_high) of the headline figure, or Nones when not measured."""
    row = entry.metrics.get(h.suite, {}).get((h.name, h.subset))
    return (row["value"], row["ci_low"], row["ci_high"]) if row else (None, None, None)


# -- paired significance ------------------------------------------------------------------------
def _significance(store: Store, teacher: ModelEntry, entry: ModelEntry, stats: StatSettings) -> list[dict]:
    out = []
    for h in headlines():
        run_a, run_b = teacher.runs.get(h.suite), entry.runs.get(h.suite)
        if not run_a or not run_b or not h.metric.paired:
            continue
        diff = paired_difference(h.suite, h.name, store.samples(run_a["id"]), store.samples(run_b["id"]),
                                 n_boot=stats.n_boot, confidence=stats.confidence, seed=stats.seed)
        base, new = _value(teacher, h)[0], _value(entry, h)[0]
        out.append(_verdict(entry.label, h, base, new, diff, run_a, run_b, stats))
    return out


def _verdict(label: str, h: Headline, base: float | None, new: float | None, diff: m.PairedDiff,
             run_a: dict, run_b: dict, stats: StatSettings) -> dict:
    significant = bool(diff.n and not math.isnan(diff.p_value) and diff.p_value < stats.alpha)
    if h.target is not None and base is not None and new is not None:
        better = abs(new - h.target) < abs(base - h.target)
        direction = "closer to" if better else "further from"
        change = f"{direction} the unbiased {h.target:g}"
    else:
        better = diff.diff < 0 if h.metric.direction == LOWER else diff.diff > 0
        change = "lower" if diff.diff < 0 else "higher"
    scorer_note = ""
    if get_suite(h.suite).generates_text and run_a["scorer"] != run_b["scorer"]:
        scorer_note = f" (scored by different scorers: {run_a['scorer']} vs {run_b['scorer']})"
    if significant:
        words = f"significantly {change} ({'better' if better else 'worse'})"
    else:
        words = "no significant change"
    sentence = (f"{label}: {h.title} {_num(base)} -> {_num(new)} (delta {diff.diff:+.4f}, "
                f"{stats.ci_label} [{diff.ci_low:+.4f}, {diff.ci_high:+.4f}], p = {diff.p_value:.3f}, "
                f"{diff.n} paired units): {words}{scorer_note}")
    return {"model": label, "metric": h.name, "suite": h.suite, "teacher": base, "value": new,
            "delta": diff.diff, "ci_low": diff.ci_low, "ci_high": diff.ci_high,
            "p_value": diff.p_value, "n": diff.n, "significant": significant,
            "better": better if significant else None, "sentence": sentence}


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


# -- the table ----------------------------------------------------------------------------------
def _compression(entry: ModelEntry, teacher: ModelEntry) -> float | None:
    """Share of the teacher's non-zero parameters removed (0 for the teacher)."""
    if not entry.model or not teacher.model or not teacher.model["n_nonzero"]:
        return None
    return 1 - entry.model["n_nonzero"] / teacher.model["n_nonzero"]


def _table(entries: list[ModelEntry], teacher: ModelEntry) -> tuple[list[str], list[list[str]], list[dict]]:
    shown = [h for h in headlines() if any(e.runs.get(h.suite) for e in entries)]
    columns = ["model", "method", "params", "non-zero", "disk"] + [h.title for h in shown]
    rows, records = [], []
    for entry in entries:
        model = entry.model or {}
        method = entry.kind if entry.kind != "base" else ("teacher" if entry is teacher else "base")
        row = [entry.label, method, fmt_count(model.get("n_params")), fmt_count(model.get("n_nonzero")),
               fmt_bytes(model.get("size_bytes"))]
        record = {"model": entry.label, "method": method, "params": model.get("n_params"),
                  "non_zero": model.get("n_nonzero"), "disk_bytes": model.get("size_bytes"),
                  "compression": _compression(entry, teacher), **entry.params}
        for h in shown:
            value, low, high = _value(entry, h)
            base = _value(teacher, h)[0]
            cell = "" if value is None else (
                f"{value:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None else ""))
            if value is not None and base is not None and entry is not teacher:
                cell += f" ({value - base:+.3f})"
            row.append(cell)
            record.update({h.name: value, f"{h.name}_ci_low": low, f"{h.name}_ci_high": high,
                           f"{h.name}_delta": None if value is None or base is None else value - base})
        rows.append(row)
        records.append(record)
    return columns, rows, records


# -- plots --------------------------------------------------------------------------------------
def _error_bar(value: float, low: float | None, high: float | None) -> list[list[float]] | None:
    """Matplotlib error-bar lengths; a percentile interval need not contain the point estimate
    (e.g. a maximum), so a side that would be negative is drawn as zero."""
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return None
    return [[max(value - low, 0.0)], [max(high - value, 0.0)]]


def _plots(folder: Path, entries: list[ModelEntry], teacher: ModelEntry) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    colours = {"teacher": "black", "base": "grey", "distill": "tab:blue", "prune": "tab:orange"}
    panels = [h for h in headlines() if h.metric.role == "fairness" and any(e.runs.get(h.suite) for e in entries)]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
        for ax, h in zip(axes[0], panels):
            for entry in entries:
                x = _compression(entry, teacher)
                value, low, high = _value(entry, h)
                if x is None or value is None:
                    continue
                kind = "teacher" if entry is teacher else entry.kind
                err = _error_bar(value, low, high)
                ax.errorbar([x], [value], yerr=err, fmt="o", color=colours.get(kind, "grey"), capsize=3)
                ax.annotate(entry.label, (x, value), fontsize=7, xytext=(3, 3), textcoords="offset points")
            if h.target is not None:
                ax.axhline(h.target, color="grey", linestyle=":", linewidth=1)
            ax.set_xlabel("share of teacher's non-zero parameters removed")
            ax.set_title(h.title, fontsize=9)
        fig.tight_layout()
        path = folder / "fairness_vs_compression.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        made.append(path)
    ppl = next(h for h in headlines() if h.name == "perplexity")
    emt = next(h for h in headlines() if h.name == "expected_max_toxicity")
    points = [(e, _value(e, ppl), _value(e, emt)) for e in entries]
    points = [(e, p, t) for e, p, t in points if p[0] is not None and t[0] is not None]
    if points:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for entry, (p, plo, phi), (t, tlo, thi) in points:
            kind = "teacher" if entry is teacher else entry.kind
            ax.errorbar([p], [t], xerr=_error_bar(p, plo, phi), yerr=_error_bar(t, tlo, thi), fmt="o",
                        color=colours.get(kind, "grey"), capsize=3)
            ax.annotate(entry.label, (p, t), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("perplexity (log scale; lower is better)")
        ax.set_ylabel("expected maximum toxicity")
        ax.set_title("quality / toxicity trade-off", fontsize=9)
        fig.tight_layout()
        path = folder / "tradeoff.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        made.append(path)
    return made


# -- writing ------------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    out = {}
    for package in ("compfair", "torch", "transformers", "detoxify", "alt-profanity-check",
                    "vaderSentiment", "datasets"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def _markdown(record: dict, columns: list[str], rows: list[list[str]], significance: list[dict],
              entries: list[ModelEntry], plots: list[Path], problems: list[str], domains: list[str]) -> str:
    lines = [f"# Study `{record['name']}`", "", record.get("description") or "", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M')} from `{record['source']}`. "
             "Figures are value [95% bootstrap CI] (delta vs the teacher).", ""]
    if problems:
        lines += ["**Incomplete:** " + "; ".join(problems), ""]
    lines += ["## Models x metrics", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    lines += ["", "## Did compression change it? (paired bootstrap against the teacher, same prompts)", ""]
    lines += [f"- {s['sentence']}" for s in significance] or ["- no paired comparison available"]
    if domains:
        lines += ["", "## BOLD: sentiment gap between groups, per domain", ""]
        lines += ["| model | " + " | ".join(domains) + " |", "|---|" + "---|" * len(domains)]
        for entry in entries:
            metrics = entry.metrics.get("bold", {})
            cells = []
            for d in domains:
                r = metrics.get(("sentiment_mean_gap", d))
                cells.append(f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r else "")
            lines.append(f"| {entry.label} | " + " | ".join(cells) + " |")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    lines += ["", "## How to reproduce", "", f"`compfair study {record['source']}` with:", ""]
    lines += [f"- {k} {v}" for k, v in _versions().items()]
    lines += ["", "| model | method settings | suite | scorer | data | device | settings |",
              "|---|---|---|---|---|---|---|"]
    for entry in entries:
        method = json.dumps(loads((entry.model or {}).get("method_params"), {}) or {}, sort_keys=True)
        for suite, run in sorted(entry.runs.items()):
            settings = loads(run["settings"], {}) or {}
            brief = {k: settings.get(k) for k in ("samples_per_prompt", "top_p", "temperature",
                                                  "max_new_tokens", "max_prompts", "seed",
                                                  "context_length", "stride", "resolved_dtype")
                     if settings.get(k) is not None}
            lines.append(f"| {entry.label} | `{method[:120]}` | {suite} | {run['scorer'] or ''} "
                         f"{run['scorer_version'] or ''} | {run['data_source'] or ''} | {run['device'] or ''} "
                         f"| `{json.dumps(brief, sort_keys=True)}` |")
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, records: list[dict]) -> None:
    if not records:
        path.write_text("")
        return
    columns = list(dict.fromkeys(k for r in records for k in r))
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        writer.writerows(records)


def build_report(store: Store, name: str, output_dir: str | Path | None = None,
                 settings: Settings | None = None) -> Report:
    """Gather a study's results from the store and write its report folder. `settings`
    (default: the home's settings.toml) fixes the paired tests' confidence, bootstrap count,
    significance level and adjustment."""
    settings = settings or load_settings(store.home.root)
    stats = settings.statistics
    record = study_record(store, name)
    entries, problems = _entries(store, record["plan"])
    teacher = next(e for e in entries if e.label == "teacher")
    columns, rows, records = _table(entries, teacher)
    significance = [s for e in entries if e is not teacher for s in _significance(store, teacher, e, stats)]
    folder = Path(output_dir).expanduser().resolve() if output_dir else \
        store.home.reports_dir / safe_name(name)
    folder.mkdir(parents=True, exist_ok=True)
    plots = _plots(folder, entries, teacher)
    domains = sorted({subset for e in entries for (n, subset) in e.metrics.get("bold", {})
                      if n == "sentiment_mean_gap" and subset})
    (folder / "report.md").write_text(_markdown(record, columns, rows, significance, entries, plots,
                                                problems, domains))
    _write_csv(folder / "models.csv", records)
    _write_csv(folder / "significance.csv", [{k: v for k, v in s.items()} for s in significance])
    all_metrics = [{"model": e.label, "suite": suite, **{k: x[k] for k in ("name", "subset", "value",
                    "ci_low", "ci_high", "n")}} for e in entries for suite, ms in e.metrics.items()
                   for x in ms.values()]
    _write_csv(folder / "metrics.csv", all_metrics)
    return Report(name, folder, entries, significance, not problems, problems, rows, columns)
