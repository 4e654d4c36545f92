"""Knowledge distillation training loop (Hinton et al., 2015; DistilGPT2 / HF
research_projects/distillation).

Loss per token, student logits s, teacher logits t, temperature T:

    alpha_ce  * T^2 * KL(softmax(t / T) || softmax(s / T))     soft targets
  + alpha_clm * CE(s, next token)                               hard targets
  + alpha_cos * (1 - cos(h_s, h_t))                             last hidden states (same width)

`distill=False` trains the same student on CE alone: the no-distillation baseline.

AdamW (no decay on biases and norms), linear warm-up then cosine decay to zero, gradient
accumulation, gradient clipping at 1.0, bf16 autocast on CUDA, optional gradient checkpointing.
A checkpoint (student weights, optimiser, scheduler, step, data position, RNG) is written
atomically every `checkpoint_every` steps and when the job is cancelled or the worker stopped;
a restarted job resumes from it. Out of memory halves the micro-batch (doubling accumulation,
so the effective batch is unchanged) and redoes the step.

With `processes` N > 1 the same loop runs in N processes (`distill_ddp`, `distill_rank`): a
subclass overrides the hooks `_batch` (this process's rows), `_micro_step` (DDP gradient sync)
and `train_model` (the DDP wrapper); in one process they do what the loop always did."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from engine.compression.checkpoint import (load_training_state, rng_state, save_training_state,
                                           set_rng_state)
from engine.errors import JobCancelled
from engine.devices import free_device_memory, is_out_of_memory
from engine.specs import DistillSpec

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
GRAD_CLIP = 1.0


class Reporter(Protocol):
    """What the loop needs from a job context."""

    def progress(self, done: float, total: float, message: str = "", *, force: bool = False,
                 **data: Any) -> None: ...

    def check_cancelled(self) -> None: ...

    def ensure_lease(self) -> None: ...

    def log(self, message: str, level: str = "info", **data: Any) -> None: ...


# -- loss -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LossWeights:
    distill: bool
    temperature: float
    alpha_ce: float
    alpha_clm: float
    alpha_cos: float

    @classmethod
    def from_spec(cls, spec: DistillSpec) -> "LossWeights":
        return cls(spec.distill, spec.temperature, spec.alpha_ce, spec.alpha_clm, spec.alpha_cos)

    @property
    def needs_teacher(self) -> bool:
        return self.distill and (self.alpha_ce > 0 or self.alpha_cos > 0)


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float = 1.0) -> torch.Tensor:
    """Mean over tokens of KL(softmax(t/T) || softmax(s/T)); logits [b, t, V] (float32)."""
    s = F.log_softmax(student_logits / temperature, dim=-1)
    t = F.log_softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="none").sum(-1).mean()


def next_token_ce(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of predicting ids[:, 1:] from logits[:, :-1]."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def distillation_loss(weights: LossWeights, ids: torch.Tensor, student_logits: torch.Tensor,
                      teacher_logits: torch.Tensor | None = None,
                      student_hidden: torch.Tensor | None = None,
                      teacher_hidden: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss, {term: value}) for one micro-batch; see the module docstring."""
    s = student_logits.float()
    ce = next_token_ce(s, ids)
    if not weights.distill:
        return ce, {"loss": ce.item(), "ce": ce.item()}
    loss = weights.alpha_clm * ce
    terms = {"ce": ce.item()}
    if weights.alpha_ce > 0 and teacher_logits is not None:
        vocab = min(s.shape[-1], teacher_logits.shape[-1])   # padded vocabularies may differ
        kl = soft_kl(s[..., :vocab], teacher_logits[..., :vocab].float(), weights.temperature)
        loss = loss + weights.alpha_ce * weights.temperature ** 2 * kl
        terms["kl"] = kl.item()
    if weights.alpha_cos > 0 and student_hidden is not None and teacher_hidden is not None \
            and student_hidden.shape[-1] == teacher_hidden.shape[-1]:
        cos = F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1).mean()
        loss = loss + weights.alpha_cos * (1 - cos)
        terms["cos"] = 1 - cos.item()
    terms["loss"] = loss.item()
    return loss, terms


@torch.no_grad()
def kl_to_teacher(student: nn.Module, teacher: nn.Module, blocks: torch.Tensor,
                  device: torch.device, batch_size: int = 4) -> float:
    """Mean per-token KL(teacher || student) at T=1 on `blocks` [n, seq_len] (held-out text)."""
    was_training = student.training
    student.eval()
    total, tokens = 0.0, 0
    for start in range(0, blocks.shape[0], batch_size):
        ids = blocks[start:start + batch_size].to(device)
        s = student(input_ids=ids, use_cache=False).logits.float()
        t = teacher(input_ids=ids, use_cache=False).logits.float()
        vocab = min(s.shape[-1], t.shape[-1])
        total += float(soft_kl(s[..., :vocab], t[..., :vocab])) * ids.numel()
        tokens += ids.numel()
    student.train(was_training)
    return total / max(tokens, 1)


# -- optimiser and schedule -----------------------------------------------------------------
def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; matrices decay, biases and norm weights (1-D) do not."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def warmup_cosine(warmup: int, total: int):
    """LR multiplier: linear 0 -> 1 over `warmup` steps, then cosine 1 -> 0 at `total`."""
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def set_activation_checkpointing(model: nn.Module, enabled: bool) -> None:
    """Gradient (activation) checkpointing on or off: recompute block activations in the
    backward pass instead of storing them. transformers 5 renamed the method."""
    if enabled:
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(model, "activation_checkpointing_disable"):
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()


# -- the loop -------------------------------------------------------------------------------
@dataclass
class TrainOutcome:
    steps: int
    resumed_from_step: int
    kl_before: float | None
    kl_after: float | None
    last_terms: dict[str, float]
    tokens_per_s: float
    wall_s: float
    micro_batch: int
    grad_accum: int
    history: list[dict[str, float]] = field(default_factory=list)


class DataOrder:
    """Sample i of the training stream is block perm_e[i mod n] with e = i // n: a fresh seeded
    permutation per epoch, so a position (`cursor`) alone restores the order on resume."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._perms: dict[int, torch.Tensor] = {}

    def indices(self, cursor: int, count: int) -> torch.Tensor:
        out = []
        for i in range(cursor, cursor + count):
            epoch = i // self.n
            if epoch not in self._perms:
                generator = torch.Generator().manual_seed(self.seed * 7919 + epoch)
                self._perms = {epoch: torch.randperm(self.n, generator=generator)}
            out.append(int(self._perms[epoch][i % self.n]))
        return torch.tensor(out, dtype=torch.long)


class Distiller:
    """Trains `student` towards `teacher` on packed `train` blocks, checkpointing to `folder`."""

    def __init__(self, student: nn.Module, teacher: nn.Module, train: torch.Tensor,
                 heldout: torch.Tensor, spec: DistillSpec, device: torch.device, folder: Path,
                 reporter: Reporter, identity: dict[str, Any]):
        self.student, self.teacher = student, teacher
        self.train_model: nn.Module = student   # what training forwards call (a DDP wrapper there)
        self.train_blocks, self.heldout = train, heldout
        self.spec, self.device, self.folder, self.reporter = spec, device, folder, reporter
        self.identity = identity          # what must match for a checkpoint to be reused
        self.weights = LossWeights.from_spec(spec)
        self.micro_batch = spec.batch_size
        self.grad_accum = spec.grad_accum
        self.effective_batch = spec.batch_size * spec.grad_accum
        self.order = DataOrder(train.shape[0], spec.seed)
        self.optimizer = make_optimizer(student, spec.learning_rate, spec.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(spec.warmup_steps, spec.steps))
        self.step = 0
        self.cursor = 0
        self.kl_before: float | None = None
        self.history: list[dict[str, float]] = []
        self.autocast = device.type == "cuda" and torch.cuda.is_bf16_supported()

    # -- checkpoints ---------------------------------------------------------------------
    def save(self) -> None:
        self.reporter.ensure_lease()     # a worker that lost the job leaves its checkpoint be
        save_training_state(self.folder, {
            "format": CHECKPOINT_FORMAT, "identity": self.identity, "step": self.step,
            "cursor": self.cursor, "micro_batch": self.micro_batch, "grad_accum": self.grad_accum,
            "student": self.student.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": rng_state(),
            "kl_before": self.kl_before, "history": self.history})
        self.reporter.log(f"checkpoint saved at step {self.step}", step=self.step)

    def try_resume(self) -> int:
        """Restore the last checkpoint if it belongs to this job's settings; returns its step."""
        state = load_training_state(self.folder)
        if not state:
            return 0
        if state.get("format") != CHECKPOINT_FORMAT or state.get("identity") != self.identity:
            self.reporter.log("ignoring a checkpoint made with other settings", level="warning")
            return 0
        self.student.load_state_dict(state["student"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.step, self.cursor = int(state["step"]), int(state["cursor"])
        self.micro_batch, self.grad_accum = int(state["micro_batch"]), int(state["grad_accum"])
        self.kl_before = state.get("kl_before")
        self.history = list(state.get("history") or [])
        self.reporter.log(f"resuming from the checkpoint at step {self.step}", step=self.step)
        return self.step

    # -- one optimiser step --------------------------------------------------------------
    def _forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        want_hidden = self.weights.distill and self.weights.alpha_cos > 0
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            out = self.train_model(input_ids=ids, use_cache=False, output_hidden_states=want_hidden)
        t_logits = t_hidden = None
        if self.weights.needs_teacher:
            with torch.no_grad():
                t_out = self.teacher(input_ids=ids, use_cache=False, output_hidden_states=want_hidden)
            t_logits = t_out.logits
            t_hidden = t_out.hidden_states[-1] if want_hidden else None
        return distillation_loss(self.weights, ids, out.logits, t_logits,
                                 out.hidden_states[-1] if want_hidden else None, t_hidden)

    def _accumulate(self, batch: torch.Tensor) -> dict[str, float]:
        """Forward/backward the effective batch in micro-batches; mean terms over it."""
        sums: dict[str, float] = {}
        for start in range(0, batch.shape[0], self.micro_batch):
            ids = batch[start:start + self.micro_batch].to(self.device)
            with self._micro_step(last=start + self.micro_batch >= batch.shape[0]):
                loss, terms = self._forward(ids)
                share = ids.shape[0] / batch.shape[0]
                (loss * share).backward()
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value * share
        return sums

    def _micro_step(self, last: bool):
        """Context of one micro-batch's forward and backward (DDP: no gradient sync but the last)."""
        return contextlib.nullcontext()

    def _batch(self) -> torch.Tensor:
        """The rows of the next effective batch this process trains on (here: all of them)."""
        return self.train_blocks[self.order.indices(self.cursor, self.effective_batch)]

    def _step(self) -> dict[str, float]:
        batch = self._batch()
        while True:
            try:
                terms = self._accumulate(batch)
                break
            except Exception as exc:  # noqa: BLE001 - only OOM is handled here
                if not is_out_of_memory(exc) or self.micro_batch == 1:
                    raise
                self.optimizer.zero_grad(set_to_none=True)
                free_device_memory(self.device)
                self.micro_batch //= 2
                self.grad_accum = -(-batch.shape[0] // self.micro_batch)
                self.reporter.log(f"out of memory: micro-batch halved to {self.micro_batch} "
                                  f"(gradient accumulation {self.grad_accum})", level="warning")
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), GRAD_CLIP)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.cursor += self.effective_batch
        return terms

    # -- the run -------------------------------------------------------------------------
    def run(self) -> TrainOutcome:
        spec = self.spec
        self.student.to(self.device)
        resumed = self.try_resume()
        if self.kl_before is None:
            self.kl_before = kl_to_teacher(self.student, self.teacher, self.heldout, self.device)
            self.reporter.log(f"held-out KL to the teacher before training: {self.kl_before:.4f}")
        if spec.gradient_checkpointing:
            set_activation_checkpointing(self.student, True)
        self.student.train()
        started, tokens, terms = time.time(), 0, {}
        try:
            while self.step < spec.steps:
                self.reporter.check_cancelled()
                terms = self._step()
                tokens += self.effective_batch * self.train_blocks.shape[1]
                rate = tokens / max(time.time() - started, 1e-9)
                lr = self.scheduler.get_last_lr()[0]
                self.history.append({"step": self.step, **terms, "lr": lr})
                self.reporter.progress(
                    self.step, spec.steps,
                    f"step {self.step}/{spec.steps} loss {terms['loss']:.4f}",
                    step=self.step, lr=lr, tokens_per_s=round(rate, 1),
                    **{f"loss_{k}" if k != "loss" else k: round(v, 5) for k, v in terms.items()})
                if self.step % spec.checkpoint_every == 0 and self.step < spec.steps:
                    self.save()
        except (JobCancelled, KeyboardInterrupt):
            self.save()          # cancel keeps the progress made
            raise
        except Exception:
            raise                # a failure: the last periodic checkpoint stays
        except BaseException:    # the worker's SIGTERM `Interrupted`: keep the progress made
            self.save()
            raise
        finally:
            if spec.gradient_checkpointing:
                set_activation_checkpointing(self.student, False)
        self.student.eval()
        kl_after = kl_to_teacher(self.student, self.teacher, self.heldout, self.device)
        self.reporter.log(f"held-out KL to the teacher after {self.step} steps: {kl_after:.4f} "
                          f"(before: {self.kl_before:.4f})")
        wall = time.time() - started
        return TrainOutcome(self.step, resumed, self.kl_before, kl_after, terms,
                            tokens / max(wall, 1e-9), wall, self.micro_batch, self.grad_accum,
                            self.history)
