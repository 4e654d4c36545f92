"""Throttled progress reports for the items of an eval run."""

from __future__ import annotations

import time
from typing import Any

from engine.context import JobContext

PROGRESS_EVERY_S = 1.0


class ThrottledProgress:
    """Reports progress to the job at most every PROGRESS_EVERY_S seconds (or when forced),
    with throughput since this attempt started."""

    def __init__(self, ctx: JobContext, total: int, already: int, unit: str):
        self.ctx, self.total, self.already, self.unit = ctx, total, already, unit
        self.started = time.perf_counter()
        self.last = 0.0

    def __call__(self, done_now: float, *, force: bool = False, **data: Any) -> None:
        now = time.perf_counter()
        if not force and now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        rate = done_now / elapsed
        done = self.already + done_now
        self.ctx.progress(done, self.total, f"{int(done):,}/{self.total:,} {self.unit} · {rate:.2f} {self.unit}/s",
                          force=force, **{f"{self.unit}_per_s": rate, **data})
