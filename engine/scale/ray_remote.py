"""The Ray side of `compfair worker --ray`: a Ray task that runs one claimed job's real code
(`engine.worker.run_job_kind`) against a store that relays every read and write to the driver.

The driver (engine.scale.ray_driver) is the only process that opens the SQLite store. The task
gets a `RemoteStore`: each call (samples, progress, events, runs, metrics, model registration,
the job's operations on its own queue row) is sent to the driver over a pair of Ray queues and
answered there by the real store, under the driver's lease (engine.fencing), before the call
returns. So a sample the task has stored is in the database, and a driver that dies takes
nothing with it that was stored; its task cannot write anything afterwards.

Files are not relayed: model folders, checkpoints and caches are written by the task under the
compfair home, so the home must be on a path every Ray node sees (a shared filesystem) at the
same absolute path. Kept free of torch and ray at import (the driver imports this module)."""

from __future__ import annotations

import functools
import logging
import pickle
import queue as stdlib_queue
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from engine.paths import Home
from engine.specs import JobSpec
from engine.errors import DriverGone
from engine.context import JobContext

log = logging.getLogger(__name__)

# the Store methods a job's code calls, relayed as they are (the driver refuses any other)
RELAYED = frozenset({
    "add_event", "events", "upsert_model", "model", "model_by_source", "models", "lineage",
    "start_run", "finish_run", "add_samples", "unscored_continuations",
    "set_continuation_quality", "sample_keys", "samples", "run", "run_for_job", "metrics",
    "query", "one"})
# a job's operations on its own queue row (engine.context.QueueRows), relayed by name
ROW_OPERATIONS = frozenset({"heartbeat", "cancel_requested", "holds", "set_result", "job"})
ANSWER_TIMEOUT_S = 600.0      # a driver silent this long is gone: the job stops


@dataclass(frozen=True)
class RemoteJob:
    """What the driver hands a Ray task: the claimed job and where its home is."""

    home_root: str
    job_id: int
    spec: JobSpec
    lease: int | None
    worker_id: str


@dataclass(frozen=True)
class RemoteOutcome:
    """What a Ray task returns: the job's result, or what it raised (with its traceback)."""

    result: dict | None = None
    error: BaseException | None = None
    traceback: str = ""


class Channel:
    """One call at a time to the driver: (name, args, kwargs) out on `requests`, ("ok", value)
    or ("raised", exception) back on `answers`. Thread-safe: the job thread and its sample
    writer share it."""

    def __init__(self, requests, answers, timeout_s: float = ANSWER_TIMEOUT_S):
        self.requests, self.answers, self.timeout_s = requests, answers, timeout_s
        self._lock = threading.Lock()

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        from ray.util.queue import Empty
        with self._lock:
            self.requests.put((name, args, kwargs))
            try:
                status, value = self.answers.get(timeout=self.timeout_s)
            except (Empty, stdlib_queue.Empty) as exc:
                raise DriverGone(f"the driver did not answer {name} within "
                                 f"{self.timeout_s:.0f} s") from exc
        if status == "raised":
            raise value
        return value


class RemoteStore:
    """A Store look-alike whose every call is answered by the driver's store."""

    def __init__(self, home: Home, channel: Channel):
        self.home = home
        self._channel = channel

    def __getattr__(self, name: str):
        if name in RELAYED:
            return functools.partial(self._channel.call, name)
        raise AttributeError(f"a store relayed to the Ray driver has no {name!r}")

    def iter_samples(self, run_id: int) -> Iterator[dict]:
        yield from self._channel.call("samples", run_id)

    def job_rows(self) -> "RelayedRows":
        """The job-row operations (engine.context.job_rows), answered by the driver's queue."""
        return RelayedRows(self._channel)

    def for_thread(self) -> "RemoteStore":
        return self                       # the channel serialises the threads' calls

    def close(self) -> None:
        """Nothing to close: the driver owns the connection."""


class RelayedRows:
    """engine.context.QueueRows's five operations, each sent to the driver by its name."""

    def __init__(self, channel: Channel):
        self._channel = channel

    def __getattr__(self, name: str):
        if name in ROW_OPERATIONS:
            return functools.partial(self._channel.call, "row:" + name)
        raise AttributeError(name)


def portable(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling (so the driver sees its type: cancelled, lease lost, out
    of memory, disk full), else a RuntimeError with its type and message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any pickling failure
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def run_remote(job: RemoteJob, requests, answers) -> RemoteOutcome:
    """The Ray task: run `job` with a relayed store and the worker's own job code. Never
    raises: what the job raised comes back in the outcome for the driver to record."""
    from engine.model_loader import ModelCache  # on use: torch, numpy
    from engine.worker import run_job_kind  # on use: torch, numpy
    home = Home(Path(job.home_root))
    models = ModelCache(home)
    ctx = JobContext(RemoteStore(home, Channel(requests, answers)), job.job_id, job.spec, models,
                     job.worker_id, lease=job.lease)
    try:
        return RemoteOutcome(result=run_job_kind(ctx))
    except BaseException as exc:  # noqa: BLE001 - recorded by the driver like a local failure
        return RemoteOutcome(error=portable(exc), traceback=traceback.format_exc())
    finally:
        models.clear()
