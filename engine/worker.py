"""The worker process: claims one job at a time from the queue and runs it.

Started detached (own session, output to a log under the compfair home) by the CLI and the
TUI when no worker is alive, so jobs outlive the terminal and the SSH session. A heartbeat
thread keeps the worker and its job marked alive during long batches; a worker that dies is
detected by the next one (dead pid or stale heartbeat) and its job requeued to resume."""

from __future__ import annotations

import errno
import logging
import os
import signal
import sqlite3
import threading
import time
import traceback

from engine import queue
from engine.context import JobCancelled, JobContext, JobFailed
from engine.devices import is_out_of_memory, keep_freed_host_memory
from engine.paths import Home
from engine.registry import ModelCache, ModelError
from engine.specs import SpecError
from engine.launcher import worker_id_for
from engine.store import Store, StoreError

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 5.0
RESERVE_BYTES = 1 << 20   # disk set aside for recording a disk-full failure
POLL_INTERVAL_S = 1.0
DEFAULT_IDLE_EXIT_S = 600.0


class Interrupted(BaseException):
    """SIGTERM/SIGINT: stop now and put the running job back in the queue."""


# job kind -> "module:function" of its runner (imported lazily: torch-heavy modules)
RUNNERS = {"eval": "engine.evaluation.runner:run_eval",
           "distill": "engine.compression.runner:run_distill",
           "prune": "engine.compression.runner:run_prune",
           "quantize": "engine.compression.quant_runner:run_quantize"}


def run_job_kind(ctx: JobContext) -> dict:
    """Dispatch to the job kind's runner."""
    import importlib
    target = RUNNERS.get(ctx.spec.kind)
    if target is None:
        raise JobFailed(f"no runner for job kind {ctx.spec.kind!r}")
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)(ctx)


# errno values meaning "no room to write": a full disk, a file-size limit, a quota
_NO_ROOM_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NO_ROOM_TEXTS = tuple(os.strerror(e).lower() for e in _NO_ROOM_ERRNOS) + (
    "database or disk is full", "no space left", "file too large", "filetoolarge", "storagefull")


def _chain(exc: BaseException):
    """`exc` and the exceptions it was raised from or during (cause/context), once each."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_no_room(exc: BaseException) -> bool:
    """True when a write failed for lack of room: ENOSPC, EFBIG (a file-size limit), a quota,
    SQLite's "database or disk is full", or the same errors reported as text by a library
    (safetensors and torch report their I/O errors as plain exceptions)."""
    for item in _chain(exc):
        if isinstance(item, OSError) and item.errno in _NO_ROOM_ERRNOS:
            return True
        if isinstance(item, sqlite3.DatabaseError) and getattr(item, "sqlite_errorname", "") == "SQLITE_FULL":
            return True
        text = str(item).lower()
        if any(t in text for t in _NO_ROOM_TEXTS):
            return True
    return False


def is_store_write_error(exc: BaseException) -> bool:
    """True when the SQLite store itself could not be written (full, size limit, I/O error)."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name == "SQLITE_FULL" or name.startswith("SQLITE_IOERR") or \
        "disk is full" in str(exc) or "disk i/o error" in str(exc).lower()


def _first(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:limit] if text else type(exc).__name__


def failure_reason(exc: BaseException) -> str:
    """The one-line reason stored with a failed job."""
    if isinstance(exc, (JobFailed, ModelError, SpecError)):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if is_out_of_memory(exc):
        return f"out of memory even at batch size 1: {_first(exc)}"
    if is_no_room(exc):
        return (f"disk full or file size limit reached while writing ({_first(exc)}); "
                "free space and retry the job")
    if is_store_write_error(exc):
        return (f"could not write to the store ({_first(exc)}: disk full, file size limit or a "
                "failing disk); free space and retry the job")
    if isinstance(exc, sqlite3.DatabaseError):
        return f"store error: {_first(exc)}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def ensure_reserve(home: Home) -> str | None:
    """Set RESERVE_BYTES of disk aside in the home (a zero-filled file, written for real: a
    sparse file would reserve nothing). Returns None, or the reason it could not (no room:
    the disk is full)."""
    path = home.reserve_path
    try:
        if path.exists() and path.stat().st_size >= RESERVE_BYTES:
            return None
        partial = path.with_name(path.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0" * RESERVE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, path)
    except OSError as exc:
        path.with_name(path.name + ".partial").unlink(missing_ok=True)
        if is_no_room(exc):
            return failure_reason(exc)
        log.warning("could not set disk aside for recording failures: %s", exc)
    return None


def release_reserve(home: Home) -> bool:
    try:
        home.reserve_path.unlink()
    except FileNotFoundError:
        return False
    log.warning("the disk is full: released the %d bytes set aside to record the failure",
                RESERVE_BYTES)
    return True


class Worker:
    def __init__(self, home: Home | None = None, *, once: bool = False,
                 idle_exit_s: float | None = DEFAULT_IDLE_EXIT_S):
        self.home = home or Home.resolve()
        self.store = Store(self.home)
        self.once = once
        self.idle_exit_s = idle_exit_s
        self.id = worker_id_for(os.getpid())
        self.models = ModelCache(self.home)
        keep_freed_host_memory()        # this process runs jobs: reuse host memory across steps
        self.current_job: int | None = None
        self.stop_reason: str | None = None   # why the worker stopped early (store not writable)
        self._stop = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------
    def _register(self) -> None:
        with self.store.conn:
            self.store.db["workers"].upsert({
                "id": self.id, "pid": os.getpid(), "host": os.uname().nodename,
                "started_at": time.time(), "heartbeat_at": time.time(), "status": "idle",
                "log_path": str(self.home.logs_dir / "worker.log")}, pk="id")

    def _heartbeat_loop(self) -> None:
        """Mark the worker and its job alive every HEARTBEAT_INTERVAL_S. A failed beat (store
        busy or full) is logged and retried: a heartbeat that stopped for good would let
        another worker take the job as orphaned while it still runs."""
        store = None
        last_error = ""
        try:
            while not self._stop.wait(HEARTBEAT_INTERVAL_S):
                try:
                    store = store or Store(self.home)
                    now = time.time()
                    with store.conn:
                        store.conn.execute("UPDATE workers SET heartbeat_at = ?, status = ? WHERE id = ?",
                                           (now, "busy" if self.current_job else "idle", self.id))
                        if self.current_job is not None:
                            store.conn.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND "
                                               "status = 'running'", (now, self.current_job))
                    last_error = ""
                except (sqlite3.Error, StoreError) as exc:
                    if str(exc) != last_error:
                        log.warning("heartbeat failed (will retry): %s", exc)
                    last_error = str(exc)
        finally:
            if store is not None:
                store.close()

    def _install_signal_handlers(self) -> None:
        def interrupt(signum, frame):
            raise Interrupted(signal.Signals(signum).name)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, interrupt)

    def run(self) -> int:
        """Work until the queue is empty (`once`) or idle for idle_exit_s. Returns jobs run.

        Disk full: a job that fails for lack of room is marked failed with the reason (the
        disk set aside by `ensure_reserve` is released to make room for that record), then the
        worker stops with `stop_reason` set, leaving the other queued jobs queued; a worker
        that starts with no room to set aside stops at once for the same reason. If even the
        failure cannot be recorded, the job is requeued by the next worker and resumes from
        what was stored."""
        ran = 0
        beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        try:
            no_room = ensure_reserve(self.home)
            if no_room:
                self.stop_reason = no_room
                log.error("worker %s does not start jobs: %s", self.id, no_room)
                return 0
            self._register()
            self._install_signal_handlers()
            beat.start()
            idle_since = time.time()
            log.info("worker %s started (home %s)", self.id, self.home.root)
            while True:
                try:
                    queue.recover_orphans(self.store)
                    queue.fail_blocked(self.store)
                    row = queue.claim(self.store, self.id)
                except sqlite3.OperationalError as exc:
                    if is_store_write_error(exc):
                        raise
                    # busy beyond the timeout (a long writer elsewhere): try again shortly
                    log.warning("the queue is busy (%s); retrying", exc)
                    time.sleep(POLL_INTERVAL_S)
                    continue
                if row is None:
                    if self.once and not self._has_runnable_future():
                        break
                    if self.idle_exit_s is not None and time.time() - idle_since > self.idle_exit_s:
                        log.info("idle for %.0f s; exiting", self.idle_exit_s)
                        break
                    time.sleep(POLL_INTERVAL_S)
                    continue
                self.run_one(row)
                ran += 1
                idle_since = time.time()
                if self.stop_reason:
                    log.error("worker %s stops: %s", self.id, self.stop_reason)
                    break
        except (Interrupted, KeyboardInterrupt) as exc:
            log.warning("worker interrupted (%s)", exc)
        except sqlite3.OperationalError as exc:
            if not is_store_write_error(exc):
                raise
            self.stop_reason = failure_reason(exc)
            log.error("worker %s stops: %s", self.id, self.stop_reason)
        finally:
            self._stop.set()
            try:
                with self.store.conn:
                    self.store.conn.execute("UPDATE workers SET status = 'stopped', heartbeat_at = ? "
                                            "WHERE id = ?", (time.time(), self.id))
            except sqlite3.Error as exc:  # the pid check finds this worker dead anyway
                log.warning("could not mark worker %s stopped: %s", self.id, exc)
        return ran

    def _has_runnable_future(self) -> bool:
        """True while queued jobs wait on jobs that are still running elsewhere."""
        row = self.store.one("SELECT count(*) AS n FROM jobs WHERE status = 'running'")
        queued = self.store.one("SELECT count(*) AS n FROM jobs WHERE status = 'queued' "
                                "AND cancel_requested = 0")
        return bool(row["n"] and queued["n"])

    # -- one job -------------------------------------------------------------------------
    def run_one(self, row: dict) -> str:
        job_id = row["id"]
        self.current_job = job_id
        try:
            spec = queue.job_spec(row)
        except SpecError as exc:
            queue.finish(self.store, job_id, "failed", error=f"invalid spec: {exc}")
            self.current_job = None
            return "failed"
        ctx = JobContext(self.store, job_id, spec, self.models, self.id)
        attempt = f" (attempt {row['attempts']})" if row["attempts"] > 1 else ""
        ctx.log(f"started {spec.kind} job{attempt} on worker {self.id}")
        status = "failed"
        try:
            result = run_job_kind(ctx)
            queue.finish(self.store, job_id, "done", result=result)
            ctx.progress(1, 1, "done", force=True)
            ctx.log("finished")
            status = "done"
        except JobCancelled:
            queue.finish(self.store, job_id, "cancelled", error="cancelled by user")
            ctx.log("cancelled; stored samples and checkpoints are kept", level="warning")
            status = "cancelled"
        except Interrupted:
            with self.store.conn:
                self.store.conn.execute(
                    "UPDATE jobs SET status = 'queued', attempts = max(attempts - 1, 0), "
                    "worker_id = NULL, error = 'worker stopped; will resume' WHERE id = ?",
                    (job_id,))
            ctx.log("worker stopped; job requeued to resume", level="warning")
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is stored with its reason
            reason = failure_reason(exc)
            log.error("job %s failed: %s\n%s", job_id, reason, traceback.format_exc())
            if not isinstance(exc, (JobFailed, ModelError, SpecError)) and \
                    (is_no_room(exc) or is_store_write_error(exc)):
                self.stop_reason = reason          # the next job would fail the same way
            self._store_failure(ctx, reason)
            if is_out_of_memory(exc):
                self.models.clear()
        finally:
            self.current_job = None
        return status

    def _store_failure(self, ctx: JobContext, reason: str) -> bool:
        """Mark the job failed with `reason`. When the store cannot be written, release the
        disk set aside, checkpoint and truncate the write-ahead log, and try once more.
        Returns whether the failure was stored."""
        for attempt in (1, 2):
            try:
                queue.finish(self.store, ctx.job_id, "failed", error=reason)
                break
            except sqlite3.Error as exc:
                if attempt == 1 and is_store_write_error(exc):
                    self.stop_reason = self.stop_reason or failure_reason(exc)
                    release_reserve(self.home)     # room for this record...
                    self._truncate_wal()           # ...and the log's pages move into the file
                    continue
                log.error("could not store the failure of job %s (%s): %s; the next worker "
                          "will requeue it", ctx.job_id, reason, exc)
                return False
        try:
            ctx.log(f"failed: {reason}", level="error")
        except sqlite3.Error as exc:
            log.warning("could not store the failure event of job %s: %s", ctx.job_id, exc)
        return True

    def _truncate_wal(self) -> None:
        try:
            self.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("could not checkpoint the store: %s", exc)
