"""`compfair doctor`: what this machine can do offline, and the health of the store."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import platform
import shutil
import sqlite3
import time
from pathlib import Path

from engine import job_sweeps, queue, worker_lock, worker_rows
from engine.store import Store
from engine.store_faults import store_fault
from engine.launcher import alive_workers

log = logging.getLogger(__name__)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _device_line() -> str:
    import torch
    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} GPU)"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return f"cpu ({os.cpu_count()} cores; no CUDA GPU)"


def _offline_default_model() -> str:
    from engine.model_loader import ModelError, smollm2_path  # on use: torch, numpy
    try:
        return f"available ({smollm2_path()})"
    except ModelError as exc:
        return f"missing: {exc}"


def _scorers() -> str:
    try:
        from engine.evaluation.scorers import offline_scorers  # on use: numpy
    except ImportError:
        return "evaluation module not installed"
    return ", ".join(f"{name}: {state}" for name, state in offline_scorers().items())


def _datasets() -> str:
    try:
        from engine.evaluation.data_sources import offline_datasets  # on use: numpy
    except ImportError:
        return "evaluation module not installed"
    return ", ".join(f"{name}: {state}" for name, state in offline_datasets().items())


def report(store: Store) -> dict[str, str]:
    db = store.home.db_path
    size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())
    counts = queue.counts(store)
    workers = alive_workers(store)
    return {
        "device": _device_line(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "detoxify": _version("detoxify"),
        "datasets": _version("datasets"),
        "offline default model": _offline_default_model(),
        "scorers": _scorers(),
        "data sets": _datasets(),
        "hub access": "offline (HF_HUB_OFFLINE=1)" if os.environ.get("HF_HUB_OFFLINE") == "1" else "allowed",
        "home": str(store.home.root),
        "store": f"{db} ({size / 1e6:.1f} MB)",
        "jobs": ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none",
        "workers alive": ", ".join(f"{w['id']} ({w['status']})" for w in workers) or "none",
    }


def check_store(store: Store, repair: bool = False) -> list[str]:
    """Problems found (and, with `repair`, fixed): integrity (damage is reported with what to
    do), a store that cannot be written (read-only, full disk) or is low on disk, worker rows
    whose live process does not hold this home's worker lock (a copied home), orphan rows,
    jobs stuck in running, queued jobs whose cancellation was asked for (no worker claims
    them), runs left running after their job ended or while it is queued, half-written model
    folders.

    Repairs: a foreign worker row is marked stopped (and unlocked lock files of dead workers
    removed); orphan rows are deleted; a running job whose worker is gone is requeued (it
    resumes from what it stored) or, out of attempts, failed; a queued job whose cancellation
    was asked for is cancelled; a run whose job ended takes the job's status ("incomplete" if
    the job is done but the run never finished), one whose job is queued is marked queued;
    `.partial` folders are removed when no job is running. A damaged index is rebuilt (REINDEX); other
    integrity damage is reported, not repaired."""
    problems = []
    integrity = _integrity(store)
    if integrity != ["ok"]:
        problems.append(f"integrity check: {'; '.join(integrity[:5])}; {DAMAGE_HINT}")
        if repair:
            try:
                with store.conn:
                    store.conn.execute("REINDEX")
            except sqlite3.DatabaseError as exc:   # the damage stays reported, with its hint
                log.warning("could not rebuild the indexes of %s: %s", store.home.db_path, exc)
    problems += _check_room(store)
    try:
        problems += _check_contents(store, repair)
    except sqlite3.DatabaseError as exc:     # the damage reaches the tables themselves
        problems.append(f"the store cannot be read past the damage ({exc}); nothing else was "
                        "checked or repaired")
    return problems


DAMAGE_HINT = ("the store is damaged: restore it from a backup, or move it away (a new empty "
               "store is created in its place)")


LOW_DISK_BYTES = 50_000_000      # below this much free, jobs are about to fail for lack of room


def _check_room(store: Store) -> list[str]:
    """The store can be written (a table created and rolled back: a read-only file, folder or
    mount, or a full disk, says so) and its disk has LOW_DISK_BYTES free."""
    db = store.home.db_path
    problems = []
    if store.newer is not None:      # query-only for this version: say why, not "read-only"
        problems.append(str(store.newer))
    else:
        try:
            store.conn.execute("SAVEPOINT doctor_write_probe")
            try:
                store.conn.execute("CREATE TABLE doctor_write_probe (x)")
            finally:
                store.conn.execute("ROLLBACK TO doctor_write_probe")
                store.conn.execute("RELEASE doctor_write_probe")
        except sqlite3.DatabaseError as exc:
            problems.append(store_fault(exc, db) or f"the store {db} cannot be written: {exc}")
    free = shutil.disk_usage(db.parent).free
    if free < LOW_DISK_BYTES:
        problems.append(f"the disk holding the store {db} has {free / 1e6:.1f} MB free; jobs "
                        "will fail for lack of room: free some space")
    return problems


def _check_contents(store: Store, repair: bool) -> list[str]:
    """Orphan rows, stuck jobs and runs, half-written model folders (`check_store`)."""
    problems = []
    orphan_queries = {
        "samples without a run": "FROM samples WHERE run_id NOT IN (SELECT id FROM runs)",
        "metrics without a run": "FROM metrics WHERE run_id NOT IN (SELECT id FROM runs)",
        "events without a job": "FROM events WHERE job_id NOT IN (SELECT id FROM jobs)",
        "dependencies on missing jobs": "FROM job_deps WHERE depends_on NOT IN (SELECT id FROM jobs) "
                                        "OR job_id NOT IN (SELECT id FROM jobs)",
    }
    for label, where in orphan_queries.items():
        n = store.one(f"SELECT count(*) AS n {where}")["n"]
        if n:
            problems.append(f"{n} {label}")
            if repair:
                with store.conn:
                    store.conn.execute(f"DELETE {where}")
    foreign = worker_lock.foreign_workers(store)
    problems += [worker_lock.describe_foreign(store.home, w) + "; no worker is started for this "
                 "home's jobs while the row stands (--repair marks it stopped)" for w in foreign]
    if repair:
        for w in foreign:
            worker_rows.stop_worker(store, w["id"])
        worker_lock.sweep(store.home)            # lock files left by killed workers
    foreign_ids = {w["id"] for w in foreign}
    workers = {w["id"]: w for w in store.query("SELECT * FROM workers")}
    stuck = []
    for row in store.query("SELECT * FROM jobs WHERE status = 'running'"):
        worker = workers.get(row["worker_id"])
        if worker is None or not worker_rows.worker_alive(worker) or worker["id"] in foreign_ids:
            stuck.append(row["id"])
            problems.append(f"job {row['id']} is marked running but its worker "
                            f"{row['worker_id']} is gone")
    if repair and stuck:
        job_sweeps.recover_orphans(store, stale_after=0.0 if not alive_workers(store)
                                   else worker_rows.STALE_HEARTBEAT_S)
    problems += _check_cancel_stuck(store, repair)
    running_runs = store.query("SELECT r.id, r.job_id, j.status FROM runs r JOIN jobs j ON j.id = r.job_id "
                               "WHERE r.status = 'running' AND j.status IN ('failed', 'cancelled', 'done')")
    for row in running_runs:
        problems.append(f"run {row['id']} is marked running but its job {row['job_id']} has ended")
        if repair:
            with store.conn:
                store.conn.execute("UPDATE runs SET status = ? WHERE id = ?",
                                   ("incomplete" if row["status"] == "done" else row["status"], row["id"]))
    partial = sorted(p for folder in (store.home.models_dir, store.home.cache_dir / "gguf")
                     if folder.is_dir() for p in folder.iterdir() if p.name.endswith(".partial"))
    if partial:
        size = sum(f.stat().st_size for p in partial for f in (p.rglob("*") if p.is_dir() else [p])
                   if f.is_file())
        problems.append(f"{len(partial)} half-written model folder(s) ({size / 1e6:.1f} MB): "
                        f"{', '.join(p.name for p in partial[:3])}")
        if repair and not queue.counts(store).get("running"):
            for path in partial:
                original = path.with_name(path.name.removesuffix(".replaced.partial"))
                if path.name.endswith(".replaced.partial") and path.is_dir() and not original.exists():
                    os.replace(path, original)     # an earlier model moved aside by a killed save
                    continue
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return problems


def _check_cancel_stuck(store: Store, repair: bool) -> list[str]:
    """Jobs no worker will ever take (queued with their cancellation asked for: left so by a
    worker of an earlier version stopped while cancelling) and runs that say "running" while
    their job waits in the queue. Repair cancels the former and marks the latter queued."""
    problems = [f"job {r['id']} is queued with its cancellation asked for; no worker will take it"
                for r in store.query(f"SELECT id FROM jobs WHERE {job_sweeps.STUCK_CANCELLED}")]
    runs = store.query("SELECT r.id, r.job_id FROM runs r JOIN jobs j ON j.id = r.job_id "
                       "WHERE r.status = 'running' AND j.status = 'queued'")
    problems += [f"run {r['id']} is marked running but its job {r['job_id']} is queued" for r in runs]
    if repair:
        job_sweeps.cancel_stuck(store)
        with store.conn:
            store.conn.executemany("UPDATE runs SET status = 'queued' WHERE id = ? AND status = 'running'",
                                   [(r["id"],) for r in runs])
    return problems


def _integrity(store: Store) -> list[str]:
    """PRAGMA integrity_check's findings (["ok"] when healthy); damage bad enough that the
    check itself cannot run (a garbled table root page) is its one finding."""
    try:
        return [row[0] for row in store.conn.execute("PRAGMA integrity_check(20)").fetchall()]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]


def check_unopenable(db_path: Path, why: str = "") -> list[str]:
    """What is wrong with a store file that cannot be opened normally (read-only look);
    `why` is the error opening it gave. A healthy file that is read-only or on a full disk
    is said to be that, not damaged."""
    if not db_path.exists():
        return [f"the store {db_path} does not exist" + (f" ({why})" if why else "")]
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            rows = [row[0] for row in conn.execute("PRAGMA integrity_check(20)").fetchall()]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return [store_fault(exc, db_path) or f"the store {db_path} cannot be read: {exc}"]
    if rows != ["ok"]:
        return [f"integrity check: {'; '.join(rows[:5])}; {DAMAGE_HINT}"]
    return [f"the store {db_path} is intact but cannot be opened for writing"
            + (f": {why}" if why else "")]
