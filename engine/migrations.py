"""Numbered schema migrations. Each runs once, in order, inside a transaction; the applied
numbers are kept in `_migrations`. Never edit a released migration: add a new one."""

from __future__ import annotations

import time
from typing import Callable

from engine.errors import NewerStore, UserError
from engine.sqlite_import import sqlite_utils

Migration = Callable[[sqlite_utils.Database], None]
MIGRATIONS: list[tuple[int, str, Migration]] = []


def migration(number: int, name: str) -> Callable[[Migration], Migration]:
    def register(fn: Migration) -> Migration:
        MIGRATIONS.append((number, name, fn))
        return fn
    return register


@migration(1, "initial schema")
def m001_initial(db: sqlite_utils.Database) -> None:
    db["jobs"].create({
        "id": int, "kind": str, "spec": str, "spec_hash": str, "label": str, "study": str,
        "status": str, "priority": int, "created_at": float, "started_at": float,
        "finished_at": float, "worker_id": str, "heartbeat_at": float, "attempts": int,
        "max_attempts": int, "error": str, "cancel_requested": int, "progress": float,
        "progress_message": str, "result": str,
    }, pk="id", not_null={"kind", "spec", "status"},
        defaults={"status": "queued", "priority": 0, "attempts": 0, "max_attempts": 3,
                  "cancel_requested": 0, "progress": 0.0})
    db["jobs"].create_index(["status", "priority"])
    db["jobs"].create_index(["spec_hash"])
    db["job_deps"].create({"job_id": int, "depends_on": int}, pk=("job_id", "depends_on"),
                          foreign_keys=[("job_id", "jobs", "id"), ("depends_on", "jobs", "id")])
    db["workers"].create({"id": str, "pid": int, "host": str, "started_at": float,
                          "heartbeat_at": float, "status": str, "log_path": str}, pk="id")
    db["models"].create({
        "id": int, "name": str, "source": str, "origin": str, "path": str, "architecture": str,
        "n_layers": int, "n_params": int, "n_nonzero": int, "size_bytes": int,
        "parent_id": int, "method": str, "method_params": str, "job_id": int,
        "latency_ms": float, "sparsity": str, "created_at": float, "extra": str,
    }, pk="id", foreign_keys=[("parent_id", "models", "id")])
    db["models"].create_index(["source"], unique=True)
    db["runs"].create({
        "id": int, "job_id": int, "model_id": int, "suite": str, "status": str,
        "scorer": str, "scorer_version": str, "settings": str, "data_source": str,
        "device": str, "created_at": float, "finished_at": float, "n_items": int,
        "n_samples": int, "summary": str,
    }, pk="id", foreign_keys=[("job_id", "jobs", "id"), ("model_id", "models", "id")])
    db["runs"].create_index(["job_id"], unique=True)
    db["runs"].create_index(["model_id"])
    db["metrics"].create({
        "id": int, "run_id": int, "name": str, "subset": str, "value": float,
        "ci_low": float, "ci_high": float, "n": int, "higher_is_better": int,
    }, pk="id", not_null={"run_id", "name"}, defaults={"subset": ""},
        foreign_keys=[("run_id", "runs", "id")])
    db["metrics"].create_index(["run_id", "name", "subset"], unique=True)
    db["samples"].create({
        "id": int, "run_id": int, "key": str, "item_index": int, "sample_index": int,
        "domain": str, "group_name": str, "prompt": str, "completion": str,
        "prompt_toxicity": float, "toxicity": float, "sentiment": float, "scores": str,
        "created_at": float,
    }, pk="id", not_null={"run_id", "key"}, foreign_keys=[("run_id", "runs", "id")])
    db["samples"].create_index(["run_id", "key"], unique=True)
    db["samples"].create_index(["run_id", "toxicity"])
    db["events"].create({"id": int, "job_id": int, "ts": float, "kind": str, "level": str,
                         "message": str, "data": str}, pk="id")
    db["events"].create_index(["job_id", "id"])


@migration(2, "studies")
def m002_studies(db: sqlite_utils.Database) -> None:
    db["studies"].create({"name": str, "source": str, "description": str, "plan": str,
                          "created_at": float, "updated_at": float}, pk="name")


@migration(3, "continuation quality")
def m003_continuation_quality(db: sqlite_utils.Database) -> None:
    # mean per-token NLL of a generated continuation under the run's reference model, and the
    # number of reference-model tokens it was averaged over (NULL: not scored yet)
    db["samples"].add_column("continuation_nll", float)
    db["samples"].add_column("continuation_tokens", int)


@migration(4, "job leases")
def m004_job_leases(db: sqlite_utils.Database) -> None:
    # the fencing token of a job: incremented by every claim and by every take-over of a job
    # from a worker presumed dead; a worker writes for the job only while it equals the value
    # its claim returned (engine.fencing)
    db["jobs"].add_column("lease", int, not_null_default=0)


@migration(5, "worker devices")
def m005_worker_devices(db: sqlite_utils.Database) -> None:
    # the device a worker is pinned to ("cuda:3", "cpu"; NULL: not pinned), engine.scale.device_workers
    db["workers"].add_column("device", str)


def applied(db: sqlite_utils.Database) -> set[int]:
    if "_migrations" not in db.table_names():
        return set()
    return {row["number"] for row in db["_migrations"].rows}


def known_up_to() -> int:
    return max(number for number, _, _ in MIGRATIONS)


def newer_than_known(numbers: set[int]) -> NewerStore | None:
    """The error for a store whose applied migrations `numbers` include one this version
    does not know (None when all are known)."""
    unknown = numbers - {number for number, _, _ in MIGRATIONS}
    if not unknown:
        return None
    return NewerStore(f"this store was made by a newer compfair (migration {max(unknown)}; this "
                      f"version knows up to {known_up_to()}): upgrade compfair to write to it; "
                      "listings still work")


def newer_store_at(db_path) -> NewerStore | None:
    """`newer_than_known` for the store file at `db_path`, read through a read-only
    connection (None when it does not exist or cannot be read)."""
    import sqlite3
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        return None
    try:
        return newer_than_known({r[0] for r in conn.execute("SELECT number FROM _migrations")})
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def migrate(db: sqlite_utils.Database) -> list[int]:
    """Apply every pending migration; returns the numbers applied now.

    Each migration is one BEGIN IMMEDIATE transaction that checks again, under the write
    lock, whether it is still pending: processes opening a new store at the same moment (two
    `compfair study` at once on a fresh home) apply each migration once, never failing on
    "table ... already exists"."""
    if "_migrations" not in db.table_names():
        db["_migrations"].create({"number": int, "name": str, "applied_at": float},
                                 pk="number", if_not_exists=True)
    done = applied(db)
    if newer_than_known(done) is not None:
        return []                # a newer compfair's store: never changed by this one
    now_applied = []
    for number, name, fn in sorted(MIGRATIONS, key=lambda m: m[0]):
        if number in done:
            continue
        conn = db.conn
        if conn.in_transaction:
            conn.commit()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("SELECT 1 FROM _migrations WHERE number = ?", (number,)).fetchone():
                conn.commit()               # another process applied it in the meantime
                continue
            fn(db)
            conn.execute("INSERT INTO _migrations (number, name, applied_at) VALUES (?, ?, ?)",
                         (number, name, time.time()))
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
        now_applied.append(number)
    return now_applied
