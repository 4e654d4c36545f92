"""`compfair compare` (and the TUI's compare screen): runs side by side with deltas against a
baseline run, and, for runs of one suite on the same items, the same paired tests and
quality-aware verdicts as the study report (`engine.verdicts`, one implementation).

Which rows get a verdict: every metric that the suite can pair item by item, overall and in each
of the suite's groups (`Suite.group_subsets`: RTP's toxic and non-toxic prompts, CrowS-Pairs'
bias types, BOLD's groups). The families adjusted for multiple comparisons are the report's
(`engine.verdict_families`): overall headline fairness metrics per model (primary), every other
line together (secondary, groups included). Other subset rows and metrics without a paired form
show their values and deltas only ("descriptive" in the app)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Sequence

from engine.errors import CompareError, UserError
from engine.evaluation.suites import find_metric, get_suite
from engine.quality_gate import QualityFigures, gate_against
from engine.report_verdicts import Judge, with_judge
from engine.settings import Settings, load_settings
from engine.specs import SpecError
from engine.store import Store, loads
from engine.verdict_families import decide_all
from engine.verdicts import Judgement


@dataclass(frozen=True)
class CompareCell:
    value: float | None
    ci_low: float | None
    ci_high: float | None
    delta: float | None
    # an `engine.verdicts` word ("" : the baseline, or no paired test for this row)
    verdict: str
    p_value: float | None = None
    p_adjusted: float | None = None
    note: str = ""


@dataclass
class Comparison:
    runs: list[dict]
    baseline_id: int
    rows: list[tuple[str, str, list[CompareCell]]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    verdicts: list[dict] = field(default_factory=list)     # the overall judgements, as records
    group_verdicts: list[dict] = field(default_factory=list)   # those of the suite's groups
    flips: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def to_records(self) -> list[dict]:
        records = []
        for name, subset, cells in self.rows:
            for run, cell in zip(self.runs, cells):
                records.append({"metric": name, "subset": subset, "run_id": run["id"],
                                "model": run["model"], "value": cell.value, "ci_low": cell.ci_low,
                                "ci_high": cell.ci_high, "delta_vs_baseline": cell.delta,
                                "verdict": cell.verdict, "p_value": cell.p_value,
                                "p_adjusted": cell.p_adjusted, "note": cell.note})
        return records


def _load_runs(store: Store, run_ids: Sequence[int]) -> list[dict]:
    runs = []
    for run_id in run_ids:
        row = store.one("SELECT r.*, coalesce(m.name, m.source) AS model FROM runs r "
                        "LEFT JOIN models m ON m.id = r.model_id WHERE r.id = ?", (run_id,))
        if row is None:
            raise CompareError(f"run {run_id} does not exist")
        runs.append(row)
    return runs


def _quality(store: Store, run: dict, runs: list[dict], metrics: dict[int, dict],
             baseline_model_id: int | None) -> QualityFigures:
    """A run's quality figures: its own continuations' (else those of a compared generation run of
    the same model) and the held-out perplexity of a compared perplexity run of the model."""
    same_model = [run] + [o for o in runs if o["model_id"] == run["model_id"] and o["id"] != run["id"]]
    figures = QualityFigures()
    for other in same_model:
        found = QualityFigures.from_metrics(metrics[other["id"]])
        if found.measured:
            figures = with_judge(found, other, baseline_model_id)
            break
    for other in same_model:
        row = metrics[other["id"]].get(("perplexity", ""))
        if row is not None:
            return figures.with_(heldout_perplexity=row["value"], heldout_source=f"run {other['id']}")
    return figures


def _gate(store: Store, base: dict, run: dict, runs: list[dict], metrics: dict[int, dict],
          settings: Settings):
    return gate_against(store, _quality(store, base, runs, metrics, base["model_id"]),
                        _quality(store, run, runs, metrics, base["model_id"]), base["model_id"],
                        run["model_id"], settings.quality)


def _judge(store: Store, runs: list[dict], base: dict, metrics: dict[int, dict],
           settings: Settings) -> tuple[dict[tuple[int, str, str], Judgement], list[dict]]:
    """Paired judgements of every run against the baseline, keyed by (run id, metric, subset)."""
    judge = Judge(store, settings)
    judged: dict[tuple[int, str], Judgement] = {}
    flips: list[dict] = []
    for run in runs:
        if run["id"] == base["id"] or run["suite"] != base["suite"]:
            continue
        try:
            suite = get_suite(run["suite"])
        except SpecError:
            continue
        quality = _gate(store, base, run, runs, metrics, settings)
        rows_a, rows_b = judge.samples(base), judge.samples(run)
        groups = set(suite.group_subsets(rows_a)) if rows_a else set()
        for (name, subset), metric in metrics[run["id"]].items():
            spec = suite.metric(name)
            base_metric = metrics[base["id"]].get((name, subset))
            if (subset and subset not in groups) or spec is None or not spec.paired or base_metric is None:
                continue
            j = judge.judgement(suite, name, rows_a, rows_b, f"run {run['id']}", base_metric["value"],
                                metric["value"], quality, subset=subset, extra={"run_id": run["id"]})
            if j is not None:
                judged[(run["id"], name, subset)] = j
        row = judge.flips_of(suite, f"run {run['id']}", rows_a, rows_b)
        if row is not None:
            flips.append({"run_id": run["id"], **row.record()})
    decide_all(list(judged.values()), settings.statistics)
    return judged, flips


def compare(store: Store, run_ids: Sequence[int], baseline_id: int | None = None,
            settings: Settings | None = None) -> Comparison:
    """Side-by-side metrics of `run_ids` with deltas and paired, quality-aware verdicts against
    the baseline run (default: the first). Warns when the runs are not comparable."""
    if len(run_ids) < 2:
        raise CompareError("compare needs at least two run ids")
    settings = settings or load_settings(store.home.root)
    runs = _load_runs(store, run_ids)
    baseline_id = baseline_id if baseline_id is not None else run_ids[0]
    if baseline_id not in run_ids:
        raise CompareError(f"baseline run {baseline_id} is not among the compared runs")
    comparison = Comparison(runs, baseline_id, settings=settings.to_dict())
    comparison.warnings = comparability_warnings(runs)
    metrics = {r["id"]: {(m["name"], m["subset"]): m for m in store.metrics(r["id"])} for r in runs}
    base = next(r for r in runs if r["id"] == baseline_id)
    judged, comparison.flips = _judge(store, runs, base, metrics, settings)
    records = [j.record(settings.statistics) for j in judged.values()]
    comparison.verdicts = [r for r in records if not r["subset"]]
    comparison.group_verdicts = [r for r in records if r["subset"]]
    keys = sorted({k for m in metrics.values() for k in m}, key=lambda k: (k[1] != "", k[0], k[1]))
    for name, subset in keys:
        base_metric = metrics[baseline_id].get((name, subset))
        cells = []
        for run in runs:
            metric = metrics[run["id"]].get((name, subset))
            if metric is None:
                cells.append(CompareCell(None, None, None, None, ""))
                continue
            delta = (metric["value"] - base_metric["value"]
                     if base_metric and run["id"] != baseline_id
                     and None not in (metric["value"], base_metric["value"]) else None)
            j = judged.get((run["id"], name, subset))
            cells.append(CompareCell(metric["value"], metric["ci_low"], metric["ci_high"], delta,
                                     j.verdict if j else "", j.tested.p_value if j else None,
                                     None if j is None or math.isnan(j.p_adjusted) else j.p_adjusted,
                                     j.note if j else ""))
        comparison.rows.append((name, subset, cells))
    if any(j.metric.role == "fairness" and (j.quality is None or not j.quality.measured)
           for j in judged.values()):
        comparison.warnings.append("no quality measure (held-out perplexity, or continuations' "
                                   "distinct-2 / degenerate share) for some of these runs: a lower "
                                   "toxicity or bias there is 'unverified', never 'better'")
    return comparison


def direction(name: str, suite: str | None = None) -> tuple[str, float | None]:
    """("lower" | "higher" | "target" | "none", target) of a metric, from the registry."""
    spec = find_metric(name.split("/")[0], suite)
    if spec is None:
        return "none", None
    return spec.direction, spec.target


# what a run stored before a setting existed meant
_SETTING_DEFAULTS = {"backend": "transformers"}


def _comparable_keys(suite_names: set[str]) -> tuple[str, ...]:
    """The settings whose difference makes runs of these suites incomparable (the suites' own)."""
    keys: dict[str, None] = {}
    for name in sorted(suite_names):
        try:
            keys.update(dict.fromkeys(get_suite(name).comparable_settings))
        except SpecError:
            continue
    return tuple(keys)


def comparability_warnings(runs: list[dict]) -> list[str]:
    """Why these runs may not be comparable: different suites, scorers or settings."""
    warnings = []
    suites = {r["suite"] for r in runs}
    if len(suites) > 1:
        warnings.append(f"runs are from different suites: {', '.join(sorted(suites))}")
    scorers = {f"{r['scorer']} {r['scorer_version'] or ''}".strip() for r in runs if r["scorer"]}
    if len(scorers) > 1:
        warnings.append(f"runs were scored by different scorers: {', '.join(sorted(scorers))}; "
                        "toxicity figures are not comparable across scorers")
    settings = [loads(r["settings"], {}) or {} for r in runs]
    for key in _comparable_keys(suites):
        values = {json.dumps(s.get(key, _SETTING_DEFAULTS.get(key)), sort_keys=True) for s in settings}
        if len(values) > 1:
            warnings.append(f"runs differ in {key}: {', '.join(sorted(values))}")
    return warnings
