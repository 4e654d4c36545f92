"""The persistent job queue (the `jobs` table).

A job goes queued -> running -> done | failed | cancelled. Claiming is one atomic
`UPDATE ... RETURNING`, so two workers never run the same job. A job waits until every job it
depends on is done; if one of them fails or is cancelled, the dependant fails with that reason.

Every write to the `jobs`, `job_deps` and `workers` tables is a function of this module or of
its two siblings, engine.worker_rows (the workers' rows, a worker's heartbeat) and
engine.job_sweeps (orphans of dead workers, blocked and stuck jobs), so the guards that keep
two workers from overwriting each other's jobs are in one place. Each
claim hands out a fencing token (`jobs.lease`, engine.fencing): the worker's writes to its job
are conditional on it, and one that finds it gone raises `LeaseLost`."""

from __future__ import annotations

import time
from typing import Sequence

from engine.errors import InvalidState, LeaseLost, NotFound
from engine.job_status import UNSUCCESSFUL
from engine.specs import JobSpec, spec_from_json
from engine.store import Store, dumps, loads


def submit(store: Store, spec: JobSpec, *, depends_on: list[int] = (), priority: int = 0,
           study: str | None = None, max_attempts: int = 3) -> int:
    """Queue `spec`; returns the job id. `job:ID` model references add dependencies."""
    with store.conn:
        return insert(store, spec, depends_on=depends_on, priority=priority, study=study,
                      max_attempts=max_attempts)


def insert(store: Store, spec: JobSpec, *, depends_on: Sequence[int] = (), priority: int = 0,
           study: str | None = None, max_attempts: int = 3) -> int:
    """`submit` as plain SQL that joins the caller's open transaction (a study's submission,
    `Store.immediate`); returns the job id."""
    deps = _dependencies(store, spec, depends_on)
    return _insert_job(store, spec, deps, priority=priority, study=study,
                       max_attempts=max_attempts)


def _dependencies(store: Store, spec: JobSpec, depends_on: Sequence[int]) -> set[int]:
    """`depends_on` and the jobs `spec`'s `job:ID` model references name (NotFound for one
    that does not exist)."""
    deps = set(depends_on) | {int(ref[4:]) for ref in spec.model_refs().values()
                              if ref.startswith("job:") and ref[4:].isdigit()}
    for dep in deps:
        if store.one("SELECT id FROM jobs WHERE id = ?", (dep,)) is None:
            raise NotFound(f"job {dep} (a dependency) does not exist")
    return deps


def _insert_job(store: Store, spec: JobSpec, waits_for: set[int], *, priority: int,
                study: str | None, max_attempts: int) -> int:
    """INSERT `spec` as a queued job waiting for `waits_for`; plain SQL, so that it joins the
    caller's open transaction (sqlite-utils' insert would commit it). Returns the job id.
    A store made by a newer compfair is refused (engine.migrations.NewerStore)."""
    _refuse_newer(store)
    job_id = store.conn.execute(
        "INSERT INTO jobs (kind, spec, spec_hash, label, study, status, priority, created_at, "
        "attempts, max_attempts, cancel_requested, progress) "
        "VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, 0, ?, 0, 0.0)",
        (spec.kind, spec.to_json(), spec.spec_hash(), spec.label or None, study, priority,
         time.time(), max_attempts)).lastrowid
    store.conn.executemany("INSERT OR IGNORE INTO job_deps (job_id, depends_on) VALUES (?, ?)",
                           [(job_id, d) for d in sorted(waits_for)])
    return job_id


def _refuse_newer(store: Store) -> None:
    """NewerStore (a UserError: the form or the command line says it in one line) when a
    newer compfair made the store; its connection is query-only anyway (engine.store)."""
    newer = getattr(store, "newer", None)
    if newer is not None:
        raise newer


def job(store: Store, job_id: int) -> dict | None:
    return store.one("SELECT * FROM jobs WHERE id = ?", (job_id,))


def job_spec(row: dict) -> JobSpec:
    return spec_from_json(row["spec"])


def dependencies(store: Store, job_id: int) -> list[int]:
    return dependencies_of(store, [job_id]).get(job_id, [])


def dependencies_of(store: Store, job_ids: Sequence[int]) -> dict[int, list[int]]:
    """{job id: the ids it depends on, sorted} for every job of `job_ids`, in one query
    (jobs without dependencies map to [])."""
    out: dict[int, list[int]] = {j: [] for j in job_ids}
    if not out:
        return out
    marks = ",".join("?" * len(out))
    for r in store.query(f"SELECT job_id, depends_on FROM job_deps WHERE job_id IN ({marks}) "
                         "ORDER BY job_id, depends_on", list(out)):
        out[r["job_id"]].append(r["depends_on"])
    return out

def claim(store: Store, worker_id: str) -> dict | None:
    """Atomically take the highest-priority runnable job, or None. The row returned carries
    the claim's fencing token, `lease` (one more than the job's previous one)."""
    now = time.time()
    rows = store.query(
        """
        UPDATE jobs SET status = 'running', worker_id = :worker, started_at = :now,
               heartbeat_at = :now, attempts = attempts + 1, error = NULL, lease = lease + 1
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


def _update_job(store: Store, job_id: int, fields: dict, lease: int | None) -> None:
    """UPDATE the job's `fields`; with a `lease`, only while the job still has it (else
    LeaseLost, nothing written). Joins the caller's transaction when one is open."""
    sets = ", ".join(f"{name} = ?" for name in fields)
    sql, params = f"UPDATE jobs SET {sets} WHERE id = ?", [*fields.values(), job_id]
    if lease is not None:
        sql, params = sql + " AND lease = ?", params + [lease]
    if store.conn.execute(sql, params).rowcount == 0 and lease is not None:
        raise LeaseLost(f"job {job_id} is no longer held under lease {lease}")


def holds(store: Store, job_id: int, lease: int) -> bool:
    """Whether the job's lease is still `lease` (nobody took the job over)."""
    row = store.one("SELECT lease FROM jobs WHERE id = ?", (job_id,))
    return bool(row) and row["lease"] == lease


def heartbeat(store: Store, job_id: int, progress: float | None = None,
              message: str | None = None, *, lease: int | None = None) -> None:
    """Record progress and a fresh heartbeat (LeaseLost when `lease` is no longer held)."""
    fields = {"heartbeat_at": time.time()}
    if progress is not None:
        fields["progress"] = max(0.0, min(1.0, progress))
    if message is not None:
        fields["progress_message"] = message
    with store.conn:
        _update_job(store, job_id, fields, lease)


def finish(store: Store, job_id: int, status: str, *, error: str | None = None,
           result: dict | None = None, lease: int | None = None) -> None:
    """End a job. A failed or cancelled job's run (if any) is marked the same in the same
    transaction, so a run never shows "running" after its job ended; a retried job's run goes
    back to "running" when it resumes. With a `lease`, only while the job still has it
    (LeaseLost otherwise, nothing written)."""
    fields = {"status": status, "finished_at": time.time(), "error": error}
    if status == "done":
        fields["progress"] = 1.0
    if result is not None:
        fields["result"] = dumps(result)
    with store.conn:
        _update_job(store, job_id, fields, lease)
        if status in UNSUCCESSFUL:
            end_run(store, job_id, status)


def end_run(store: Store, job_id: int, status: str) -> None:
    """The job's run (if any) takes the job's new status: a run never says "running" while
    its job is queued or ended."""
    store.conn.execute("UPDATE runs SET status = ? WHERE job_id = ? AND status IN ('running', 'queued')",
                       (status, job_id))


def requeue_interrupted(store: Store, job_id: int, worker_id: str,
                        lease: int | None = None) -> str | None:
    """Give a job back after its worker was told to stop (SIGTERM, SIGINT): it goes back in
    the queue to resume from what was stored, the interrupted attempt not counting, and its
    run (if any) is marked "queued" with it until a worker resumes it; a job whose cancellation
    was asked for is cancelled instead (a requeued job with `cancel_requested` set would never
    be claimed). Only a job still running on `worker_id` (and, given one, under `lease`) is
    touched: one that another worker took over meanwhile is left alone.
    Returns the job's new status ("queued" or "cancelled"), or None when it was not ours."""
    held = "id = ? AND status = 'running' AND worker_id = ?" + (" AND lease = ?" if lease is not None else "")
    params = (job_id, worker_id) + ((lease,) if lease is not None else ())
    with store.conn:
        if store.conn.execute(f"UPDATE jobs SET status = 'cancelled', finished_at = ?, "
                              f"error = 'cancelled by user' WHERE {held} AND cancel_requested = 1",
                              (time.time(), *params)).rowcount:
            end_run(store, job_id, "cancelled")
            return "cancelled"
        if store.conn.execute(
                "UPDATE jobs SET status = 'queued', attempts = max(attempts - 1, 0), worker_id = NULL, "
                f"error = 'worker stopped; will resume' WHERE {held}", params).rowcount:
            end_run(store, job_id, "queued")
            return "queued"
    return None


def set_result(store: Store, job_id: int, result: dict, *, lease: int | None = None) -> None:
    with store.conn:
        _update_job(store, job_id, {"result": dumps(result)}, lease)


def cancel(store: Store, job_id: int) -> str:
    """Cancel a queued job at once; ask a running one to stop between batches.
    Returns the job's status afterwards. Each change is conditional on the status it was read
    with, so a job claimed by a worker in the same instant is asked to stop, not overwritten."""
    for _ in range(3):
        row = job(store, job_id)
        if row is None:
            raise NotFound(f"job {job_id} does not exist")
        with store.conn:
            if row["status"] == "queued":
                changed = store.conn.execute(
                    "UPDATE jobs SET status = 'cancelled', finished_at = ?, cancel_requested = 1, "
                    "error = 'cancelled by user' WHERE id = ? AND status = 'queued'",
                    (time.time(), job_id)).rowcount
                if changed:
                    end_run(store, job_id, "cancelled")
                    return "cancelled"
                continue                      # claimed meanwhile: read it again
            if row["status"] == "running":
                changed = store.conn.execute(
                    "UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = 'running'",
                    (job_id,)).rowcount
                if changed:
                    return "cancelling"
                continue                      # it ended meanwhile
        return row["status"]
    return job(store, job_id)["status"]


def cancel_requested(store: Store, job_id: int, lease: int | None = None) -> bool:
    """Whether the user asked to cancel the job (LeaseLost when `lease` is no longer held)."""
    row = store.one("SELECT cancel_requested, lease FROM jobs WHERE id = ?", (job_id,))
    if lease is not None and (row is None or row["lease"] != lease):
        raise LeaseLost(f"job {job_id} is no longer held under lease {lease}")
    return bool(row and row["cancel_requested"])


def retry(store: Store, job_id: int) -> None:
    """Put a failed or cancelled job back in the queue (its stored samples are kept)."""
    with store.conn:
        requeue_stopped(store, job_id)


def requeue_stopped(store: Store, job_id: int) -> None:
    """`retry` as plain SQL that joins the caller's open transaction (a study's submission,
    `Store.immediate`)."""
    _refuse_newer(store)
    row = job(store, job_id)
    if row is None:
        raise NotFound(f"job {job_id} does not exist")
    if row["status"] not in UNSUCCESSFUL:
        raise InvalidState(f"job {job_id} is {row['status']}; only failed or cancelled jobs retry")
    changed = store.conn.execute(
        "UPDATE jobs SET status = 'queued', cancel_requested = 0, error = NULL, attempts = 0, "
        "finished_at = NULL WHERE id = ? AND status IN ('failed', 'cancelled')", (job_id,)).rowcount
    if not changed:
        raise InvalidState(f"job {job_id} changed while retrying it; look at it again")


def set_priority(store: Store, job_id: int, priority: int) -> None:
    with store.conn:
        store.db["jobs"].update(job_id, {"priority": priority})


def counts(store: Store) -> dict[str, int]:
    """Jobs per status (statuses with no job are absent)."""
    return {r["status"]: r["n"] for r in store.query(
        "SELECT status, count(*) AS n FROM jobs GROUP BY status")}


def waiting_on_running(store: Store) -> bool:
    """True while queued jobs may still become runnable: some job is running (elsewhere) and
    some queued job is not being cancelled."""
    row = store.one("SELECT (SELECT count(*) FROM jobs WHERE status = 'running') AS running, "
                    "(SELECT count(*) FROM jobs WHERE status = 'queued' AND cancel_requested = 0) "
                    "AS queued")
    return bool(row["running"] and row["queued"])


def find_reusable(store: Store, spec: JobSpec) -> dict | None:
    """The newest job with the same content hash that is done or still active."""
    return store.one(
        "SELECT * FROM jobs WHERE spec_hash = ? AND kind = ? AND status IN "
        "('done', 'queued', 'running') ORDER BY (status = 'done') DESC, id DESC LIMIT 1",
        (spec.spec_hash(), spec.kind))


def find_stopped(store: Store, spec: JobSpec) -> dict | None:
    """The newest failed or cancelled job with the same content hash (a study resumes it)."""
    return store.one(
        "SELECT * FROM jobs WHERE spec_hash = ? AND kind = ? AND status IN ('failed', 'cancelled') "
        "ORDER BY id DESC LIMIT 1", (spec.spec_hash(), spec.kind))


def submit_group(store: Store, spec: JobSpec, parts, *, depends_on: Sequence[int] = (),
                 priority: int = 0, study: str | None = None,
                 max_attempts: int = 3) -> tuple[int, list[int]]:
    """Queue `spec` and the jobs it is made of, `parts(job id of spec)` (their specs name the
    job they belong to), in one transaction: no worker can claim `spec` before it waits for
    every part. The parts wait for what `spec` waits for (its `job:ID` references and
    `depends_on`). Returns (the job's id, the parts' ids)."""
    deps = _dependencies(store, spec, depends_on)
    options = {"priority": priority, "study": study, "max_attempts": max_attempts}
    with store.conn:
        job_id = _insert_job(store, spec, set(), **options)
        part_ids = [_insert_job(store, part, deps, **options) for part in parts(job_id)]
        store.conn.executemany("INSERT OR IGNORE INTO job_deps (job_id, depends_on) VALUES (?, ?)",
                               [(job_id, d) for d in sorted(deps | set(part_ids))])
    return job_id, part_ids
