"""The persistent job queue (the `jobs` table).

A job goes queued -> running -> done | failed | cancelled. Claiming is one atomic
`UPDATE ... RETURNING`, so two workers never run the same job. A job waits until every job it
depends on is done; if one of them fails or is cancelled, the dependant fails with that reason."""

from __future__ import annotations

import os
import time

from engine.specs import JobSpec, spec_from_json
from engine.store import Store, dumps, loads

STALE_HEARTBEAT_S = 120.0
ACTIVE = ("queued", "running")


def submit(store: Store, spec: JobSpec, *, depends_on: list[int] = (), priority: int = 0,
           study: str | None = None, max_attempts: int = 3) -> int:
    """Queue `spec`; returns the job id. `job:ID` model references add dependencies."""
    deps = set(depends_on)
    for ref in spec.model_refs().values():
        if ref.startswith("job:") and ref[4:].isdigit():
            deps.add(int(ref[4:]))
    for dep in deps:
        if store.one("SELECT id FROM jobs WHERE id = ?", (dep,)) is None:
            raise ValueError(f"job {dep} (a dependency) does not exist")
    with store.conn:
        job_id = store.db["jobs"].insert({
            "kind": spec.kind, "spec": spec.to_json(), "spec_hash": spec.spec_hash(),
            "label": spec.label or None, "study": study, "status": "queued",
            "priority": priority, "created_at": time.time(), "attempts": 0,
            "max_attempts": max_attempts, "cancel_requested": 0, "progress": 0.0,
        }).last_pk
        store.db["job_deps"].insert_all(({"job_id": job_id, "depends_on": d} for d in sorted(deps)),
                                        ignore=True)
    return job_id


def job(store: Store, job_id: int) -> dict | None:
    return store.one("SELECT * FROM jobs WHERE id = ?", (job_id,))


def job_spec(row: dict) -> JobSpec:
    return spec_from_json(row["spec"])


def dependencies(store: Store, job_id: int) -> list[int]:
    return [r["depends_on"] for r in store.query(
        "SELECT depends_on FROM job_deps WHERE job_id = ? ORDER BY depends_on", (job_id,))]


def claim(store: Store, worker_id: str) -> dict | None:
    """Atomically take the highest-priority runnable job, or None."""
    now = time.time()
    rows = store.query(
        """
        UPDATE jobs SET status = 'running', worker_id = :worker, started_at = :now,
               heartbeat_at = :now, attempts = attempts + 1, error = NULL
        WHERE id = (
            SELECT j.id FROM jobs j
            WHERE j.status = 'queued' AND j.cancel_requested = 0
              AND NOT EXISTS (SELECT 1 FROM job_deps d JOIN jobs p ON p.id = d.depends_on
                              WHERE d.job_id = j.id AND p.status != 'done')
            ORDER BY j.priority DESC, j.id LIMIT 1)
          AND status = 'queued'
        RETURNING *
        """, {"worker": worker_id, "now": now})
    store.conn.commit()
    return rows[0] if rows else None


def heartbeat(store: Store, job_id: int, progress: float | None = None,
              message: str | None = None) -> None:
    fields = {"heartbeat_at": time.time()}
    if progress is not None:
        fields["progress"] = max(0.0, min(1.0, progress))
    if message is not None:
        fields["progress_message"] = message
    with store.conn:
        store.db["jobs"].update(job_id, fields)


def finish(store: Store, job_id: int, status: str, *, error: str | None = None,
           result: dict | None = None) -> None:
    fields = {"status": status, "finished_at": time.time(), "error": error}
    if status == "done":
        fields["progress"] = 1.0
    if result is not None:
        fields["result"] = dumps(result)
    with store.conn:
        store.db["jobs"].update(job_id, fields)


def set_result(store: Store, job_id: int, result: dict) -> None:
    with store.conn:
        store.db["jobs"].update(job_id, {"result": dumps(result)})


def cancel(store: Store, job_id: int) -> str:
    """Cancel a queued job at once; ask a running one to stop between batches.
    Returns the job's status afterwards."""
    row = job(store, job_id)
    if row is None:
        raise ValueError(f"job {job_id} does not exist")
    with store.conn:
        if row["status"] == "queued":
            store.db["jobs"].update(job_id, {"status": "cancelled", "finished_at": time.time(),
                                             "cancel_requested": 1, "error": "cancelled by user"})
            return "cancelled"
        if row["status"] == "running":
            store.db["jobs"].update(job_id, {"cancel_requested": 1})
            return "cancelling"
    return row["status"]


def cancel_requested(store: Store, job_id: int) -> bool:
    row = store.one("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,))
    return bool(row and row["cancel_requested"])


def retry(store: Store, job_id: int) -> None:
    """Put a failed or cancelled job back in the queue (its stored samples are kept)."""
    row = job(store, job_id)
    if row is None:
        raise ValueError(f"job {job_id} does not exist")
    if row["status"] not in ("failed", "cancelled"):
        raise ValueError(f"job {job_id} is {row['status']}; only failed or cancelled jobs retry")
    with store.conn:
        store.db["jobs"].update(job_id, {"status": "queued", "cancel_requested": 0, "error": None,
                                         "attempts": 0, "finished_at": None})


def set_priority(store: Store, job_id: int, priority: int) -> None:
    with store.conn:
        store.db["jobs"].update(job_id, {"priority": priority})


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_alive(row: dict, stale_after: float = STALE_HEARTBEAT_S) -> bool:
    """A worker row is alive when its heartbeat is fresh and (on this host) its pid exists."""
    if row.get("status") == "stopped":
        return False
    if time.time() - (row.get("heartbeat_at") or 0) > stale_after:
        return False
    if row.get("host") == os.uname().nodename and row.get("pid"):
        return _pid_alive(row["pid"])
    return True


def recover_orphans(store: Store, stale_after: float = STALE_HEARTBEAT_S) -> list[int]:
    """Requeue running jobs whose worker is gone (dead pid or stale heartbeat); a job that has
    used up its attempts fails with the reason. Returns the ids requeued or failed."""
    workers = {w["id"]: w for w in store.query("SELECT * FROM workers")}
    touched = []
    for row in store.query("SELECT * FROM jobs WHERE status = 'running'"):
        worker = workers.get(row["worker_id"])
        alive = worker is not None and worker_alive(worker, stale_after)
        if alive and time.time() - (row["heartbeat_at"] or 0) <= stale_after:
            continue
        reason = f"worker {row['worker_id']} died while running the job"
        with store.conn:
            if row["cancel_requested"]:
                store.db["jobs"].update(row["id"], {"status": "cancelled", "error": "cancelled by user",
                                                    "finished_at": time.time()})
            elif row["attempts"] >= row["max_attempts"]:
                store.db["jobs"].update(row["id"], {
                    "status": "failed", "finished_at": time.time(),
                    "error": f"{reason}; gave up after {row['attempts']} attempts"})
            else:
                store.db["jobs"].update(row["id"], {"status": "queued", "worker_id": None,
                                                    "error": f"{reason}; requeued"})
        store.add_event(row["id"], f"{reason}; " + ("requeued to resume"
                        if row["attempts"] < row["max_attempts"] else "marked failed"),
                        level="warning")
        touched.append(row["id"])
    return touched


def fail_blocked(store: Store) -> list[int]:
    """Fail queued jobs whose dependency failed or was cancelled (they can never run)."""
    rows = store.query(
        """SELECT d.job_id, p.id AS dep, p.status FROM job_deps d
           JOIN jobs j ON j.id = d.job_id JOIN jobs p ON p.id = d.depends_on
           WHERE j.status = 'queued' AND p.status IN ('failed', 'cancelled')""")
    failed = []
    for row in rows:
        if row["job_id"] in failed:
            continue
        finish(store, row["job_id"], "failed",
               error=f"dependency job {row['dep']} {row['status']}")
        failed.append(row["job_id"])
    return failed


def counts(store: Store) -> dict[str, int]:
    return {r["status"]: r["n"] for r in store.query(
        "SELECT status, count(*) AS n FROM jobs GROUP BY status")}


def find_reusable(store: Store, spec: JobSpec) -> dict | None:
    """The newest job with the same content hash that is done or still active."""
    return store.one(
        "SELECT * FROM jobs WHERE spec_hash = ? AND kind = ? AND status IN "
        "('done', 'queued', 'running') ORDER BY (status = 'done') DESC, id DESC LIMIT 1",
        (spec.spec_hash(), spec.kind))


def result_of(row: dict) -> dict:
    return loads(row.get("result"), {}) or {}


