"""The SQLite store: one file under the compfair home holding the queue, the model registry,
runs, metrics, per-sample generations and progress events.

Each thread opens its own `Store` (sqlite connections are not shared across threads). WAL mode
lets the TUI read while a worker writes; the busy timeout makes concurrent writers wait instead
of failing."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator


from engine import fencing
from engine.migrations import applied, migrate, newer_than_known
from engine.errors import NewerStore, StoreError
from engine.model_paths import to_loadable, to_stored
from engine.paths import Home
from engine.sqlite_import import sqlite_utils
from engine.display_text import text_factory

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000


def connect(db_path: Path) -> sqlite_utils.Database:
    """Open (creating and migrating if needed) the database at `db_path`."""
    new = not db_path.exists()
    try:
        conn = sqlite3.connect(str(db_path), timeout=BUSY_TIMEOUT_MS / 1000,
                               check_same_thread=False)
        if new:
            os.chmod(db_path, 0o600)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
        db = sqlite_utils.Database(conn)
        _retrying_locked(db, db.enable_wal)
        newer = newer_than_known(applied(db))
        if newer is None:
            _retrying_locked(db, lambda: migrate(db))
        fencing.install(conn)          # a worker's writes need its job's lease (engine.fencing)
        if newer is not None:
            # made by a newer compfair: read-only for this one (listings work; a write fails,
            # and the command line says why: engine.cli.faults); Store.require_writable
            # refuses up front
            conn.execute("PRAGMA query_only = ON")
            newer.args = (f"{db_path}: {newer}",)
        db.newer_store = newer
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open the store {db_path}: {exc}") from exc
    return db


def _retrying_locked(db: sqlite_utils.Database, step, attempts: int = 5) -> None:
    """`step()` (switching to WAL, migrating), retried when SQLite answers "database is locked"
    at once instead of waiting (seen with several processes opening a brand-new store together
    under load: a lock upgrade SQLite refuses rather than risk a deadlock, which the busy
    timeout does not cover)."""
    for attempt in range(attempts):
        try:
            step()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            if db.conn.in_transaction:
                db.conn.rollback()
            time.sleep(0.2 * (attempt + 1))


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def loads(text: str | None, default: Any = None) -> Any:
    if not text:
        return default
    return json.loads(text)


class Store:
    """Typed access to the compfair tables. Cheap to create; one per thread."""

    def __init__(self, home: Home | None = None, display: bool = False):
        """`display`: every text read is made safe to show on a terminal (no control
        characters, `engine.display_text`): the terminal app's stores."""
        self.home = home or Home.resolve()
        self.db = connect(self.home.db_path)
        if display:
            self.db.conn.text_factory = text_factory

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    @property
    def newer(self) -> NewerStore | None:
        """Why this store may not be written (a newer compfair made it), or None."""
        return getattr(self.db, "newer_store", None)

    def require_writable(self) -> "Store":
        """This store, or NewerStore (exit 2, one line) when a newer compfair made it."""
        if self.newer is not None:
            raise self.newer
        return self

    def close(self) -> None:
        self.db.conn.close()

    def for_thread(self) -> "Store":
        """A store for another thread of the same job (its own connection); a store that
        relays to another process (engine.scale.ray_remote) hands out itself."""
        return Store(self.home)

    @contextmanager
    def immediate(self) -> Iterator[None]:
        """One write transaction that takes the store's write lock at once (BEGIN IMMEDIATE),
        so that what is read inside it cannot change before what is written inside it commits
        (a check-then-insert, such as a study's reuse check and its inserts). Everything in it
        must be plain SQL on `conn` (`with store.conn:` or sqlite-utils' writes would commit
        half-way); it commits at the end, or rolls back on any exception."""
        if self.conn.in_transaction:
            self.conn.commit()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.rollback()
            raise
        self.conn.commit()


    def query(self, sql: str, params: Iterable[Any] | dict = ()) -> list[dict]:
        return list(self.db.query(sql, params))

    def one(self, sql: str, params: Iterable[Any] | dict = ()) -> dict | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    # -- events --------------------------------------------------------------------------
    def add_event(self, job_id: int, message: str, *, kind: str = "log", level: str = "info",
                  data: dict | None = None) -> None:
        with self.conn:
            self.db["events"].insert({"job_id": job_id, "ts": time.time(), "kind": kind,
                                      "level": level, "message": message,
                                      "data": dumps(data) if data else None})

    def events(self, job_id: int, after_id: int = 0, limit: int = 500) -> list[dict]:
        return self.query("SELECT * FROM events WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?",
                          (job_id, after_id, limit))

    # -- models --------------------------------------------------------------------------
    def upsert_model(self, record: dict) -> int:
        """Insert or update the model whose `source` matches; returns its id."""
        record = {**record}
        if "path" in record:  # relative to the home when inside it (engine.model_paths)
            record["path"] = to_stored(record["path"], self.home.root)
        for key in ("method_params", "sparsity", "extra"):
            if isinstance(record.get(key), (dict, list)):
                record[key] = dumps(record[key])
        existing = self.one("SELECT id FROM models WHERE source = ?", (record["source"],))
        with self.conn:
            if existing:
                self.db["models"].update(existing["id"], record)
                return existing["id"]
            record.setdefault("created_at", time.time())
            return self.db["models"].insert(record).last_pk

    def _loadable(self, row: dict | None) -> dict | None:
        """A models row with its path as loadable from this home (engine.model_paths)."""
        if row is not None and row.get("path"):
            row["path"] = to_loadable(row["path"], self.home.root)
        return row

    def model(self, model_id: int) -> dict | None:
        return self._loadable(self.one("SELECT * FROM models WHERE id = ?", (model_id,)))

    def model_by_source(self, source: str) -> dict | None:
        return self._loadable(self.one("SELECT * FROM models WHERE source = ?", (source,)))

    def models(self) -> list[dict]:
        return [self._loadable(r) for r in self.query("SELECT * FROM models ORDER BY id")]

    def lineage(self, model_id: int) -> list[dict]:
        """The model and its ancestors, root last."""
        chain, seen = [], set()
        current = self.model(model_id)
        while current and current["id"] not in seen:
            chain.append(current)
            seen.add(current["id"])
            current = self.model(current["parent_id"]) if current["parent_id"] else None
        return chain

    # -- runs, metrics, samples ----------------------------------------------------------
    def start_run(self, job_id: int, model_id: int | None, suite: str, settings: dict,
                  scorer: str | None, scorer_version: str | None, data_source: str,
                  device: str) -> int:
        """The run of `job_id`, created on first call; a resumed job gets its run back."""
        existing = self.one("SELECT id FROM runs WHERE job_id = ?", (job_id,))
        fields = {"model_id": model_id, "suite": suite, "settings": dumps(settings),
                  "scorer": scorer, "scorer_version": scorer_version,
                  "data_source": data_source, "device": device, "status": "running"}
        with self.conn:
            if existing:
                self.db["runs"].update(existing["id"], fields)
                return existing["id"]
            return self.db["runs"].insert({"job_id": job_id, "created_at": time.time(),
                                           **fields}).last_pk

    def finish_run(self, run_id: int, metrics: list[dict], summary: dict | None = None) -> None:
        """Replace the run's metrics and mark it done, in one transaction."""
        n_samples = self.one("SELECT count(*) AS n FROM samples WHERE run_id = ?", (run_id,))["n"]
        n_items = self.one("SELECT count(DISTINCT item_index) AS n FROM samples WHERE run_id = ?",
                           (run_id,))["n"]
        with self.conn:
            self.conn.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
            self.db["metrics"].insert_all({"run_id": run_id, "subset": "", **m} for m in metrics)
            self.db["runs"].update(run_id, {"status": "done", "finished_at": time.time(),
                                            "summary": dumps(summary or {}),
                                            "n_samples": n_samples or None,
                                            "n_items": n_items or None})

    def add_samples(self, run_id: int, samples: list[dict]) -> int:
        """Store samples; a key already stored for the run is kept, never duplicated."""
        now = time.time()
        rows = []
        for sample in samples:
            row = {"run_id": run_id, "created_at": now, **sample}
            if isinstance(row.get("scores"), dict):
                row["scores"] = dumps(row["scores"])
            rows.append(row)
        with self.conn:
            self.db["samples"].insert_all(rows, ignore=True)
        return len(rows)

    def unscored_continuations(self, run_id: int) -> list[dict]:
        """(key, prompt, completion) of the run's samples without a continuation NLL yet."""
        return self.query("SELECT key, prompt, completion FROM samples WHERE run_id = ? AND "
                          "continuation_tokens IS NULL ORDER BY item_index, sample_index", (run_id,))

    def set_continuation_quality(self, run_id: int, rows: list[tuple[str, float | None, int]]) -> None:
        """Store (key, mean NLL per token or None, tokens) for samples of the run."""
        with self.conn:
            self.conn.executemany("UPDATE samples SET continuation_nll = ?, continuation_tokens = ? "
                                  "WHERE run_id = ? AND key = ?",
                                  [(nll, n, run_id, key) for key, nll, n in rows])

    def sample_keys(self, run_id: int) -> set[str]:
        return {r["key"] for r in self.db.query("SELECT key FROM samples WHERE run_id = ?",
                                                 (run_id,))}

    def samples(self, run_id: int) -> list[dict]:
        return self.query("SELECT * FROM samples WHERE run_id = ? ORDER BY item_index, "
                          "sample_index", (run_id,))

    def iter_samples(self, run_id: int) -> Iterator[dict]:
        yield from self.db.query("SELECT * FROM samples WHERE run_id = ? ORDER BY item_index, "
                                 "sample_index", (run_id,))

    def run(self, run_id: int) -> dict | None:
        return self.one("SELECT * FROM runs WHERE id = ?", (run_id,))

    def run_for_job(self, job_id: int) -> dict | None:
        return self.one("SELECT * FROM runs WHERE job_id = ?", (job_id,))

    def metrics(self, run_id: int) -> list[dict]:
        return self.query("SELECT * FROM metrics WHERE run_id = ? ORDER BY name, subset",
                          (run_id,))

    def integrity_check(self) -> str:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]
