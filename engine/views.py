"""Small read-only views the terminal app needs beyond `engine.api`: pure SQL reads that return
plain dicts. No writes, no Textual."""

from __future__ import annotations

from engine import queue
from engine.specs import SPEC_TYPES
from engine.store import Store, loads
from engine.job_status import ACTIVE, DONE, sql_list


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
