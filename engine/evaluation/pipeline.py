"""Scoring and storing off the generation thread.

The generation loop hands each finished batch to a `SampleWriter`; its thread scores the texts
(one batched scorer call per batch) and stores the rows with its own `Store` connection (SQLite
connections are per thread), so scoring and the database overlap the next batch's sampling.
The queue is bounded: generation never runs more than a few batches ahead of storage, so an
interrupted job loses at most those batches."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

from engine.paths import Home
from engine.store import Store

log = logging.getLogger(__name__)

_STOP = object()


class SampleWriter:
    """`put(batch)` queues a batch; `close()` waits until every queued batch is stored.

    `build_rows(batch) -> list[dict]` scores a batch and returns its sample rows; it runs on
    the writer thread. An exception there is re-raised in the caller at the next `put` or at
    `close`, after which nothing more is stored."""

    def __init__(self, home: Home, run_id: int, build_rows: Callable[[object], list[dict]],
                 max_pending: int = 2, open_store: Callable[[], Store] | None = None):
        self.home, self.run_id, self.build_rows = home, run_id, build_rows
        # the writer thread's store: its own connection to the home's (default), or what the
        # job's store hands out for another thread (`Store.for_thread`: a relay under Ray)
        self.open_store = open_store or (lambda: Store(home))
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self.stored_rows = 0
        self.scoring_seconds = 0.0
        self._thread = threading.Thread(target=self._work, name=f"score-run-{run_id}", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        store = self.open_store()
        try:
            while True:
                batch = self._queue.get()
                if batch is _STOP:
                    return
                if self._error is not None:
                    continue            # drain without storing after a failure
                try:
                    start = time.perf_counter()
                    rows = self.build_rows(batch)
                    self.scoring_seconds += time.perf_counter() - start
                    store.add_samples(self.run_id, rows)
                    self.stored_rows += len(rows)
                except BaseException as exc:  # noqa: BLE001 - handed to the job thread
                    log.debug("scoring thread failed", exc_info=True)
                    self._error = exc
        finally:
            store.close()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, batch: object) -> None:
        self._raise_if_failed()
        while True:
            try:
                self._queue.put(batch, timeout=0.5)
                return
            except queue.Full:
                self._raise_if_failed()
                if not self._thread.is_alive():
                    raise RuntimeError("the scoring thread stopped unexpectedly")

    def close(self, timeout: float | None = None) -> None:
        """Store what is queued, stop the thread, and re-raise its failure if any."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
        self._raise_if_failed()
