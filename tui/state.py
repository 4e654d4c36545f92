"""What the app's screens share: the compfair home, the engine Store of the UI thread, one
background reader thread with its own Store (sqlite connections stay on their thread), and
writing exports under the home's reports/ folder."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from engine import api
from engine.api import Home, safe_name, Store

T = TypeVar("T")
EXPORT_FORMATS = (("csv", "CSV"), ("md", "Markdown table"), ("json", "JSON"))


class Backend:
    """`backend.store` for quick reads and writes on the UI thread;
    `await backend.read(fn, *args)` runs `fn(store, *args)` on the reader thread."""

    def __init__(self, home: Home):
        self.home = home
        self._store: Store | None = None
        self._reader_store: Store | None = None
        # Opening a new store creates and migrates it: the UI thread and the reader thread
        # doing that at once fail with "database is locked", so they open one at a time.
        self._open_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compfair-reader")

    @property
    def store(self) -> Store:
        if self._store is None:
            with self._open_lock:
                self._store = Store(self.home, display=True)
        return self._store

    def _call(self, fn: Callable[..., T], args: tuple, kwargs: dict) -> T:
        if self._reader_store is None:
            with self._open_lock:
                self._reader_store = Store(self.home, display=True)
        return fn(self._reader_store, *args, **kwargs)

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(self._call, fn, args, kwargs))

    def close(self) -> None:
        def close_reader() -> None:
            if self._reader_store is not None:
                self._reader_store.close()
                self._reader_store = None
        try:
            self._executor.submit(close_reader).result(timeout=5)
        except Exception:  # noqa: BLE001 - closing on exit; a stuck read only delays it
            pass
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._store is not None:
            self._store.close()
            self._store = None


def export(home: Home, records: Sequence[dict], fmt: str, stem: str) -> Path:
    """Write `records` as csv/md/json to reports/<stem>-<time>.<fmt>; returns the path."""
    text = api.export_records(list(records), fmt)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = home.reports_dir / f"{safe_name(stem)}-{stamp}.{fmt}"
    n = 1
    while path.exists():
        n += 1
        path = home.reports_dir / f"{safe_name(stem)}-{stamp}-{n}.{fmt}"
    path.write_text(text, encoding="utf-8")
    return path
