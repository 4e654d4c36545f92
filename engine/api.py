"""The engine's public API: what the CLI and the TUI call. Reads the store, submits and
cancels jobs, starts a detached worker; never computes a metric itself."""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from engine import queue
from engine.errors import CompareError, NotFound, UserError
from engine.paths import Home
from engine.specs import JobSpec, SpecError, spec_from_dict
from engine.store import Store, loads
from engine.launcher import alive_workers, ensure_worker
from engine.duplicates import refuse_duplicates
from engine.interop.tracking import record_targets
from engine.scale.shards import check_shards, submit_sharded
from engine.tracking_targets import Target
# the one validation entry (CLI submit, the TUI form, studies); re-exported as part of this API
from engine.validation import validate  # noqa: F401
from engine.evaluation.suites import get_suite, suites
# the compression methods and quantization formats a form may offer
from engine.compression.methods import method_names  # noqa: F401,E402
# the fields of a job kind that only some of its methods read (the form hides the others')
from engine.catalog.method_info import method_fields, method_specific_fields  # noqa: F401,E402
from engine.compression.quant import GGUF_FORMATS, RTN_BITS  # noqa: F401,E402
# identical submissions (a spec that already ran: engine.duplicates)
from engine.duplicates import Duplicate, finished_duplicates  # noqa: F401,E402
# model names and study labels as references, and the names shown for model:ID / job:ID
from engine.model_names import canonical_spec, ref_names, with_names  # noqa: F401,E402
# what a submission costs (generations, time measured on finished runs; engine.planning_cost)
from engine.planning_cost import SubmitEstimate, estimate_specs  # noqa: F401,E402
# comparing lives in engine.comparison; re-exported as part of this API
from engine.comparison import CompareCell, Comparison, comparability_warnings, compare
from engine.judgement_cache import command, current_key, load
from engine.model_paths import for_display
from engine.scale.worker_view import worker_views as views_of

log = logging.getLogger(__name__)


def judge_study(store: Store, record: dict, settings):
    """A study's models and the report's judgements of them (`engine.report.judge_study`: one
    family, the report's sentences), for views that show them beside the report (the TUI's
    models x metrics). Imported on use: the report pulls in numpy and the plots."""
    from engine.report import judge_study as judge
    return judge(store, record, settings)


def study_judgement_key(store: Store, name: str) -> str:
    """What a study's judgement depends on now, hashed (`engine.judgement_cache`): a cached
    judgement under another key is stale."""
    return current_key(store, name)


def cached_study_judgement(store: Store, name: str):
    """The last judgement of study `name` kept under the home (`engine.judgement_cache.Cached`:
    `.judged`, `.key`, `.computed_at`), whatever its key; None when there is none."""
    return load(store.home, name)


def study_judgement_command(store: Store, name: str) -> list[str]:
    """The command of a child process that judges study `name` afresh and caches the result
    (its progress as JSON lines on its stdout; kill it to abandon the work)."""
    return command(store.home, name)


def headline_metrics(suite: str) -> tuple[str, ...]:
    """The figures shown for a run of `suite` in one-line listings (the suite's headlines)."""
    try:
        return tuple(m.name for m in get_suite(suite).headlines())
    except SpecError:
        return ()        # a run of a suite whose plugin is not loaded here


def paths_here(text: str | None, home: Home) -> str | None:
    """`text` (a log line, a model's path or source, a spec value) with every path into another
    copy of this home named as this home's own file (`engine.model_paths.for_display`): a copied
    home shows the files it reads."""
    return for_display(text, home.root)


def open_store(home: str | None = None) -> Store:
    return Store(Home.resolve(home))


# -- submitting -----------------------------------------------------------------------------
def submit(store: Store, spec: JobSpec, *, depends_on: Sequence[int] = (), priority: int = 0,
           study: str | None = None, start_worker: bool = True) -> int:
    """Queue one spec as it is (no `validate`: callers that take user input validate first,
    or use `submit_all`); returns the job id."""
    job_id = queue.submit(store, spec, depends_on=list(depends_on), priority=priority, study=study)
    if start_worker:
        ensure_worker(store)
    return job_id


def submit_jobs(store: Store, specs: Sequence[JobSpec], *, depends_on: Sequence[int] = (),
                priority: int = 0, shards: int = 1, rerun: bool = False,
                log_to: Sequence[Target] = (), start_worker: bool = True) -> list[int]:
    """The one way user-given jobs are queued (`compfair submit`, the terminal app's form).

    Model names and study labels become the references they stand for first (`model:ID`,
    `job:ID`: `canonical_spec`, as the form does), so a job given by name is the same job as
    one given by its id. Checks everything next, so a bad spec is a `UserError` and nothing is
    queued: a spec that already ran (unless `rerun`; `engine.duplicates`), the shard count,
    then every spec (`validate`: references, scorers, data files). Then queues each (split into `shards` eval
    shards when > 1, `engine.scale.shards`), records the trackers each finished job is logged
    to before any worker can finish it, and starts a worker. Returns the job ids in order."""
    specs = [canonical_spec(store, spec) for spec in specs]   # AmbiguousName: a UserError
    if not rerun:
        refuse_duplicates(store, specs)
    for spec in specs if shards != 1 else ():
        check_shards(spec, shards)
    validate(store, specs)
    job_ids = []
    for spec in specs:
        if shards == 1:
            job_ids.append(queue.submit(store, spec, depends_on=list(depends_on), priority=priority))
            continue
        job_id, parts = submit_sharded(store, spec, shards, depends_on=depends_on, priority=priority)
        log.info("job %s: %d shards, jobs %s", job_id, len(parts), ", ".join(map(str, parts)))
        job_ids.append(job_id)
    record_targets(store, job_ids, log_to)
    if start_worker:
        ensure_worker(store)
    return job_ids


def submit_all(store: Store, specs: Sequence[JobSpec], *, depends_on: Sequence[int] = (),
               priority: int = 0, start_worker: bool = True) -> list[int]:
    """`submit_jobs` that queues a spec again even when it already ran (studies, tests)."""
    return submit_jobs(store, specs, depends_on=depends_on, priority=priority, rerun=True,
                       start_worker=start_worker)


def expand_sweep(base: dict[str, Any], sweep: dict[str, Sequence[Any]]) -> list[JobSpec]:
    """One spec per combination of the swept values (a sweep is one submission)."""
    specs = [dict(base)]
    for key, values in sweep.items():
        specs = [{**s, key: v} for s in specs for v in values]
    return [spec_from_dict(s) for s in specs]


def cancel(store: Store, job_id: int) -> str:
    return queue.cancel(store, job_id)


def retry(store: Store, job_id: int, start_worker: bool = True) -> None:
    queue.retry(store, job_id)
    if start_worker:
        ensure_worker(store)


def move(store: Store, job_id: int, by: int) -> int:
    """Raise (by > 0) or lower a queued job's priority; returns the new priority."""
    row = queue.job(store, job_id)
    if row is None:
        raise NotFound(f"job {job_id} does not exist")
    new = (row["priority"] or 0) + by
    queue.set_priority(store, job_id, new)
    return new


def workers(store: Store) -> list[dict]:
    return alive_workers(store)


def worker_views(store: Store):
    """Every live worker with its device, current job, progress and memory
    (engine.scale.worker_view.WorkerView rows): what `compfair workers` and the jobs screen show."""
    return views_of(store)


# -- reading ----------------------------------------------------------------------------------
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
        "model": _model_view(model) if model else None,
        "lineage": [_model_view(m) for m in store.lineage(model["id"])] if model else [],
        "job": _job_view(job) if job else None,
        "worst_samples": worst_samples,
    }


def _model_view(row: dict) -> dict:
    return {**row, "method_params": loads(row.get("method_params"), {}),
            "sparsity": loads(row.get("sparsity"), None), "extra": loads(row.get("extra"), {})}


def _job_view(row: dict) -> dict:
    return {**row, "spec": loads(row["spec"], {}), "result": loads(row.get("result"), {}),
            "depends_on": None}


def list_jobs(store: Store, statuses: Iterable[str] = (), limit: int = 200) -> list[dict]:
    """The queue as the CLI and the TUI list it (running, queued, then ended, newest first),
    each job with its dependencies; two queries whatever the number of jobs (polled often)."""
    statuses = tuple(statuses)
    where = f"WHERE status IN ({','.join('?' * len(statuses))})" if statuses else ""
    rows = store.query(
        f"SELECT * FROM jobs {where} ORDER BY CASE status WHEN 'running' THEN 0 WHEN 'queued' "
        f"THEN 1 ELSE 2 END, CASE WHEN status IN ('running','queued') THEN -priority ELSE 0 END, "
        f"CASE WHEN status IN ('running','queued') THEN id ELSE -id END LIMIT ?",
        (*statuses, limit))
    deps = queue.dependencies_of(store, [r["id"] for r in rows])     # one query, not one per row
    return [_job_view(r) | {"depends_on": deps[r["id"]]} for r in rows]


def job_detail(store: Store, job_id: int) -> dict:
    row = queue.job(store, job_id)
    if row is None:
        raise NotFound(f"job {job_id} does not exist")
    run = store.run_for_job(job_id)
    return _job_view(row) | {"depends_on": queue.dependencies(store, job_id),
                             "run_id": run["id"] if run else None,
                             "last_progress": latest_progress(store, job_id)}


def latest_progress(store: Store, job_id: int) -> dict | None:
    row = store.one("SELECT * FROM events WHERE job_id = ? AND kind = 'progress' ORDER BY id DESC "
                    "LIMIT 1", (job_id,))
    if row is None:
        return None
    return {**row, "data": loads(row["data"], {})}


def events(store: Store, job_id: int, after_id: int = 0, limit: int = 500) -> list[dict]:
    return [{**e, "data": loads(e["data"], {})} for e in store.events(job_id, after_id, limit)]


def models(store: Store) -> list[dict]:
    return [_model_view(m) for m in store.models()]


# -- exporting --------------------------------------------------------------------------------
def export_records(records: list[dict], fmt: str) -> str:
    """Render records as csv, json or md (Markdown table)."""
    if fmt == "json":
        return json.dumps(records, indent=2, default=str)
    if not records:
        return ""
    columns = list(records[0].keys())
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(records)
        return buffer.getvalue()
    if fmt == "md":
        def cell(v: Any) -> str:
            if isinstance(v, float):
                return f"{v:.4g}"
            return "" if v is None else str(v).replace("|", "\\|")
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in records]
        return "\n".join(lines) + "\n"
    raise UserError(f"export format {fmt!r} is unknown; choose csv, json or md")


def metric_records(store: Store, run_ids: Sequence[int] | None = None) -> list[dict]:
    """Every stored metric (of `run_ids`, or all) with its run's model, suite and scorer."""
    where, params = "", []
    if run_ids:
        where = f"WHERE r.id IN ({','.join('?' * len(run_ids))})"
        params = list(run_ids)
    return store.query(
        "SELECT r.id AS run_id, coalesce(mo.name, mo.source) AS model, mo.method, r.suite, "
        "r.scorer, x.name AS metric, x.subset, x.value, x.ci_low, x.ci_high, x.n "
        f"FROM metrics x JOIN runs r ON r.id = x.run_id LEFT JOIN models mo ON mo.id = r.model_id "
        f"{where} ORDER BY r.id, x.name, x.subset", params)

