"""What a running job sees: its spec, the store, progress reporting, cancellation, and the
worker's model cache. Job code raises `JobFailed` for a clean one-line failure."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import JobCancelled, LeaseLost
from engine import queue
from engine.paths import Home
from engine.specs import JobSpec
from engine.store import Store

if TYPE_CHECKING:  # the registry pulls in torch; the CLI and TUI import this module too
    from engine.model_loader import LoadedModel, ModelCache

log = logging.getLogger(__name__)


class QueueRows:
    """A running job's operations on its own row of the queue (engine.queue), on a local
    store. A store that relays to another process (the Ray task's) brings its own object with
    these five methods (`job_rows()`), naming the operations it relays itself."""

    def __init__(self, store: Store):
        self.store = store

    def heartbeat(self, job_id: int, fraction: float, message: str, *, lease: int | None) -> None:
        queue.heartbeat(self.store, job_id, fraction, message, lease=lease)

    def cancel_requested(self, job_id: int, lease: int | None = None) -> bool:
        return queue.cancel_requested(self.store, job_id, lease)

    def holds(self, job_id: int, lease: int) -> bool:
        return queue.holds(self.store, job_id, lease)

    def set_result(self, job_id: int, result: dict, *, lease: int | None) -> None:
        queue.set_result(self.store, job_id, result, lease=lease)

    def job(self, job_id: int) -> dict | None:
        return queue.job(self.store, job_id)


def job_rows(store: Any) -> Any:
    """The job-row operations for `store`: a relaying store's own (`job_rows()`, also through a
    wrapper such as a shard's store), else the queue's."""
    relayed = getattr(store, "job_rows", None)
    return relayed() if relayed is not None else QueueRows(store)

PROGRESS_EVENT_INTERVAL_S = 2.0
CANCEL_POLL_INTERVAL_S = 0.5


@dataclass
class JobContext:
    store: Store
    job_id: int
    spec: JobSpec
    models: ModelCache
    worker_id: str = "inline"
    lease: int | None = None          # the claim's fencing token (engine.fencing); None: unfenced
    _last_event: float = 0.0
    _last_cancel_poll: float = 0.0
    # ETA is measured per phase (a phase = a run of calls with the same total), from the first
    # call of the phase: set-up such as model loading or teacher sampling does not skew it, and
    # a resumed job's already-finished part does not count as speed.
    _phase: tuple[float, float, float] | None = None  # (total, started at, done at start)

    @property
    def home(self) -> Home:
        return self.store.home

    @property
    def checkpoint_dir(self) -> Path:
        path = self.home.checkpoints_dir / f"job-{self.job_id}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def progress(self, done: float, total: float, message: str = "", *, force: bool = False,
                 **data: Any) -> None:
        """Report progress (`done` of `total`). Updates the job row and heartbeat every call;
        writes a progress event at most every PROGRESS_EVENT_INTERVAL_S (and at completion).
        `data` (loss terms, tokens/s, ...) is stored with the event for the live view."""
        fraction = done / total if total else 0.0
        now = time.time()
        if self._phase is None or self._phase[0] != total:
            self._phase = (total, now, done)
        _, phase_start, phase_done = self._phase
        rate = (done - phase_done) / (now - phase_start) if now > phase_start else 0.0
        eta = (total - done) / rate if rate > 0 and done < total else None
        job_rows(self.store).heartbeat(self.job_id, fraction, message, lease=self.lease)
        if force or done >= total or now - self._last_event >= PROGRESS_EVENT_INTERVAL_S:
            self._last_event = now
            payload = {"done": done, "total": total, "fraction": fraction, "eta_s": eta, **data}
            self.store.add_event(self.job_id, message or f"{done}/{total}", kind="progress",
                                 data=payload)

    def log(self, message: str, level: str = "info", **data: Any) -> None:
        getattr(log, level if level in ("debug", "info", "warning", "error") else "info")(
            "job %s: %s", self.job_id, message)
        self.store.add_event(self.job_id, message, kind="log", level=level, data=data or None)

    def check_cancelled(self) -> None:
        """Raise JobCancelled if the user asked to cancel (LeaseLost if another worker took the
        job over); call between batches or steps, and from long computations (it polls the
        store at most every CANCEL_POLL_INTERVAL_S)."""
        now = time.time()
        if now - self._last_cancel_poll < CANCEL_POLL_INTERVAL_S:
            return
        self._last_cancel_poll = now
        if job_rows(self.store).cancel_requested(self.job_id, self.lease):
            raise JobCancelled()

    def ensure_lease(self) -> None:
        """Raise LeaseLost unless this worker still holds the job (before writing files)."""
        if self.lease is not None and not job_rows(self.store).holds(self.job_id, self.lease):
            raise LeaseLost(f"job {self.job_id} is no longer held under lease {self.lease}")

    def load_model(self, ref: str, *, fresh: bool = False) -> LoadedModel:
        """Load `ref` with the job's device/dtype (shared instance unless `fresh`)."""
        self.log(f"loading model {ref}")
        return self.models.load(ref, self.store, device=self.spec.device, dtype=self.spec.dtype,
                                fresh=fresh)

    def set_result(self, **result: Any) -> None:
        job_rows(self.store).set_result(self.job_id, result, lease=self.lease)
