"""What `compfair workers` shows: each live worker with its device, status, current job,
progress and memory (resident set size from /proc; GPU memory from nvidia-smi when the machine
has one). Memory is read from outside the worker by pid, so only workers on this host have it.
Torch-free: the CLI reads it cheaply."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass

from engine.launcher import alive_workers
from engine.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerView:
    """One line of `compfair workers`."""

    worker_id: str
    pid: int | None
    host: str
    device: str | None
    status: str
    job_id: int | None
    job: str | None            # the current job's kind and label/title
    progress: float | None     # 0..1 of the current job
    message: str | None        # the current job's progress message
    rss_bytes: int | None
    gpu_bytes: int | None

    def to_dict(self) -> dict:
        return asdict(self)


def rss_bytes(pid: int) -> int | None:
    """Resident memory of process `pid` (Linux /proc), or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def gpu_bytes_by_pid() -> dict[int, int]:
    """{pid: GPU memory used} of the compute processes nvidia-smi lists ({} without it)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return {}
    try:
        out = subprocess.run([smi, "--query-compute-apps=pid,used_memory",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed: %s", exc)
        return {}
    used: dict[int, int] = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            used[int(parts[0])] = used.get(int(parts[0]), 0) + int(parts[1]) * 1024 * 1024
    return used


def worker_views(store: Store) -> list[WorkerView]:
    """Every live worker, oldest first, with its current job and memory."""
    workers = sorted(alive_workers(store), key=lambda w: (w.get("started_at") or 0, w["id"]))
    jobs = {r["worker_id"]: r for r in store.query(
        "SELECT id, kind, label, progress, progress_message, worker_id FROM jobs "
        "WHERE status = 'running'")}
    gpu = gpu_bytes_by_pid() if workers else {}
    here = os.uname().nodename
    views = []
    for w in workers:
        job = jobs.get(w["id"])
        local = w.get("host") == here and w.get("pid")
        views.append(WorkerView(
            worker_id=w["id"], pid=w.get("pid"), host=w.get("host") or "", device=w.get("device"),
            status=w.get("status") or "", job_id=job["id"] if job else None,
            job=(f"{job['kind']}" + (f" {job['label']}" if job["label"] else "")) if job else None,
            progress=job["progress"] if job else None,
            message=job["progress_message"] if job else None,
            rss_bytes=rss_bytes(w["pid"]) if local else None,
            gpu_bytes=gpu.get(w["pid"]) if local else None))
    return views
