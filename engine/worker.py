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
from engine.devices import is_out_of_memory
from engine.paths import Home
from engine.registry import ModelCache, ModelError
from engine.specs import SpecError
from engine.launcher import worker_id_for
from engine.store import Store

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 5.0
POLL_INTERVAL_S = 1.0
DEFAULT_IDLE_EXIT_S = 600.0


class Interrupted(BaseException):
    """SIGTERM/SIGINT: stop now and put the running job back in the queue."""


def run_job_kind(ctx: JobContext) -> dict:
    """Dispatch to the job kind's runner (imported lazily: torch-heavy modules)."""
    kind = ctx.spec.kind
    if kind == "eval":
        from engine.evaluation.runner import run_eval
        return run_eval(ctx)
    if kind == "distill":
        from engine.compression.runner import run_distill
        return run_distill(ctx)
    if kind == "prune":
        from engine.compression.runner import run_prune
        return run_prune(ctx)
    raise JobFailed(f"no runner for job kind {kind!r}")


def failure_reason(exc: BaseException) -> str:
    """The one-line reason stored with a failed job."""
    if isinstance(exc, (JobFailed, ModelError, SpecError)):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if is_out_of_memory(exc):
        return f"out of memory even at batch size 1: {str(exc).splitlines()[0][:200]}"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "database or disk is full" in str(exc):
        return f"disk full while writing ({str(exc).splitlines()[0][:200]}); free space and retry the job"
    if isinstance(exc, sqlite3.DatabaseError):
        return f"store error: {exc}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


class Worker:
    def __init__(self, home: Home | None = None, *, once: bool = False,
                 idle_exit_s: float | None = DEFAULT_IDLE_EXIT_S):
        self.home = home or Home.resolve()
        self.store = Store(self.home)
        self.once = once
        self.idle_exit_s = idle_exit_s
        self.id = worker_id_for(os.getpid())
        self.models = ModelCache(self.home)
        self.current_job: int | None = None
        self._stop = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------
    def _register(self) -> None:
        with self.store.conn:
            self.store.db["workers"].upsert({
                "id": self.id, "pid": os.getpid(), "host": os.uname().nodename,
                "started_at": time.time(), "heartbeat_at": time.time(), "status": "idle",
                "log_path": str(self.home.logs_dir / "worker.log")}, pk="id")

    def _heartbeat_loop(self) -> None:
        store = Store(self.home)
        try:
            while not self._stop.wait(HEARTBEAT_INTERVAL_S):
                now = time.time()
                with store.conn:
                    store.conn.execute("UPDATE workers SET heartbeat_at = ?, status = ? WHERE id = ?",
                                       (now, "busy" if self.current_job else "idle", self.id))
                    if self.current_job is not None:
                        store.conn.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND "
                                           "status = 'running'", (now, self.current_job))
        except sqlite3.Error as exc:  # the main thread will notice the store too
            log.warning("heartbeat stopped: %s", exc)
        finally:
            store.close()

    def _install_signal_handlers(self) -> None:
        def interrupt(signum, frame):
            raise Interrupted(signal.Signals(signum).name)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, interrupt)

    def run(self) -> int:
        """Work until the queue is empty (`once`) or idle for idle_exit_s. Returns jobs run."""
        self._register()
        self._install_signal_handlers()
        beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        beat.start()
        ran = 0
        idle_since = time.time()
        log.info("worker %s started (home %s)", self.id, self.home.root)
        try:
            while True:
                queue.recover_orphans(self.store)
                queue.fail_blocked(self.store)
                row = queue.claim(self.store, self.id)
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
        except (Interrupted, KeyboardInterrupt) as exc:
            log.warning("worker interrupted (%s)", exc)
        finally:
            self._stop.set()
            with self.store.conn:
                self.store.conn.execute("UPDATE workers SET status = 'stopped', heartbeat_at = ? "
                                        "WHERE id = ?", (time.time(), self.id))
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
            try:
                queue.finish(self.store, job_id, "failed", error=reason)
                ctx.log(f"failed: {reason}", level="error")
            except sqlite3.Error:
                log.exception("could not store the failure of job %s", job_id)
            if is_out_of_memory(exc):
                self.models.clear()
        finally:
            self.current_job = None
        return status
