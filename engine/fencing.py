"""Fencing: a worker writes for a job only while it still holds the job's lease.

Every claim of a job increments `jobs.lease` and hands the new value to the claiming worker
(its token); taking a job away from a worker presumed dead (`job_sweeps.recover_orphans`)
increments it again. A worker paused long enough (SIGSTOP, a frozen VM, swap) to be declared
dead therefore finds, when it resumes, that the lease has moved on, and stops that job
without writing anything more: the worker that took the job over is its only writer.

Two layers enforce it:

- the worker's writes to the `jobs` row (progress, heartbeat, result, finish, requeue) are
  `UPDATE ... WHERE id = ? AND lease = ?` (`engine.queue`); no row changed means the lease
  was lost, and `LeaseLost` is raised;
- every other write of the worker process (samples, runs, metrics, events, models; from any
  thread and connection) passes SQL triggers that every `Store` connection installs as TEMP
  triggers. While this process holds a lease (`hold`), a write to those tables is aborted
  unless the job's lease is still the held one, checked by SQLite inside the writing
  statement itself, so no check-then-write race remains. A process that holds no lease (the
  CLI, the TUI, a worker between jobs) is not affected.

The lease is process-wide: a worker runs one job at a time, and its helper threads (the
sample writer, the heartbeat) write for that job. Files are outside the database: a derived
model's folder is written under a name of the job and checked against the lease before it is
registered (`JobContext.ensure_lease`, before the folder is written, before it is renamed
into place and before the registry's insert); a worker paused between that check and the
rename could still replace the folder with a copy made by the same job's code, and never
registers it a second time."""

from __future__ import annotations

import os
import sqlite3
import threading

from engine.errors import LeaseLost, UserError

LEASE_TIMEOUT_ENV = "COMPFAIR_LEASE_TIMEOUT_S"    # heartbeat age after which a job is taken over
HEARTBEAT_ENV = "COMPFAIR_HEARTBEAT_S"            # how often a worker beats
LOST_MARK = "compfair: lease lost"
GUARDED_TABLES = ("samples", "runs", "metrics", "events", "models")

_lock = threading.Lock()
_held: tuple[int, int] | None = None          # (job id, lease) this process writes for


def hold(job_id: int, lease: int) -> None:
    """From now on this process writes only for `job_id` under `lease`."""
    global _held
    with _lock:
        _held = (job_id, lease)


def release() -> None:
    global _held
    with _lock:
        _held = None


def held() -> tuple[int, int] | None:
    return _held


def _held_job() -> int | None:
    current = _held
    return current[0] if current else None


def _held_lease() -> int | None:
    current = _held
    return current[1] if current else None


def install(conn: sqlite3.Connection) -> None:
    """Register the fence functions and TEMP triggers on `conn` (once per connection)."""
    conn.create_function("compfair_fence_job", 0, _held_job)
    conn.create_function("compfair_fence_lease", 0, _held_lease)
    lost = ("compfair_fence_job() IS NOT NULL AND NOT EXISTS (SELECT 1 FROM main.jobs "
            "WHERE id = compfair_fence_job() AND lease = compfair_fence_lease())")
    for table in GUARDED_TABLES:
        for op in ("INSERT", "UPDATE", "DELETE"):
            conn.execute(f"CREATE TEMP TRIGGER IF NOT EXISTS fence_{table}_{op.lower()} "
                         f"BEFORE {op} ON main.{table} WHEN {lost} "
                         f"BEGIN SELECT RAISE(ABORT, '{LOST_MARK}'); END")


def is_lease_lost(exc: BaseException | None) -> bool:
    """Whether `exc` (or what caused it) says the lease was lost."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, LeaseLost) or (isinstance(exc, sqlite3.DatabaseError)
                                          and LOST_MARK in str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def env_seconds(name: str, default: float) -> float:
    """A positive number of seconds from environment variable `name` (`default` when unset):
    tests and impatient operators shorten the heartbeat and the lease timeout with them."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise UserError(f"{name}={text!r} is not a number of seconds; give a positive number")
    return value
