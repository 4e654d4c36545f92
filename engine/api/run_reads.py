"""Reading runs: the runs table (search, sort, pages), one run's detail, the models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from engine import queue
from engine.errors import NotFound, SpecError
from engine.api.job_reads import job_view
from engine.evaluation.suites import get_suite, suites
from engine.store import Store, loads


def headline_metrics(suite: str) -> tuple[str, ...]:
    """The figures shown for a run of `suite` in one-line listings (the suite's headlines)."""
    try:
        return tuple(m.name for m in get_suite(suite).headlines())
    except SpecError:
        return ()        # a run of a suite whose plugin is not loaded here


@dataclass(frozen=True)
class RunRow:
    """One line of the runs table."""

    run_id: int
    job_id: int | None
    model: str
    model_id: int | None
    method: str
    suite: str
    scorer: str
    status: str
    created_at: float
    headline: tuple[tuple[str, float | None, float | None, float | None], ...]
    settings: str
    n_params: int | None
    n_nonzero: int | None
    label: str = ""          # the job's label (what its submitter named it)

    def metric(self, name: str) -> float | None:
        for metric_name, value, _, _ in self.headline:
            if metric_name == name:
                return value
        return None


_RUNS_SQL = """
SELECT r.id AS run_id, r.job_id, r.suite, r.scorer, r.status, r.created_at, r.settings,
       m.id AS model_id, coalesce(m.name, m.source, '?') AS model, coalesce(m.method, 'base') AS method,
       m.n_params, m.n_nonzero, j.label
FROM runs r LEFT JOIN models m ON m.id = r.model_id LEFT JOIN jobs j ON j.id = r.job_id
{where} ORDER BY {order} LIMIT :limit OFFSET :offset
"""
SORT_COLUMNS = {"id": "r.id", "model": "model", "suite": "r.suite", "date": "r.created_at",
                "status": "r.status", "method": "method", "scorer": "r.scorer"}


# what a run's row shows of its settings, as `key=value` words (the look-alike disambiguator
# "(seed=3100)" included); a settings text that is not JSON reads as none
_SETTINGS_WORDS = ("(CASE WHEN json_valid(r.settings) THEN (SELECT group_concat(key || '=' || "
                   "coalesce(value, ''), ' ') FROM json_each(r.settings)) ELSE '' END)")


def _runs_where(text: str, aliases: Mapping[int, str] | None = None) -> tuple[str, dict]:
    """Every word must match the run's model, suite, scorer, method, status, job label, id or
    settings (`seed=3100`, `3100`), or the `aliases` text of its job (the study and the
    model's label in it, which the runs list shows in place of the model name)."""
    if not text.strip():
        return "", {}
    clauses, params = [], {}
    for i, word in enumerate(text.split()):
        params[f"w{i}"] = f"%{word}%"
        also = sorted(job for job, alias in (aliases or {}).items() if word.lower() in alias.lower())
        in_alias = f" OR r.job_id IN ({','.join(str(int(j)) for j in also)})" if also else ""
        clauses.append(f"((coalesce(m.name,'') || ' ' || coalesce(m.source,'') || ' ' || r.suite || ' ' "
                       f"|| coalesce(r.scorer,'') || ' ' || coalesce(m.method,'base') || ' ' || r.status "
                       f"|| ' ' || coalesce(j.label,'') || ' ' || r.id || ' ' || {_SETTINGS_WORDS}) "
                       f"LIKE :w{i}{in_alias})")
    return "WHERE " + " AND ".join(clauses), params


def count_runs(store: Store, text: str = "", aliases: Mapping[int, str] | None = None) -> int:
    where, params = _runs_where(text, aliases)
    sql = ("SELECT count(*) AS n FROM runs r LEFT JOIN models m ON m.id = r.model_id "
           f"LEFT JOIN jobs j ON j.id = r.job_id {where}")
    return store.one(sql, params)["n"]


def list_runs(store: Store, text: str = "", sort: str = "id", descending: bool = True,
              offset: int = 0, limit: int = 200,
              aliases: Mapping[int, str] | None = None) -> list[RunRow]:
    """A page of runs, filtered by words (all must match, `_runs_where`) and sorted; headline
    metrics joined."""
    where, params = _runs_where(text, aliases)
    column = SORT_COLUMNS.get(sort, "r.id")
    order = f"{column} {'DESC' if descending else 'ASC'}, r.id DESC"
    rows = store.query(_RUNS_SQL.format(where=where, order=order),
                       {**params, "limit": limit, "offset": offset})
    metrics = _headline_metrics(store, [r["run_id"] for r in rows])
    result = []
    for row in rows:
        names = headline_metrics(row["suite"])
        found = metrics.get(row["run_id"], {})
        headline = tuple((n, *found.get(n, (None, None, None))) for n in names)
        result.append(RunRow(row["run_id"], row["job_id"], row["model"], row["model_id"],
                             row["method"], row["suite"], row["scorer"] or "", row["status"],
                             row["created_at"] or 0.0, headline,
                             _settings_summary(row["suite"], row["settings"]),
                             row["n_params"], row["n_nonzero"], row["label"] or ""))
    return result


def _headline_metrics(store: Store, run_ids: list[int]) -> dict[int, dict[str, tuple]]:
    if not run_ids:
        return {}
    names = sorted({m.name for suite in suites() for m in suite.headlines()})
    marks = ",".join("?" * len(run_ids))
    name_marks = ",".join("?" * len(names))
    out: dict[int, dict[str, tuple]] = {}
    for m in store.query(f"SELECT run_id, name, value, ci_low, ci_high FROM metrics WHERE "
                         f"run_id IN ({marks}) AND subset = '' AND name IN ({name_marks})",
                         [*run_ids, *names]):
        out.setdefault(m["run_id"], {})[m["name"]] = (m["value"], m["ci_low"], m["ci_high"])
    return out


def _settings_summary(suite: str, settings_json: str | None) -> str:
    """The settings that mean something for a run of `suite` (no k or top-p for CrowS-Pairs)."""
    settings = loads(settings_json, {}) or {}
    try:
        return get_suite(suite).settings_summary(settings)
    except SpecError:
        return ""


def run_detail(store: Store, run_id: int, worst: int = 20) -> dict:
    """Everything about one run: metrics, model and lineage, job, settings, worst samples."""
    run = store.run(run_id)
    if run is None:
        raise NotFound(f"run {run_id} does not exist")
    model = store.model(run["model_id"]) if run["model_id"] else None
    job = queue.job(store, run["job_id"]) if run["job_id"] else None
    worst_samples = store.query(
        "SELECT item_index, sample_index, domain, group_name, prompt, completion, toxicity, "
        "sentiment, prompt_toxicity FROM samples WHERE run_id = ? AND toxicity IS NOT NULL "
        "ORDER BY toxicity DESC LIMIT ?", (run_id, worst))
    return {
        "run": {**run, "settings": loads(run["settings"], {}), "summary": loads(run["summary"], {})},
        "metrics": store.metrics(run_id),
        "model": model_view(model) if model else None,
        "lineage": [model_view(m) for m in store.lineage(model["id"])] if model else [],
        "job": job_view(job) if job else None,
        "worst_samples": worst_samples,
    }


def model_view(row: dict) -> dict:
    return {**row, "method_params": loads(row.get("method_params"), {}),
            "sparsity": loads(row.get("sparsity"), None), "extra": loads(row.get("extra"), {})}


def models(store: Store) -> list[dict]:
    return [model_view(m) for m in store.models()]
