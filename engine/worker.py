"""The worker process: claims one job at a time from the queue and runs it (its lifecycle:
register, heartbeat, claim, run, record the outcome, stop). Why a job failed is classified in
`engine.failures`; the disk set aside for recording a disk-full failure is `engine.disk_reserve`.

Started detached (own session, output to a log under the compfair home) by the CLI and the
TUI when no worker is alive, so jobs outlive the terminal and the SSH session. A heartbeat
thread keeps the worker and its job marked alive during long batches; a worker that dies is
detected by the next one (dead pid or stale heartbeat) and its job requeued to resume.

While it runs, a worker holds an exclusive lock on its file in the home
(engine.worker_lock): that is how the launcher and `doctor` tell a worker of this home from a
live process named by a `workers` row copied along with the home.

A worker's death counts as an attempt (the claim counted it; engine.job_sweeps.recover_orphans):
a job that kills its worker every time (an out-of-memory kill) must end, not loop forever.
After `max_attempts` deaths it fails with a reason that says so, what it stored, that
`compfair retry ID` resumes from that, and, for generation and distillation, to try a smaller
`--batch-size` (engine.crash_loop). SIGTERM/SIGINT are not deaths: the job is requeued with
its attempt given back."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading
import time
import traceback
from typing import Callable

from engine import job_sweeps, queue, worker_rows, fencing, worker_lock
from engine.catalog.registry import Registry
from engine.compression.quant_runner import run_quantize
from engine.compression.runner import run_distill, run_prune
from engine.context import JobContext
from engine.scale.shards import run_shard
from engine.errors import Interrupted, JobCancelled, JobFailed, StoreError
from engine.devices import is_out_of_memory, keep_freed_host_memory
from engine.disk_reserve import ensure_reserve, release_reserve
from engine.failures import failure_reason, is_store_write_error, stops_the_worker
from engine.fencing import HEARTBEAT_ENV, env_seconds, is_lease_lost
from engine.paths import Home
from engine.model_loader import ModelCache
from engine.specs import SpecError
from engine.worker_lock import worker_id_for
from engine.store import Store
from engine.scale.device_workers import worker_device
from engine.interop.tracking import after_job

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 5.0         # the default ($COMPFAIR_HEARTBEAT_S overrides)
POLL_INTERVAL_S = 1.0
DEFAULT_IDLE_EXIT_S = 600.0


def heartbeat_interval_s() -> float:
    return env_seconds(HEARTBEAT_ENV, HEARTBEAT_INTERVAL_S)


def _run_eval(ctx: JobContext) -> dict:
    # imported with the first eval job: the sampler's stack (transformers and what it loads)
    # stays out of the worker's start-up, so a store it cannot use is refused at once
    from engine.evaluation.runner import run_eval  # on use: transformers
    return run_eval(ctx)


# job kind -> the function that runs a job of that kind (its context in, its result out)
RUNNERS: Registry[Callable[[JobContext], dict]] = Registry("job kind", "kind", instantiate=False)
RUNNERS.register(_run_eval, name="eval")
RUNNERS.register(run_distill, name="distill")
RUNNERS.register(run_prune, name="prune")
RUNNERS.register(run_quantize, name="quantize")
RUNNERS.register(run_shard, name="eval_shard")


def run_job_kind(ctx: JobContext) -> dict:
    """Dispatch to the job kind's runner."""
    runner = RUNNERS.get(ctx.spec.kind)
    if runner is None:
        raise JobFailed(f"no runner for job kind {ctx.spec.kind!r}")
    return runner(ctx)


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
        self.heartbeat_s = heartbeat_interval_s()
        self.stop_reason: str | None = None   # why the worker stopped early (store not writable)
        self._stop = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------
    def _register(self) -> None:
        worker_rows.register_worker(self.store, self.id, os.getpid(), status="idle",
                                    log_path=str(self.home.logs_dir / "worker.log"), device=worker_device())

    def _heartbeat_loop(self) -> None:
        """Mark the worker and its job alive every HEARTBEAT_INTERVAL_S. A failed beat (store
        busy or full) is logged and retried: a heartbeat that stopped for good would let
        another worker take the job as orphaned while it still runs."""
        store = None
        last_error = ""
        try:
            while not self._stop.wait(self.heartbeat_s):
                try:
                    store = store or Store(self.home)   # this thread's own connection
                    holding = fencing.held()            # (job, lease), read as one value
                    if not worker_rows.worker_heartbeat(store, self.id, holding and holding[0],
                                                        holding and holding[1]) and holding:
                        log.warning("job %s: heartbeat not written (the job ended or another "
                                    "worker took it over)", holding[0])
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
            signal.signal(signal.SIGINT, interrupt)    # Ctrl-C on a foreground worker: the same

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
        # proof that this process serves this home (engine.worker_lock), held until it exits
        self.lock = worker_lock.hold(self.home, self.id)
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
                    # rows copied with the home name live workers of another home: stop them,
                    # so that their jobs are recovered here at once
                    worker_lock.stop_foreign(self.store)
                    job_sweeps.recover_orphans(self.store)
                    job_sweeps.fail_blocked(self.store)
                    job_sweeps.cancel_stuck(self.store)
                    row = queue.claim(self.store, self.id)
                except sqlite3.OperationalError as exc:
                    if is_store_write_error(exc):
                        raise
                    # busy beyond the timeout (a long writer elsewhere): try again shortly
                    log.warning("the queue is busy (%s); retrying", exc)
                    time.sleep(POLL_INTERVAL_S)
                    continue
                if row is None:
                    if self.once and not queue.waiting_on_running(self.store):
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
            if beat.is_alive():       # no thread of ours may outlive the worker (exit 134)
                beat.join(timeout=max(10.0, 2 * self.heartbeat_s))
            try:
                worker_rows.stop_worker(self.store, self.id)
            except sqlite3.Error as exc:  # the pid check finds this worker dead anyway
                log.warning("could not mark worker %s stopped: %s", self.id, exc)
            self.lock.release()
        return ran

    # -- one job -------------------------------------------------------------------------
    def run_one(self, row: dict) -> str:
        """Run the claimed job `row` under its claim's lease; returns "done", "failed",
        "cancelled" or "lost" (another worker took the job over: it was left to that worker,
        nothing more written)."""
        job_id, lease = row["id"], row.get("lease")
        self.current_job = job_id
        if lease is not None:
            fencing.hold(job_id, lease)
        try:
            return self._run_held(row)
        except BaseException as exc:
            if not is_lease_lost(exc):
                raise
            log.warning("job %s: stopped, writing nothing more: this worker (%s) no longer holds "
                        "it (lease %s); another worker took it over after this one was presumed "
                        "dead (%s)", job_id, self.id, lease, exc)
            return "lost"
        finally:
            fencing.release()
            self.current_job = None

    def _run_held(self, row: dict) -> str:
        job_id, lease = row["id"], row.get("lease")
        try:
            spec = queue.job_spec(row)
        except SpecError as exc:
            queue.finish(self.store, job_id, "failed", error=f"invalid spec: {exc}", lease=lease)
            return "failed"
        ctx = JobContext(self.store, job_id, spec, self.models, self.id, lease=lease)
        attempt = f" (attempt {row['attempts']})" if row["attempts"] > 1 else ""
        ctx.log(f"started {spec.kind} job{attempt} on worker {self.id}")
        status = "failed"
        try:
            result = self.execute(ctx)
            queue.finish(self.store, job_id, "done", result=result, lease=lease)
            ctx.progress(1, 1, "done", force=True)
            ctx.log("finished")
            status = "done"
            after_job(self.store, job_id)     # --log mlflow / wandb; never raises
        except JobCancelled:
            queue.finish(self.store, job_id, "cancelled", error="cancelled by user", lease=lease)
            ctx.log("cancelled; stored samples and checkpoints are kept", level="warning")
            status = "cancelled"
        except (Interrupted, KeyboardInterrupt):
            now = queue.requeue_interrupted(self.store, job_id, self.id, lease)
            if now == "queued":
                ctx.log("worker stopped; job requeued to resume", level="warning")
            elif now == "cancelled":
                ctx.log("worker stopped while cancelling; job cancelled", level="warning")
            else:        # another worker took it over as orphaned meanwhile: leave it be
                log.warning("job %s is no longer held by worker %s; not requeued", job_id, self.id)
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is stored with its reason
            if is_lease_lost(exc):
                raise
            reason = failure_reason(exc)
            log.error("job %s failed: %s\n%s", job_id, reason, traceback.format_exc())
            if stops_the_worker(exc):
                self.stop_reason = reason          # the next job would fail the same way
            self._store_failure(ctx, reason)
            if is_out_of_memory(exc):
                self.models.clear()
        return status

    def execute(self, ctx: JobContext) -> dict:
        """Run the job's code and return its result (raising what it raises); a worker that
        runs jobs elsewhere (engine.scale.ray_driver) overrides this, keeping everything around
        it: claim, lease, outcome, failure reasons."""
        return run_job_kind(ctx)

    def _store_failure(self, ctx: JobContext, reason: str) -> bool:
        """Mark the job failed with `reason`. When the store cannot be written, release the
        disk set aside, checkpoint and truncate the write-ahead log, and try once more.
        Returns whether the failure was stored."""
        for attempt in (1, 2):
            try:
                queue.finish(self.store, ctx.job_id, "failed", error=reason, lease=ctx.lease)
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
