"""The model-by-metric table's data, free of Textual: one row per model (the baseline, a study's
teacher, first), one column per suite headline metric and continuation-quality metric (from the
suite registry), each cell a value with its interval and, against the baseline, the delta and
verdict. A study's verdicts are the study report's own (`engine.report.judge_study`: the same
paired tests, one multiple-comparison family, the same sentences); a selection of runs is
judged by `engine.comparison.compare` per suite, as `compfair compare` judges it. Which runs
belong to which model comes from the study's plan or the selection."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from engine import api
from engine.api import MetricSpec, get_suite, load_settings, SpecError, Store, study_record
from tui import format as fmt

# the continuation-quality figures shown beside each generation suite's headlines
QUALITY_COLUMNS = ("continuation_perplexity", "distinct_2", "degenerate_share")


@dataclass(frozen=True)
class Column:
    suite: str
    metric: MetricSpec
    label: str

    @property
    def key(self) -> str:
        return f"{self.suite}:{self.metric.name}"


@dataclass(frozen=True)
class Cell:
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    delta: float | None = None
    # an `engine.verdicts` word: better | worse | equivalent | inconclusive | not evidence |
    # unverified | changed; "" : the baseline, or no paired test
    verdict: str = ""
    sentence: str = ""         # the report's sentence for this comparison
    note: str = ""
    p_value: float | None = None
    p_adjusted: float | None = None
    run_id: int | None = None
    # from the verdict's record (`engine.verdict_records`): the family it was adjusted in, the
    # equivalence margin (relative: a share of the baseline; absolute: in the metric's units),
    # the items that would decide an inconclusive verdict, and the paired items it had
    family: str = ""
    margin: float | None = None
    margin_relative: bool | None = None
    margin_absolute: float | None = None
    items_for_equivalence: int | None = None
    n: int | None = None
    undecided: bool = False

    def detail(self) -> str:
        """`? inconclusive · margin +-0.02 · ~1,234 items would decide (now 100)`."""
        return fmt.verdict_detail(self.verdict, margin=self.margin, margin_relative=self.margin_relative,
                                  margin_absolute=self.margin_absolute,
                                  items_needed=self.items_for_equivalence, n=self.n,
                                  undecided=self.undecided)


def _record_fields(record: dict | None) -> dict:
    """The Cell fields taken from a verdict record (none without one)."""
    if not record:
        return {}
    return {"family": record.get("family") or "", "margin": record.get("margin"),
            "margin_relative": record.get("margin_relative"),
            "margin_absolute": record.get("margin_absolute"),
            "items_for_equivalence": record.get("items_for_equivalence"), "n": record.get("n"),
            "undecided": bool(record.get("undecided_by_resampling"))}


@dataclass
class ModelRow:
    label: str
    model: str
    baseline: bool
    runs: dict[str, int]                       # suite -> run id
    cells: dict[str, Cell] = field(default_factory=dict)   # column key -> cell


@dataclass
class Matrix:
    title: str
    columns: list[Column]
    rows: list[ModelRow]
    warnings: list[str] = field(default_factory=list)

    def sorted_rows(self, key: str | None, descending: bool = False) -> list[ModelRow]:
        """The baseline first, then the others by column `key` (None: plan order; "label":
        by name); models without a value in that column last."""
        base = [r for r in self.rows if r.baseline]
        rest = [r for r in self.rows if not r.baseline]
        if key == "label":
            rest.sort(key=lambda r: r.label.lower(), reverse=descending)
        elif key:
            have = [r for r in rest if _value(r, key) is not None]
            have.sort(key=lambda r: _value(r, key), reverse=descending)  # type: ignore[arg-type, return-value]
            rest = have + [r for r in rest if _value(r, key) is None]
        return base + rest

    def records(self) -> list[dict]:
        """One record per (model, metric) for exports."""
        out = []
        for row in self.rows:
            for col in self.columns:
                c = row.cells.get(col.key)
                if c is None:
                    continue
                out.append({"model": row.label, "model_name": row.model, "suite": col.suite,
                            "metric": col.metric.name, "run_id": c.run_id, "value": c.value,
                            "ci_low": c.ci_low, "ci_high": c.ci_high, "delta_vs_baseline": c.delta,
                            "verdict": c.verdict, "p_value": c.p_value,
                            "p_adjusted": c.p_adjusted, "family": c.family, "margin": c.margin,
                            "margin_relative": c.margin_relative,
                            "margin_absolute": c.margin_absolute,
                            "items_for_equivalence": c.items_for_equivalence,
                            "note": c.note, "sentence": c.sentence})
        return out


def _value(row: ModelRow, key: str) -> float | None:
    cell = row.cells.get(key)
    return None if cell is None else cell.value


# -- which runs ---------------------------------------------------------------------------------
def study_names(store: Store) -> list[str]:
    """The studies recorded in this store, newest first."""
    return [r["name"] for r in store.query("SELECT name FROM studies ORDER BY updated_at DESC, name")]


def study_index(store: Store) -> dict[int, tuple[str, str]]:
    """{eval job id: (study, model label)} over every recorded study (the newest study wins
    for a job that several reuse)."""
    index: dict[int, tuple[str, str]] = {}
    for name in reversed(study_names(store)):
        for ev in study_record(store, name)["plan"].get("evals", []):
            if ev.get("job_id"):
                index[ev["job_id"]] = (name, ev["model"])
    return index


def selection_rows(store: Store, run_ids: Sequence[int]) -> tuple[list[ModelRow], list[str]]:
    """One row per model of the selected runs, the first selected run's model first; a model's
    first selected run of a suite is the one shown."""
    rows: dict[object, ModelRow] = {}
    warnings = []
    for run_id in run_ids:
        run = store.run(run_id)
        if run is None:
            raise api.CompareError(f"run {run_id} does not exist")
        model = store.model(run["model_id"]) if run["model_id"] else None
        name = (model or {}).get("name") or (model or {}).get("source") or f"run {run_id}"
        key = run["model_id"] if run["model_id"] else f"run-{run_id}"
        row = rows.setdefault(key, ModelRow(name, name, not rows, {}))
        if run["suite"] in row.runs:
            warnings.append(f"{name}: several {run['suite']} runs selected; showing run "
                            f"{row.runs[run['suite']]}, not {run_id}")
            continue
        row.runs[run["suite"]] = run_id
    return list(rows.values()), warnings


# -- the table ----------------------------------------------------------------------------------
def _columns(suite_names: set[str]) -> list[Column]:
    """Each suite's headlines, then its continuation-quality metrics, suites in report order."""
    suites = []
    for name in suite_names:
        try:
            suites.append(get_suite(name))
        except SpecError:
            continue
    suites.sort(key=lambda s: (s.order, s.name))
    specs = [(s.name, m) for s in suites
             for m in [*s.headlines(), *(s.metric(q) for q in QUALITY_COLUMNS)] if m is not None]
    unique = {(s, m.name): (s, m) for s, m in specs}.values()
    return [Column(s, m, m.short or fmt.short_name(m.name)) for s, m in unique]


def _relabel(columns: list[Column]) -> list[Column]:
    """A short label shared by two suites' columns gets the suite's short title after it
    (`CPPL (tox)`, `CPPL (BOLD)`; the suite's name when it declares none)."""
    labels = [c.label for c in columns]
    return [c if labels.count(c.label) == 1 else Column(c.suite, c.metric, f"{c.label} ({suite_short(c.suite)})")
            for c in columns]


def suite_short(name: str) -> str:
    """The suite's short title for a column head (`SuiteInfo.short_title`, else its name)."""
    try:
        return get_suite(name).short_title or name
    except SpecError:
        return name


def _quality_runs(suite: str, having: list[ModelRow]) -> list[int]:
    """For a suite that writes no text: each model's first generation run, compared alongside
    so that a verdict is checked against the model's continuation quality (as the report does)."""
    if get_suite(suite).generates_text:
        return []
    extra = []
    for row in having:
        for other, run_id in row.runs.items():
            if other != suite and _generates(other):
                extra.append(run_id)
                break
    return extra


def _generates(suite: str) -> bool:
    try:
        return get_suite(suite).generates_text
    except SpecError:
        return False


def _fill_suite(store: Store, suite: str, rows: list[ModelRow], columns: list[Column],
                warnings: list[str]) -> None:
    """The cells of one suite's columns: values, and deltas against the first row that has a
    run of the suite (the baseline when it does)."""
    having = [r for r in rows if suite in r.runs]
    ids = [r.runs[suite] for r in having]
    names = {c.metric.name: c.key for c in columns if c.suite == suite}
    if len(ids) == 1:
        for m in store.metrics(ids[0]):
            if m["subset"] == "" and m["name"] in names:
                having[0].cells[names[m["name"]]] = Cell(m["value"], m["ci_low"], m["ci_high"],
                                                         run_id=ids[0])
        return
    if not having[0].baseline:
        warnings.append(f"{suite}: the baseline has no run; deltas are against {having[0].label}")
    extra = _quality_runs(suite, having)
    comparison = api.compare(store, ids + extra, ids[0])
    # the comparability of this suite's runs (not of the quality runs beside them), and notes
    every = set(api.comparability_warnings(comparison.runs))
    own = api.comparability_warnings(comparison.runs[:len(ids)])
    warnings.extend(f"{suite}: {w}" for w in own + [w for w in comparison.warnings if w not in every])
    records = {(v.get("run_id"), v["metric"]): v for v in comparison.verdicts if not v.get("subset")}
    for name, subset, cells in comparison.rows:
        if subset or name not in names:
            continue
        for row, run_id, c in zip(having, ids, cells):
            if c.value is None:
                continue
            record = records.get((run_id, name))
            row.cells[names[name]] = Cell(c.value, c.ci_low, c.ci_high, c.delta, c.verdict,
                                          (record or {}).get("sentence", ""), c.note, c.p_value,
                                          c.p_adjusted, run_id, **_record_fields(record))


def build_matrix(store: Store, title: str, rows: list[ModelRow],
                 warnings: Sequence[str] = ()) -> Matrix:
    """Fill the rows' cells and keep the columns that have a value somewhere."""
    suite_names = {s for r in rows for s in r.runs}
    columns = _columns(suite_names)
    notes = list(warnings)
    for suite in sorted(suite_names):
        _fill_suite(store, suite, rows, columns, notes)
    columns = _relabel([c for c in columns if any(c.key in r.cells for r in rows)])
    return Matrix(title, columns, rows, list(dict.fromkeys(notes)))


def study_matrix(store: Store, name: str) -> Matrix:
    """A study's models (plan order, the teacher first) with the report's verdicts, judged
    now (the view shows a cached judgement first: `judged_matrix`)."""
    judged = api.judge_study(store, study_record(store, name), load_settings(store.home.root))
    return judged_matrix(name, judged)


def judged_matrix(name: str, judged) -> Matrix:
    """The table of a study's judgement (`engine.report.StudyJudgement`, fresh or read back
    from `engine.judgement_cache`); needs no store."""
    rows = [ModelRow(e.label, (e.model or {}).get("name") or (e.model or {}).get("source") or "",
                     e is judged.teacher, {suite: run["id"] for suite, run in e.runs.items()})
            for e in judged.entries]
    columns = _columns({s for r in rows for s in r.runs})
    for entry, row in zip(judged.entries, rows):
        _fill_judged(judged, entry, row, columns)
    warnings = list(judged.problems)
    for suite in sorted({s for e in judged.entries for s in e.runs}):
        runs = [e.runs[suite] for e in judged.entries if suite in e.runs]
        warnings += [f"{suite}: {w}" for w in api.comparability_warnings(runs)]
    columns = _relabel([c for c in columns if any(c.key in r.cells for r in rows)])
    return Matrix(f"study {name}", columns, rows, list(dict.fromkeys(warnings)))


def _fill_judged(judged, entry, row: ModelRow, columns: list[Column]) -> None:
    """One model's cells: its values, and the report's judgement of each against the teacher."""
    verdicts = {(v["model"], v.get("suite"), v["metric"]): v for v in judged.significance
                if not v.get("subset")}
    for col in columns:
        metric = entry.metrics.get(col.suite, {}).get((col.metric.name, ""))
        if metric is None or metric["value"] is None:
            continue
        v = verdicts.get((entry.label, col.suite, col.metric.name))
        base = judged.teacher.metrics.get(col.suite, {}).get((col.metric.name, ""))
        delta = v["delta"] if v else (metric["value"] - base["value"] if base and not row.baseline
                                      and base["value"] is not None else None)
        v = v or {}
        row.cells[col.key] = Cell(metric["value"], metric["ci_low"], metric["ci_high"], delta,
                                  v.get("verdict", ""), v.get("sentence", ""), v.get("note", ""),
                                  v.get("p_value"), v.get("p_adjusted"), entry.runs[col.suite]["id"],
                                  **_record_fields(v))


def selection_matrix(store: Store, run_ids: Sequence[int]) -> Matrix:
    rows, warnings = selection_rows(store, run_ids)
    return build_matrix(store, "runs " + ", ".join(map(str, run_ids)), rows, warnings)
