"""What the app's screens share: the compfair home and one engine `Store` per thread
(sqlite connections are not shared across threads), plus writing exports under reports/."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Sequence

from engine import api
from engine.paths import Home, safe_name
from engine.store import Store

EXPORT_FORMATS = (("csv", "CSV"), ("md", "Markdown"), ("json", "JSON"))


class Stores:
    """`stores.get()` returns the calling thread's Store (opened on first use)."""

    def __init__(self, home: Home):
        self.home = home
        self._local = threading.local()
        self._all: list[Store] = []
        self._lock = threading.Lock()

    def get(self) -> Store:
        store = getattr(self._local, "store", None)
        if store is None:
            store = Store(self.home)
            self._local.store = store
            with self._lock:
                self._all.append(store)
        return store

    def close(self) -> None:
        with self._lock:
            for store in self._all:
                try:
                    store.close()
                except Exception:  # noqa: BLE001 - closing on exit; nothing to do about it
                    pass
            self._all.clear()
        self._local = threading.local()


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
