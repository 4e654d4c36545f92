"""Reading the queue: the jobs list, one job's detail, its events and progress, the counts and
the model choices the terminal app shows. Plain SQL reads returning dicts; no writes."""

from __future__ import annotations

from typing import Iterable

from engine import queue
from engine.errors import NotFound
from engine.job_status import ACTIVE, DONE, sql_list
from engine.specs import SPEC_TYPES
from engine.store import Store, loads


def job_view(row: dict) -> dict:
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
    return [job_view(r) | {"depends_on": deps[r["id"]]} for r in rows]


def job_detail(store: Store, job_id: int) -> dict:
    row = queue.job(store, job_id)
    if row is None:
        raise NotFound(f"job {job_id} does not exist")
    run = store.run_for_job(job_id)
    return job_view(row) | {"depends_on": queue.dependencies(store, job_id),
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


def last_events(store: Store, job_id: int, limit: int = 10) -> list[dict]:
    """The job's newest `limit` events (logs and progress), oldest first, `data` decoded."""
    rows = store.query("SELECT * FROM (SELECT * FROM events WHERE job_id = ? ORDER BY id DESC "
                       "LIMIT ?) ORDER BY id", (job_id, limit))
    return [{**r, "data": loads(r["data"], {})} for r in rows]


def job_counts(store: Store) -> dict[str, int]:
    """Jobs per status, and the number of runs (the app's status line and change detector)."""
    counts = queue.counts(store)
    row = store.one("SELECT count(*) AS n, coalesce(max(id), 0) AS last FROM runs")
    counts["_runs"] = row["n"]
    counts["_last_run"] = row["last"]
    return counts


def latest_progress_many(store: Store, job_ids: list[int]) -> dict[int, dict]:
    """The newest progress event of each job in one query: {job_id: {..., data}}."""
    if not job_ids:
        return {}
    marks = ",".join("?" * len(job_ids))
    rows = store.query(
        f"SELECT e.* FROM events e JOIN (SELECT job_id, max(id) AS id FROM events WHERE "
        f"kind = 'progress' AND job_id IN ({marks}) GROUP BY job_id) last ON last.id = e.id",
        list(job_ids))
    return {r["job_id"]: {**r, "data": loads(r["data"], {})} for r in rows}


def model_refs(store: Store) -> list[dict]:
    """What a model field can name: registry models and the models compression jobs make
    (done or still to come), newest first: [{ref, label, kind}]."""
    refs = []
    for m in store.query("SELECT id, name, source, method, n_params, n_nonzero FROM models "
                         "ORDER BY id DESC"):
        derived = m["method"] not in (None, "", "base")
        ref = f"model:{m['id']}" if derived else m["source"]
        label = m["name"] or m["source"]
        refs.append({"ref": ref, "label": label, "kind": m["method"] or "base",
                     "n_params": m["n_params"], "n_nonzero": m["n_nonzero"]})
    kinds = [kind for kind, cls in SPEC_TYPES.items() if cls.produces_model]   # quantize too
    marks = ", ".join("?" * len(kinds))
    for j in store.query(f"SELECT id, kind, label, status FROM jobs WHERE kind IN ({marks}) "
                         f"AND status IN {sql_list(ACTIVE + (DONE,))} ORDER BY id DESC LIMIT 200",
                         kinds):
        refs.append({"ref": f"job:{j['id']}", "label": j["label"] or f"{j['kind']} job {j['id']}",
                     "kind": f"{j['kind']} job ({j['status']})", "n_params": None,
                     "n_nonzero": None})
    return refs
