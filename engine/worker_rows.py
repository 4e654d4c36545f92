"""The `workers` table: a worker's row (registered, heartbeat, stopped) and whether a row is
alive (a fresh heartbeat and, on this host, a live pid), with the lease timeout that says how
old a heartbeat may be. The jobs' own rows are engine.queue's."""

from __future__ import annotations

import os
import time

from engine.fencing import LEASE_TIMEOUT_ENV, env_seconds
from engine.store import Store


STALE_HEARTBEAT_S = 120.0      # the default lease timeout ($COMPFAIR_LEASE_TIMEOUT_S overrides)


def stale_after_s() -> float:
    """How old a worker's or job's heartbeat may be before the job is taken over."""
    return env_seconds(LEASE_TIMEOUT_ENV, STALE_HEARTBEAT_S)


def register_worker(store: Store, worker_id: str, pid: int, *, status: str, log_path: str,
                    device: str | None = None) -> None:
    """Record a worker (insert or replace its row) as `status` ("starting" when launched,
    "idle" when it runs), with a fresh heartbeat; `device`: what it is pinned to (kept as
    recorded when None)."""
    now = time.time()
    with store.conn:
        store.db["workers"].upsert({"id": worker_id, "pid": pid, "host": os.uname().nodename,
                                    "started_at": now, "heartbeat_at": now, "status": status,
                                    "log_path": log_path,
                                    **({"device": device} if device else {})}, pk="id")


def worker_heartbeat(store: Store, worker_id: str, job_id: int | None,
                     lease: int | None = None) -> bool:
    """Mark a worker alive (busy while it holds `job_id`, else idle) and, in the same
    transaction, the job it runs (only while that job is still running, and under `lease`
    when one is given). Returns False when the job's heartbeat was not written (the job
    ended or was taken over)."""
    now = time.time()
    with store.conn:
        store.conn.execute("UPDATE workers SET heartbeat_at = ?, status = ? WHERE id = ?",
                           (now, "busy" if job_id is not None else "idle", worker_id))
        if job_id is None:
            return True
        held = " AND lease = ?" if lease is not None else ""
        return bool(store.conn.execute(
            f"UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND status = 'running'{held}",
            (now, job_id) + ((lease,) if lease is not None else ())).rowcount)


def stop_worker(store: Store, worker_id: str) -> None:
    """Mark a worker stopped (it exits; its row stays for the record)."""
    with store.conn:
        store.conn.execute("UPDATE workers SET status = 'stopped', heartbeat_at = ? WHERE id = ?",
                           (time.time(), worker_id))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_alive(row: dict, stale_after: float | None = None) -> bool:
    """A worker row is alive when its heartbeat is fresh (younger than `stale_after`, by
    default `stale_after_s()`) and (on this host) its pid exists."""
    stale_after = stale_after_s() if stale_after is None else stale_after
    if row.get("status") == "stopped":
        return False
    if time.time() - (row.get("heartbeat_at") or 0) > stale_after:
        return False
    if row.get("host") == os.uname().nodename and row.get("pid"):
        return _pid_alive(row["pid"])
    return True
