"""Measuring a phase: wall time and load average at its start and end (`phase`), peak memory
(`PeakMemory`: resident set size sampled every 20 ms, CUDA's maximum allocated memory on a GPU),
and waiting for the GPU before a clock is read (`sync`)."""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

from engine.bench.options import Say


class PeakMemory:
    """Peak resident set size (sampled) and CUDA max allocated memory during a block."""

    def __init__(self, device) -> None:
        self.device = device
        self.rss_start = self.rss_peak = rss()
        self.cuda_peak: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="bench-rss", daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.rss_peak = max(self.rss_peak, rss())

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            import torch
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.rss_peak = max(self.rss_peak, rss())
        if self.device.type == "cuda":
            import torch
            torch.cuda.synchronize(self.device)
            self.cuda_peak = int(torch.cuda.max_memory_allocated(self.device))

    def record(self) -> dict[str, Any]:
        return {"peak_rss_bytes": self.rss_peak, "rss_growth_bytes": self.rss_peak - self.rss_start,
                "peak_cuda_bytes": self.cuda_peak}


def keep_round(loads: list[str], peaks: dict[str, Any], record: dict, memory: PeakMemory) -> None:
    """Add a measured round's load-average span (`phase`'s record) to `loads` and its memory
    figures to `peaks`, keeping the largest of each."""
    loads.append(f"{record['load_start']}-{record['load_end']}")
    for key, value in memory.record().items():
        if value is not None:
            peaks[key] = max(peaks.get(key) or 0, value)


def rss() -> int:
    """This process's resident set size (the peak so far where psutil is missing)."""
    try:
        import psutil
        return int(psutil.Process().memory_info().rss)
    except ImportError:  # pragma: no cover - psutil comes with accelerate
        import resource
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def load_average() -> float:
    """The 1-minute load average: how busy the (shared) machine was."""
    return round(os.getloadavg()[0], 2)


@contextmanager
def phase(record: dict, say: Say, name: str) -> Iterator[None]:
    """Announce a phase and record its wall time and the load average at its start and end."""
    say(f"{name}...")
    record["load_start"] = load_average()
    started = time.perf_counter()
    yield
    record["wall_s"] = round(time.perf_counter() - started, 3)
    record["load_end"] = load_average()


def sync(device) -> None:
    """Wait for queued GPU work, so that a clock read after it measures the work."""
    if device.type == "cuda":
        import torch
        torch.cuda.synchronize(device)
