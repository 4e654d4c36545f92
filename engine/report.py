"""A study's report: one table of models x metrics with CIs and deltas against the teacher, a
plain-words, quality-aware verdict for every compressed model and headline metric (paired over
the same items, adjusted for multiple comparisons; `engine.report_verdicts`), per-item flips,
plots, and everything needed to reproduce it.

Written to a folder (report.md, models.csv, metrics.csv, significance.csv, flips.csv, *.png)
whose path is returned."""

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
from engine.evaluation.suites import MetricSpec, suites
from engine.report_entries import Headline, ModelEntry, headlines
from engine.report_plots import make_plots
from engine.report_provenance import caption, header_lines
from engine.job_results import JobResult
from engine.report_verdict_text import verdict_lines
from engine.report_verdicts import Judge
from engine.formatting import fmt_bytes, fmt_count, fmt_storage
from engine.terminal_output import is_terminal, print_table
from engine.paths import safe_name
from engine.settings import Settings, StatSettings, ci_label, load_settings
from engine.store import Store, loads
from engine.study import study_record

log = logging.getLogger(__name__)


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
    flips: list[dict] = field(default_factory=list)
    ci: str = "95% CI"

    def summary(self) -> dict:
        return {"study": self.study, "folder": str(self.folder), "complete": self.complete,
                "problems": self.problems,
                "table": [dict(zip(self.table_columns, row)) for row in self.table_rows],
                "significance": self.significance, "flips": self.flips}

    def print_table(self) -> None:
        print_table(self.table_columns, self.table_rows,
                    title=f"study {self.study}: value [{self.ci}] (delta vs teacher)")
        # the primary family answers the study's question; secondary lines only where they decide
        shown = [s for s in self.significance if s.get("family") == "primary"
                 or s["verdict"] not in ("inconclusive", "equivalent")]
        if is_terminal():
            for line in shown:
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
                entry.model = store.model(JobResult.from_row(job).model_id)
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


def _metric_value(entry: ModelEntry, suite: str, name: str) -> float | None:
    row = entry.metrics.get(suite, {}).get((name, ""))
    return row["value"] if row else None


def _value(entry: ModelEntry, h: Headline) -> tuple[float | None, float | None, float | None]:
    """(value, ci_low, ci_high) of the headline figure, or Nones when not measured."""
    row = entry.metrics.get(h.suite, {}).get((h.name, h.subset))
    return (row["value"], row["ci_low"], row["ci_high"]) if row else (None, None, None)


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
    columns = ["model", "method", "params", "non-zero", "disk", "stored as"] + [h.title for h in shown]
    rows, records = [], []
    for entry in entries:
        model = entry.model or {}
        method = entry.kind if entry.kind != "base" else ("teacher" if entry is teacher else "base")
        row = [entry.label, method, fmt_count(model.get("n_params")), fmt_count(model.get("n_nonzero")),
               fmt_bytes(model.get("size_bytes")), fmt_storage(model.get("extra"))]
        record = {"model": entry.label, "method": method, "params": model.get("n_params"),
                  "non_zero": model.get("n_nonzero"), "disk_bytes": model.get("size_bytes"),
                  "stored_as": fmt_storage(model.get("extra")),
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


def _subset_tables(entries: list[ModelEntry]) -> list[str]:
    """Per-subset tables of the fairness headlines that have a few subsets (BOLD domains, RTP
    toxic / non-toxic prompts)."""
    lines = []
    for h in headlines():
        if h.metric.role != "fairness":
            continue
        subsets = sorted({sub for e in entries for (n, sub) in e.metrics.get(h.suite, {})
                          if n == h.name and sub})
        if not subsets or len(subsets) > MAX_SUBSET_COLUMNS:
            continue
        lines += ["", f"## {h.title}, per subset", "", "| model | " + " | ".join(subsets) + " |",
                  "|---|" + "---|" * len(subsets)]
        for entry in entries:
            metrics = entry.metrics.get(h.suite, {})
            cells = []
            for sub in subsets:
                r = metrics.get((h.name, sub))
                cells.append(f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
                             if r and r["value"] is not None and r["ci_low"] is not None else "")
            lines.append(f"| {entry.label} | " + " | ".join(cells) + " |")
        lines += ["", caption(entries, [h.suite])]
    return lines


def _reproduce_lines(record: dict, entries: list[ModelEntry], settings: Settings) -> list[str]:
    lines = ["", "## How to reproduce", "", f"`compfair study {record['source']}` with:", ""]
    lines += [f"- {k} {v}" for k, v in _versions().items()]
    lines += [f"- settings: `{json.dumps(settings.to_dict(), sort_keys=True)}`"]
    lines += ["", "| model | method settings | suite | scorer | data | device | settings |",
              "|---|---|---|---|---|---|---|"]
    for entry in entries:
        method = json.dumps(loads((entry.model or {}).get("method_params"), {}) or {}, sort_keys=True)
        for suite, run in sorted(entry.runs.items()):
            run_settings = loads(run["settings"], {}) or {}
            brief = {k: run_settings.get(k) for k in REPRODUCE_KEYS if run_settings.get(k) is not None}
            reference = (loads(run["summary"], {}) or {}).get("reference_model")
            if reference:
                brief["reference_model"] = reference.get("ref")
            lines.append(f"| {entry.label} | `{method[:120]}` | {suite} | {run['scorer'] or ''} "
                         f"{run['scorer_version'] or ''} | {run['data_source'] or ''} | {run['device'] or ''} "
                         f"| `{json.dumps(brief, sort_keys=True)}` |")
    return lines


REPRODUCE_KEYS = ("samples_per_prompt", "top_p", "temperature", "max_new_tokens", "max_prompts", "seed",
                  "context_length", "stride", "resolved_dtype")
MAX_SUBSET_COLUMNS = 8


def _markdown(record: dict, columns: list[str], rows: list[list[str]], significance: list[dict],
              flips: list[dict], entries: list[ModelEntry], plots: list[Path], problems: list[str],
              settings: Settings, ci: str, gates: list[dict] | None = None) -> str:
    lines = [f"# Study `{record['name']}`", "", record.get("description") or "", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M')} from `{record['source']}`. "
             f"Figures are value [{ci}, bootstrap] (delta vs the teacher).", ""]
    lines += header_lines(entries)
    if problems:
        lines += ["**Incomplete:** " + "; ".join(problems), ""]
    lines += ["## Models x metrics", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    lines += ["", caption(entries, [h.suite for h in headlines()])]
    lines += verdict_lines(significance, flips, settings, gates or [])
    lines += _subset_tables(entries)
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    lines += _reproduce_lines(record, entries, settings)
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


@dataclass(frozen=True)
class StudyJudgement:
    """A study's models with their runs and the report's judgements of them (one family): what
    the report and the TUI's models x metrics view both show."""

    entries: list[ModelEntry]
    teacher: ModelEntry
    problems: list[str]
    significance: list[dict]     # `Judgement.record`s, each with its "suite"
    flips: list[dict]
    gates: list[dict] = field(default_factory=list)   # each model's quality gate (gate_record)


def judge_study(store: Store, record: dict, settings: Settings) -> StudyJudgement:
    """Every model of a study (`study_record`) against its teacher, as the report judges it."""
    entries, problems = _entries(store, record["plan"])
    teacher = next(e for e in entries if e.label == "teacher")
    settings = settings.with_margins(record["plan"].get("margins"), f"study {record['name']}")
    judge = Judge(store, settings)
    for entry in entries:
        if entry is not teacher:
            judge.compare_models(teacher, entry, _metric_value)
    significance = judge.decide()
    return StudyJudgement(entries, teacher, problems, significance, [f.record() for f in judge.flips],
                          list(judge.gates.values()))


def build_report(store: Store, name: str, output_dir: str | Path | None = None,
                 settings: Settings | None = None) -> Report:
    """Gather a study's results from the store and write its report folder. `settings`
    (default: the home's settings.toml) fixes the paired tests' confidence, bootstrap count,
    significance level and adjustment."""
    settings = settings or load_settings(store.home.root)
    stats = settings.statistics
    record = study_record(store, name)
    judged = judge_study(store, record, settings)
    entries, problems, significance, flips = judged.entries, judged.problems, judged.significance, judged.flips
    teacher = judged.teacher
    columns, rows, records = _table(entries, teacher)
    folder = Path(output_dir).expanduser().resolve() if output_dir else \
        store.home.reports_dir / safe_name(name)
    folder.mkdir(parents=True, exist_ok=True)
    plots = make_plots(folder, entries, teacher, _compression, _value)
    ci = runs_ci_label(entries, stats)
    (folder / "report.md").write_text(_markdown(record, columns, rows, significance, flips, entries,
                                                plots, problems, settings, ci, judged.gates))
    _write_csv(folder / "quality_gate.csv", judged.gates)
    _write_csv(folder / "models.csv", records)
    _write_csv(folder / "significance.csv", significance)
    _write_csv(folder / "flips.csv", flips)
    all_metrics = [{"model": e.label, "suite": suite, **{k: x[k] for k in ("name", "subset", "value",
                    "ci_low", "ci_high", "n")}} for e in entries for suite, ms in e.metrics.items()
                   for x in ms.values()]
    _write_csv(folder / "metrics.csv", all_metrics)
    return Report(name, folder, entries, significance, not problems, problems, rows, columns, flips, ci)


def runs_ci_label(entries: list[ModelEntry], stats: StatSettings) -> str:
    """The confidence of the stored intervals: the runs' own (one level when they agree)."""
    levels = {(loads(run["settings"], {}) or {}).get("confidence") for e in entries for run in e.runs.values()}
    levels.discard(None)
    if len(levels) == 1:
        return ci_label(levels.pop())
    return "mixed-level CIs" if levels else stats.ci_label
