"""One worker per device of a box: `compfair worker --devices all|0,1,3|cpu,cpu`.

Each worker is an ordinary detached worker (engine.launcher) started with its device pinned
in its environment: `CUDA_VISIBLE_DEVICES=<index>` for a GPU (its jobs see that one GPU as
`cuda:0`, so `device = "auto"` specs need no change), `CUDA_VISIBLE_DEVICES=""` for a CPU
worker. The worker records the device in its `workers` row (`worker_device`), which
`compfair workers` lists with the worker's status, current job, progress and memory.

The workers share the one SQLite queue: claiming is atomic, so jobs without dependencies
between them (a study's compressions, its evaluations, an eval's shards) run on them at once.
Kept free of torch at import (`--devices all` imports it to count the GPUs)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from engine import worker_rows
from engine.errors import UserError
from engine.launcher import store_for, worker_id_for
from engine.paths import Home
from engine.worker_lock import spawn_locked

log = logging.getLogger(__name__)

DEVICE_ENV = "COMPFAIR_WORKER_DEVICE"      # what a pinned worker records as its device
MAX_WORKERS = 64
ACCEPTED = "'all', GPU indices like 0,1,3, or cpu (repeatable: cpu,cpu)"


@dataclass(frozen=True)
class DeviceWorker:
    """A worker started for one device."""

    worker_id: str
    pid: int
    device: str          # "cuda:3" (the physical index) or "cpu"


def gpu_count() -> int:
    """CUDA GPUs visible to this process (0 without CUDA)."""
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_devices(text: str, n_gpus: int | None = None) -> tuple[str, ...]:
    """The devices `text` names, as "cuda:N" / "cpu" (UserError naming the value otherwise).
    `n_gpus` defaults to the GPUs of this machine (counted only when `text` names GPUs)."""
    raw = (text or "").strip().lower()
    if raw == "all":
        n = gpu_count() if n_gpus is None else n_gpus
        if n == 0:
            raise UserError("--devices all: this machine has no CUDA GPU; give cpu (or cpu,cpu "
                            "for several CPU workers)")
        return tuple(f"cuda:{i}" for i in range(n))
    parts = [p.strip() for p in raw.split(",")]
    if not raw or not all(parts):
        raise UserError(f"--devices {text!r} has an empty entry; give {ACCEPTED}")
    if len(parts) > MAX_WORKERS:
        raise UserError(f"--devices {text!r} names {len(parts)} workers; at most {MAX_WORKERS}")
    out = []
    for part in parts:
        if part == "cpu":
            out.append("cpu")
            continue
        if not part.isdigit():
            raise UserError(f"--devices {text!r}: {part!r} is not a device; give {ACCEPTED}")
        n = gpu_count() if n_gpus is None else n_gpus
        if int(part) >= n:
            raise UserError(f"--devices {text!r}: GPU {part} does not exist (this machine has "
                            f"{n} CUDA GPU{'s' if n != 1 else ''}"
                            + (f": 0 to {n - 1})" if n else "); give cpu"))
        device = f"cuda:{int(part)}"
        if device in out:
            raise UserError(f"--devices {text!r} names GPU {part} twice; one worker per GPU")
        out.append(device)
    return tuple(out)


def worker_device() -> str | None:
    """The device this worker process is pinned to, for its `workers` row: the one it was
    started for, else what CUDA_VISIBLE_DEVICES says, else None (not pinned)."""
    if os.environ.get(DEVICE_ENV):
        return os.environ[DEVICE_ENV]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return None
    return "cpu" if visible.strip() in ("", "-1") else f"cuda:{visible.strip()}"


def _pinned_env(home: Home, device: str) -> dict[str, str]:
    env = {**os.environ, "COMPFAIR_HOME": str(home.root), DEVICE_ENV: device}
    env["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1] if device.startswith("cuda:") else ""
    return env


def start_device_workers(home: Home, devices: tuple[str, ...], *, once: bool = False,
                         idle_exit_s: float = 600.0) -> list[DeviceWorker]:
    """Start one detached worker per entry of `devices` (engine.launcher's way: own session,
    output appended to the worker log, each holding its own lock of this home from its start,
    engine.worker_lock), each registered at once with its device."""
    log_path = home.logs_dir / "worker.log"
    args = ["--once"] if once else ["--idle-exit", str(idle_exit_s)]
    started = []
    with open(log_path, "ab") as out:
        os.chmod(log_path, 0o600)
        for device in devices:
            proc = spawn_locked(home, [sys.executable, "-m", "engine.cli", "worker", *args],
                                env=_pinned_env(home, device), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=str(Path(__file__).resolve().parents[2]))
            started.append(DeviceWorker(worker_id_for(proc.pid), proc.pid, device))
    with store_for(home) as store:
        for w in started:
            worker_rows.register_worker(store, w.worker_id, w.pid, status="starting",
                                        log_path=str(log_path), device=w.device)
    for w in started:
        log.info("worker %s (pid %d) started on %s", w.worker_id, w.pid, w.device)
    return started
