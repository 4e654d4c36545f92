"""The sweeps over jobs that no worker will finish on its own, run by the worker's loop and by
`doctor --repair`: running jobs whose worker is gone (requeued, or failed after their last
attempt), queued jobs blocked by a failed or cancelled dependency, and queued jobs whose
cancellation was asked for but that nobody claims."""

from __future__ import annotations

import time

from engine.queue import end_run, finish
from engine.store import Store
from engine.worker_rows import stale_after_s, worker_alive
from engine.crash_loop import died_every_attempt


def recover_orphans(store: Store, stale_after: float | None = None) -> list[int]:
    """Requeue running jobs whose worker is gone (dead pid or stale heartbeat, older than
    `stale_after`, by default `stale_after_s()`); a job that has used up its attempts fails
    with the reason. Returns the ids requeued or failed. Taking a job over increments its
    lease, so a worker that was only paused, not dead, can no longer write for it.

    The jobs and their workers are read in one query (one snapshot: a worker that registers
    and claims a job between two reads must not look unknown), and each change is conditional
    on the job still being held by the same worker with the same heartbeat, so a job that a
    live worker touched meanwhile is left alone."""
    rows = store.query(
        """SELECT j.*, w.id AS w_id, w.pid AS w_pid, w.host AS w_host, w.status AS w_status,
                  w.heartbeat_at AS w_heartbeat_at
           FROM jobs j LEFT JOIN workers w ON w.id = j.worker_id
           WHERE j.status = 'running'""")
    stale_after = stale_after_s() if stale_after is None else stale_after
    touched = []
    for row in rows:
        worker = None if row["w_id"] is None else {
            "id": row["w_id"], "pid": row["w_pid"], "host": row["w_host"],
            "status": row["w_status"], "heartbeat_at": row["w_heartbeat_at"]}
        alive = worker is not None and worker_alive(worker, stale_after)
        if alive and time.time() - (row["heartbeat_at"] or 0) <= stale_after:
            continue
        reason = f"worker {row['worker_id']} died while running the job"
        now = time.time()
        if row["cancel_requested"]:
            status, error = "cancelled", "cancelled by user"
        elif row["attempts"] >= row["max_attempts"]:
            # each attempt ended in a death (a death counts: a job that kills every worker
            # must end); the reason says what is kept and that retry resumes from it
            status, error = "failed", died_every_attempt(store, row)
        else:
            status, error = "queued", f"{reason}; requeued"
        with store.conn:
            changed = store.conn.execute(
                "UPDATE jobs SET status = ?, error = ?, lease = lease + 1, "
                "worker_id = CASE WHEN ? = 'queued' THEN NULL ELSE worker_id END, finished_at = CASE WHEN ? = 'queued' THEN finished_at ELSE ? END "
                "WHERE id = ? AND status = 'running' AND worker_id IS ? AND heartbeat_at IS ?",
                (status, error, status, status, now, row["id"], row["worker_id"],
                 row["heartbeat_at"])).rowcount
            if changed:                 # its run follows it (queued again until resumed)
                end_run(store, row["id"], status)
        if not changed:
            continue
        store.add_event(row["id"], f"{reason}; requeued to resume" if status == "queued" else
                        f"{error}" if status == "failed" else f"{reason}; marked {status}",
                        level="warning" if status != "failed" else "error")
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


STUCK_CANCELLED = "status = 'queued' AND cancel_requested = 1"   # never claimed: a stuck job


def cancel_stuck(store: Store) -> list[int]:
    """Cancel queued jobs whose cancellation was asked for (no worker claims them: a job
    requeued by a worker of an earlier version after `cancel` then SIGTERM). Their ids."""
    ids = [r["id"] for r in store.query(f"SELECT id FROM jobs WHERE {STUCK_CANCELLED}")]
    for job_id in ids:
        with store.conn:
            if store.conn.execute("UPDATE jobs SET status = 'cancelled', finished_at = ?, "
                                  f"error = 'cancelled by user' WHERE id = ? AND {STUCK_CANCELLED}",
                                  (time.time(), job_id)).rowcount:
                end_run(store, job_id, "cancelled")
    return ids
