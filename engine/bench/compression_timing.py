"""Phases 4 and 5: a few optimiser steps of the real `Distiller` on a half-depth student
(tokens/s), and the registry's unstructured pruning methods at 50% on fresh copies (seconds)."""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

from engine.bench.measure import PeakMemory, phase, sync
from engine.bench.options import BenchSettings, Say
from engine.compression.methods import MethodRun, get_method
from engine.compression.textdata import TextSource, text_blocks
from engine.specs import DistillSpec, PruneSpec

log = logging.getLogger(__name__)


# the unstructured pruning methods the bench times (registry names)
TIMED_METHODS = ("magnitude", "wanda")
PRUNE_SPARSITY = 0.5


class _Reporter:
    """A job as the Distiller and the pruning methods see it: records progress, ignores the
    rest (nothing is cancelled, nothing is stored)."""

    def __init__(self) -> None:
        self.last: dict[str, Any] = {}

    def progress(self, done, total, message="", *, force=False, **data) -> None:
        self.last = data

    def check_cancelled(self) -> None:
        pass

    def ensure_lease(self) -> None:
        pass

    def log(self, message, level="info", **data) -> None:
        log.debug("bench distillation: %s", message)


def distillation(worker, model_ref: str, lm, settings: BenchSettings, scratch: Path, say: Say) -> dict:
    """Tokens/s of a few real `Distiller` steps on a student keeping half the model's layers."""
    import torch

    from engine.compression.distill import Distiller  # on use: torch
    from engine.compression.students import choose_layers, keep_layers, teacher_depth  # on use: torch

    record: dict[str, Any] = {}
    n_teacher = teacher_depth(lm.model, model_ref)
    kept = choose_layers(n_teacher, 0.5)
    spec = DistillSpec(teacher=model_ref, steps=settings.distill_steps, batch_size=settings.distill_batch,
                       seq_len=settings.seq_len, warmup_steps=0, checkpoint_every=10**6,
                       data="builtin", device=settings.device, seed=settings.seed)
    student = worker.models.load(model_ref, worker.store, device=settings.device, fresh=True)
    keep_layers(student.model, kept)
    student_model = student.model.to(lm.device)
    data = text_blocks(TextSource("builtin", "builtin"), lm.tokenizer, settings.seq_len,
                       settings.distill_steps * settings.distill_batch, n_heldout=2)
    reporter = _Reporter()
    distiller = Distiller(student_model, lm.model, data.train, data.heldout, spec, lm.device,
                          scratch / "distill", reporter, identity={})
    with phase(record, say, f"distillation: {settings.distill_steps} steps, student "
                            f"{len(kept)} of {n_teacher} layers"), PeakMemory(lm.device) as memory:
        outcome = distiller.run()
    record.update({
        "teacher_layers": n_teacher, "student_layers": len(kept), "steps": outcome.steps,
        "tokens_per_step": settings.distill_batch * settings.seq_len,
        # tokens/s of the training steps (the held-out KL before/after is not counted)
        "tokens_per_s": float(reporter.last.get("tokens_per_s") or outcome.tokens_per_s),
        "train_s": round(outcome.wall_s, 3), "final_loss": outcome.last_terms.get("loss"),
        **memory.record()})
    del distiller, student, student_model
    gc.collect()
    if lm.device.type == "cuda":
        torch.cuda.empty_cache()
    return record


def pruning(worker, model_ref: str, lm, settings: BenchSettings, say: Say) -> dict:
    """Seconds and peak memory of each of `TIMED_METHODS` at 50% on a fresh copy of the model,
    through the method registry (what a prune job runs, without saving the result)."""
    import torch

    from engine.compression.prune import check_sparsity  # on use: torch

    calibration = text_blocks(TextSource("builtin", "builtin"), lm.tokenizer, settings.seq_len,
                              settings.calibration_samples).train[:settings.calibration_samples]
    out: dict[str, Any] = {}
    for name in TIMED_METHODS:
        method = get_method(name)
        spec = PruneSpec(model=model_ref, method=name, sparsity=PRUNE_SPARSITY, device=settings.device,
                         calibration_data="builtin", calibration_samples=settings.calibration_samples,
                         calibration_seq_len=settings.seq_len, seed=settings.seed)
        copy = worker.models.load(model_ref, worker.store, device=settings.device, fresh=True)
        record: dict[str, Any] = {"sparsity": PRUNE_SPARSITY}
        with phase(record, say, f"pruning: {name} {PRUNE_SPARSITY:.0%}"), \
                PeakMemory(copy.device) as memory:
            method.apply(MethodRun(_Reporter(), copy.model, spec, copy.device, calibration))
            if method.needs_calibration_text:
                record["calibration"] = f"{calibration.shape[0]} x {calibration.shape[1]} tokens"
            sync(copy.device)
        record["achieved_sparsity"] = round(check_sparsity(copy.model)["overall"], 4)
        record.update(memory.record())
        out[name] = record
        del copy
        gc.collect()
        if lm.device.type == "cuda":
            torch.cuda.empty_cache()
    return out
