"""One training process of a data-parallel distillation (`DistillSpec.processes` > 1), started
by `engine.compression.distill_ddp` with torch's spawn launcher.

Every process loads the teacher, the initial student and the job's training blocks from the
job's checkpoint folder (written there by the job's process), joins the process group through
Accelerate (gloo on CPU, nccl on CUDA, one GPU per process), and runs the ordinary `Distiller`
loop on its share of each effective batch: rows `[rank * B/N, (rank + 1) * B/N)` of the batch a
single process would train on. DDP averages the gradients, so a step is the single-process
step up to the order of floating-point sums. Rank 0 alone talks to the job's process (progress,
logs, and one question per step: go on, or save and stop), writes the checkpoints and, at the
end, a last checkpoint holding the trained student, which the job's process registers. The
other ranks learn rank 0's answer through a broadcast, so all stop at the same step."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue as queue_module
import signal
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from engine.compression.checkpoint import DATA_FILE, safe_load
from engine.compression.distill import Distiller, TrainOutcome
from engine.errors import JobCancelled
from engine.specs import DistillSpec

GO, SAVE_AND_STOP = 0, 1          # rank 0's answer to "may I go on?"
MODELS_DIR = "ddp-models"         # under the checkpoint folder: teacher/ and student/
PROCESS_GROUP_TIMEOUT_S = 1800    # a collective waits this long for a stalled rank
ORPHAN_POLL_S = 1.0               # rank 0 checks this often that the job's process is alive


def backend_for(device_type: str) -> str:
    """The torch.distributed backend of training processes on `device_type` devices."""
    return "nccl" if device_type == "cuda" else "gloo"


@dataclass(frozen=True)
class RankTask:
    """What a training process needs to know; the same for every rank but `rank`."""

    rank: int
    world: int
    port: int
    device_type: str               # "cpu" (gloo) or "cuda" (nccl)
    folder: str                    # the job's checkpoint folder
    spec: DistillSpec
    identity: dict[str, Any]       # what a checkpoint must match to be resumed
    teacher_dtype: str
    threads: int                   # torch CPU threads of this process
    parent_pid: int

    @property
    def main(self) -> bool:
        return self.rank == 0


class ParentLink:
    """The `Reporter` of every rank. Rank 0 sends progress and logs to the job's process and
    asks it, before each step and each checkpoint, whether to go on; others send nothing."""

    def __init__(self, task: RankTask, up, down, device: torch.device):
        self.task, self.up, self.down, self.device = task, up, down, device

    def progress(self, done: float, total: float, message: str = "", *, force: bool = False,
                 **data: Any) -> None:
        if self.task.main:
            self.up.put(("progress", done, total, message, force, data))

    def log(self, message: str, level: str = "info", **data: Any) -> None:
        if self.task.main:
            self.up.put(("log", message, level, data))

    def ask(self, purpose: str) -> int:
        """Rank 0: the job process's answer (GO or SAVE_AND_STOP). If that process is gone,
        exit at once writing nothing: the job is another worker's to resume."""
        self.up.put(("ask", purpose))
        while True:
            try:
                return int(self.down.get(timeout=ORPHAN_POLL_S))
            except queue_module.Empty:
                if os.getppid() != self.task.parent_pid:
                    os._exit(3)

    def ensure_lease(self) -> None:
        """Rank 0, before it writes a checkpoint: the job process checks it still holds the
        job (and kills the ranks unanswered when it does not, so nothing is written)."""
        if self.task.main:
            self.ask("save")

    def check_cancelled(self) -> None:
        """Collective: every rank raises JobCancelled (the loop saves, rank 0 writing) when the
        job process says stop: cancelled by the user, or the worker asked to stop."""
        verdict = torch.tensor([self.ask("step") if self.task.main else GO], device=self.device)
        dist.broadcast(verdict, src=0)
        if int(verdict.item()) == SAVE_AND_STOP:
            raise JobCancelled()


class RankDistiller(Distiller):
    """The `Distiller` loop on this rank's share of each batch, DDP-wrapped after resuming."""

    def __init__(self, *args: Any, task: RankTask, accelerator, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.task, self.accelerator = task, accelerator
        self.local_batch = self.effective_batch // task.world
        self.micro_batch = min(self.spec.batch_size, self.local_batch)
        self.grad_accum = -(-self.local_batch // self.micro_batch)

    def _batch(self) -> torch.Tensor:
        rows = super()._batch()
        start = self.task.rank * self.local_batch
        return rows[start:start + self.local_batch]

    def _micro_step(self, last: bool):
        # gradients are all-reduced once per step, in the last micro-batch's backward
        return contextlib.nullcontext() if last else self.train_model.no_sync()

    def try_resume(self) -> int:
        step = super().try_resume()        # every rank reads rank 0's checkpoint
        self.train_model = self.accelerator.prepare_model(self.student)
        return step

    def _step(self) -> dict[str, float]:
        """One step; the loss terms are averaged over the ranks (what one process reports)."""
        terms = super()._step()
        keys = list(terms)
        values = torch.tensor([terms[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(values)
        return {k: float(v) / self.task.world for k, v in zip(keys, values.tolist())}

    def save(self) -> None:
        if self.task.main:
            super().save()                 # asks the job process first (ParentLink.ensure_lease)

    def run(self) -> TrainOutcome:
        outcome = super().run()
        self.save()                        # the trained student, for the job process to register
        return outcome


def _load_models(task: RankTask, device: torch.device):
    from transformers import AutoModelForCausalLM
    models = Path(task.folder) / MODELS_DIR
    teacher = AutoModelForCausalLM.from_pretrained(models / "teacher",
                                                   dtype=getattr(torch, task.teacher_dtype))
    teacher.to(device).eval().requires_grad_(False)
    student = AutoModelForCausalLM.from_pretrained(models / "student", dtype=torch.float32)
    return teacher, student.to(device)


def _train(task: RankTask, up, down) -> TrainOutcome:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(task.port), RANK=str(task.rank),
                      WORLD_SIZE=str(task.world), LOCAL_RANK=str(task.rank),
                      LOCAL_WORLD_SIZE=str(task.world), OMP_NUM_THREADS=str(task.threads))
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    cpu = task.device_type == "cpu"
    group = InitProcessGroupKwargs(backend=backend_for(task.device_type),
                                   timeout=timedelta(seconds=PROCESS_GROUP_TIMEOUT_S))
    accelerator = Accelerator(cpu=cpu, kwargs_handlers=[group])
    torch.set_num_threads(task.threads)
    device = accelerator.device
    data = safe_load(Path(task.folder) / DATA_FILE)
    if not data:
        raise RuntimeError(f"no training data in {task.folder}")
    teacher, student = _load_models(task, device)
    link = ParentLink(task, up, down, device)
    distiller = RankDistiller(student, teacher, data["train"], data["heldout"], task.spec, device,
                              Path(task.folder), link, task.identity, task=task,
                              accelerator=accelerator)
    return distiller.run()


def rank_main(rank: int, template: RankTask, up, down) -> None:
    """Entry point of training process `rank` (torch's spawn passes the index first)."""
    task = dataclasses.replace(template, rank=rank)
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C reaches the job process, which decides
    try:
        outcome = _train(task, up, down)
        if task.main:
            up.put(("done", dataclasses.asdict(outcome)))
    except JobCancelled:
        if task.main:
            up.put(("stopped",))
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [""])[0]
        up.put(("failed", task.rank, f"{type(exc).__name__}: {reason}"))
        raise
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
