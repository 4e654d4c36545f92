"""`compfair doctor`: what this machine can do offline, and the health of the store."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import time

from engine import queue
from engine.store import Store
from engine.launcher import alive_workers


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
    from engine.registry import ModelError, smollm2_path
    try:
        return f"available ({smollm2_path()})"
    except ModelError as exc:
        return f"missing: {exc}"


def _scorers() -> str:
    try:
        from engine.evaluation.scorers import offline_scorers
    except ImportError:
        return "evaluation module not installed"
    return ", ".join(f"{name}: {state}" for name, state in offline_scorers().items())


def _datasets() -> str:
    try:
        from engine.evaluation.data import offline_datasets
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
    """Problems found (and, with `repair`, fixed): integrity, orphan rows, stuck jobs."""
    problems = []
    integrity = store.integrity_check()
    if integrity != "ok":
        problems.append(f"integrity check: {integrity}")
    orphan_queries = {
        "samples without a run": "SELECT count(*) AS n FROM samples WHERE run_id NOT IN (SELECT id FROM runs)",
        "metrics without a run": "SELECT count(*) AS n FROM metrics WHERE run_id NOT IN (SELECT id FROM runs)",
        "events without a job": "SELECT count(*) AS n FROM events WHERE job_id NOT IN (SELECT id FROM jobs)",
        "dependencies on missing jobs": "SELECT count(*) AS n FROM job_deps WHERE depends_on NOT IN (SELECT id FROM jobs) OR job_id NOT IN (SELECT id FROM jobs)",
    }
    deletes = {
        "samples without a run": "DELETE FROM samples WHERE run_id NOT IN (SELECT id FROM runs)",
        "metrics without a run": "DELETE FROM metrics WHERE run_id NOT IN (SELECT id FROM runs)",
        "events without a job": "DELETE FROM events WHERE job_id NOT IN (SELECT id FROM jobs)",
        "dependencies on missing jobs": "DELETE FROM job_deps WHERE depends_on NOT IN (SELECT id FROM jobs) OR job_id NOT IN (SELECT id FROM jobs)",
    }
    for label, sql in orphan_queries.items():
        n = store.one(sql)["n"]
        if n:
            problems.append(f"{n} {label}")
            if repair:
                with store.conn:
                    store.conn.execute(deletes[label])
    workers = {w["id"]: w for w in store.query("SELECT * FROM workers")}
    for row in store.query("SELECT * FROM jobs WHERE status = 'running'"):
        worker = workers.get(row["worker_id"])
        if worker is None or not queue.worker_alive(worker):
            problems.append(f"job {row['id']} is marked running but its worker "
                            f"{row['worker_id']} is gone")
    if repair and any("marked running" in p for p in problems):
        queue.recover_orphans(store, stale_after=0.0 if not alive_workers(store) else queue.STALE_HEARTBEAT_S)
    running_runs = store.query("SELECT r.id, r.job_id FROM runs r JOIN jobs j ON j.id = r.job_id "
                               "WHERE r.status = 'running' AND j.status IN ('failed', 'cancelled', 'done')")
    for row in running_runs:
        problems.append(f"run {row['id']} is marked running but its job {row['job_id']} has ended")
        if repair:
            with store.conn:
                store.conn.execute("UPDATE runs SET status = 'incomplete' WHERE id = ?", (row["id"],))
    return problems
