"""Data-parallel distillation: a distill job with `processes` N > 1 trains in N processes
(`engine.compression.distill_rank`), DDP through Accelerate, gloo on CPU and nccl on CUDA
(one visible GPU per process), each taking 1/N of every effective batch.

The job's process (the one holding the job's lease) stays in charge: it writes the teacher and
the initial student where the training processes load them, relays rank 0's progress and logs
into the store, answers rank 0's per-step question from the store (cancelled? still ours?) and
the worker's signals (SIGTERM / Ctrl-C: save and stop), and at the end loads the trained student
from rank 0's last checkpoint, so the job registers it once, through the same code as a
single-process job. A lost lease kills the training processes without a save; a training process
that fails kills the others and fails the job with its one-line reason; training processes
whose job process died exit without writing.

The training processes are started with spawn (fork is unsafe with CUDA and with the worker's
threads), which imports the parent's main module again: a program that runs jobs in its own
process, rather than through `compfair worker`, must keep its top level under
`if __name__ == "__main__":`, as with any spawn-based multiprocessing."""

from __future__ import annotations

import logging
import os
import queue as queue_module
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.multiprocessing.spawn import ProcessException

from engine.compression.checkpoint import load_training_state
from engine.compression.distill import TrainOutcome
from engine.compression.model_writer import write_atomically
from engine.compression.distill_rank import (GO, MODELS_DIR, SAVE_AND_STOP, RankTask, backend_for,
                                             rank_main)
from engine.context import JobContext
from engine.errors import JobCancelled, JobFailed
from engine.fencing import is_lease_lost
from engine.specs import DistillSpec

log = logging.getLogger(__name__)

STOP_GRACE_S = 120.0       # after a stop request, how long the processes get to save and exit
POLL_S = 0.2


def _check_devices(device: torch.device, n: int) -> None:
    if device.type not in ("cpu", "cuda"):
        raise JobFailed(f"processes {n}: data-parallel training runs on cpu or cuda, not "
                        f"{device.type}")
    if device.type == "cuda" and torch.cuda.device_count() < n:
        raise JobFailed(f"processes {n} needs {n} CUDA devices (one per process); this worker "
                        f"sees {torch.cuda.device_count()}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_models(ctx: JobContext, folder: Path, student: nn.Module, teacher: nn.Module) -> None:
    """The teacher and the initial student, for the training processes to load (each folder
    written whole under a temporary name, then renamed)."""
    ctx.ensure_lease()
    for name, model in (("teacher", teacher), ("student", student)):
        write_atomically(folder / name, model.save_pretrained)


class _Relay:
    """The job process's side while the training processes run."""

    def __init__(self, ctx: JobContext, up, down, processes):
        self.ctx, self.up, self.down, self.processes = ctx, up, down, processes
        self.pending: BaseException | None = None     # why to stop: cancel, SIGTERM, Ctrl-C
        self.awaiting = False                           # rank 0 waits for an answer
        self.outcome: dict[str, Any] | None = None
        self.failure: str | None = None

    def _reply(self, verdict: int) -> None:
        self.down.put(verdict)
        self.awaiting = False

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "log":
            self.ctx.log(message[1], message[2], **message[3])
        elif kind == "progress":
            _, done, total, text, force, data = message
            self.ctx.progress(done, total, text, force=force, **data)
        elif kind == "ask":
            self.awaiting = True
            if message[1] == "save":
                self.ctx.ensure_lease()               # LeaseLost: nothing more is written
            elif self.pending is None:
                try:
                    self.ctx.check_cancelled()
                except JobCancelled as exc:
                    self.pending = exc
            self._reply(GO if message[1] == "save" or self.pending is None else SAVE_AND_STOP)
        elif kind == "done":
            self.outcome = message[1]
        elif kind == "failed":
            self.failure = self.failure or f"training process {message[1]} failed: {message[2]}"

    def _pump(self, timeout: float) -> None:
        try:
            message = self.up.get(timeout=timeout)
        except queue_module.Empty:
            return
        while True:
            self._handle(message)
            try:
                message = self.up.get_nowait()
            except queue_module.Empty:
                return

    def kill(self) -> None:
        for process in self.processes.processes:
            if process.is_alive():
                process.kill()
        for process in self.processes.processes:
            process.join()

    def run(self) -> dict[str, Any]:
        """Serve the training processes until they end; their outcome (rank 0's), or the
        reason to stop re-raised once they have saved and exited."""
        deadline: float | None = None
        while True:
            try:
                self._pump(POLL_S)
                if self.processes.join(timeout=0.01):
                    break
            except ProcessException as exc:           # one failed; torch killed the others
                self._drain()
                lines = [line for line in str(exc).splitlines() if line.strip()]
                raise JobFailed(self.failure or f"training process {exc.error_index} failed: "
                                f"{lines[-1].strip() if lines else type(exc).__name__}") from None
            except BaseException as exc:   # noqa: BLE001 - a signal: save and stop; else fail
                if isinstance(exc, Exception) or is_lease_lost(exc):   # lease lost, store error
                    self.kill()
                    raise
                if self.pending is None:
                    self.pending = exc
                    self.ctx.log(f"stopping the training processes ({type(exc).__name__})",
                                 level="warning")
                if self.awaiting:
                    self._reply(SAVE_AND_STOP)
            if self.pending is not None and deadline is None:
                deadline = time.time() + STOP_GRACE_S
            if deadline is not None and time.time() > deadline:
                log.warning("job %s: the training processes did not stop within %.0f s; killed",
                            self.ctx.job_id, STOP_GRACE_S)
                self.kill()
                break
        self._drain()
        if self.pending is not None:
            raise self.pending
        if self.outcome is None:
            raise JobFailed(self.failure or "the training processes ended without a result")
        return self.outcome

    def _drain(self) -> None:
        try:
            self._pump(0.0)
        except Exception as exc:  # noqa: BLE001 - a late progress write must not hide the outcome
            log.warning("job %s: %s", self.ctx.job_id, exc)


def train_data_parallel(ctx: JobContext, student: nn.Module, teacher: nn.Module,
                        spec: DistillSpec, device: torch.device,
                        identity: dict[str, Any]) -> TrainOutcome:
    """Train `student` towards `teacher` in `spec.processes` processes on the training blocks
    already in the job's checkpoint folder; loads the trained weights into `student`."""
    n = spec.processes
    _check_devices(device, n)
    folder = ctx.checkpoint_dir
    _write_models(ctx, folder / MODELS_DIR, student, teacher)
    student.to("cpu")          # rank 0 trains its own copy on this device: free the room
    task = RankTask(rank=0, world=n, port=_free_port(), device_type=device.type,
                    folder=str(folder), spec=spec, identity=identity,
                    teacher_dtype=str(next(teacher.parameters()).dtype).replace("torch.", ""),
                    threads=max(1, torch.get_num_threads() // n), parent_pid=os.getpid())
    ctx.log(f"training in {n} processes (DDP over {backend_for(device.type)}, "
            f"{spec.batch_size * spec.grad_accum // n} rows of each batch per process)",
            processes=n, backend=backend_for(device.type))
    context = torch.multiprocessing.get_context("spawn")
    up, down = context.Queue(), context.Queue()
    started = time.time()
    processes = torch.multiprocessing.start_processes(rank_main, args=(task, up, down), nprocs=n,
                                                      join=False, start_method="spawn")
    outcome = _Relay(ctx, up, down, processes).run()
    state = load_training_state(folder)
    if not state or int(state["step"]) != spec.steps:
        raise JobFailed("the training processes ended without saving the trained student")
    student.load_state_dict(state["student"])
    student.to(device)
    shutil.rmtree(folder / MODELS_DIR, ignore_errors=True)
    ctx.log(f"{n} training processes finished in {time.time() - started:.1f} s")
    return TrainOutcome(**outcome)
