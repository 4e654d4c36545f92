"""Entry points of the `distill` and `prune` job kinds (called by the worker).

Each validates everything it can before spending compute (data paths, layer choices, the
architecture's support for the method, N:M divisibility, head counts), so bad input fails with
a one-line `JobFailed` reason, then runs, saves, registers and returns `{"model_id": ...}`."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.compression import prune as unstructured
from engine.formats.architecture import architecture_name, max_positions, num_layers
from engine.compression.checkpoint import DATA_FILE, atomic_save, safe_load
from engine.compression.distill import Distiller, next_token_ce
from engine.compression.methods import MethodRun, ParamCounts, PruneMethod, get_method
from engine.compression.model_writer import save_and_register
from engine.compression.records import SparsityRecord
from engine.compression.students import (check_same_vocabulary, choose_layers, keep_layers,
                                         teacher_depth)
from engine.compression.textdata import (TextSource, TokenBlocks, pack, parse_source,
                                         sample_from_model, split_heldout, text_blocks)
from engine.context import JobContext
from engine.errors import JobFailed
from engine.model_loader import LoadedModel, count_parameters
from engine.specs import DistillSpec, PruneSpec
from engine.compression.depth import block_influence
from engine.compression.distill_ddp import train_data_parallel
from engine.compression.distill_rank import backend_for

log = logging.getLogger(__name__)


# -- shared helpers -------------------------------------------------------------------------
def _model_name(ctx: JobContext, loaded: LoadedModel) -> str:
    row = ctx.store.model(loaded.model_id)
    name = (row or {}).get("name") or Path(loaded.source.source).name
    return name.removesuffix(".gguf")


def _check_seq_len(model, seq_len: int, what: str, name: str) -> None:
    limit = max_positions(model)
    if limit is not None and seq_len > limit:
        raise JobFailed(f"{what} {seq_len} is longer than {name} accepts ({limit} positions)")


def _self_sampled_blocks(ctx: JobContext, loaded: LoadedModel, n_samples: int, seq_len: int,
                         seed: int, n_heldout: int, what: str) -> TokenBlocks:
    """Blocks of text sampled from `loaded` itself (sequence-level KD / self-calibration)."""
    def on_batch(done: int, total: int) -> None:
        ctx.check_cancelled()
        ctx.progress(0, 1, f"sampling {what} text {done}/{total}", phase="sampling",
                     samples=done, total_samples=total)

    started = time.time()
    sequences = sample_from_model(loaded.model, loaded.tokenizer, n_samples, seq_len, seed=seed,
                                  batch_size=None,
                                  device=loaded.device, on_batch=on_batch)
    blocks, repeated = pack(sequences, seq_len, loaded.tokenizer.eos_token_id,
                            min_blocks=n_heldout + 1)
    ctx.log(f"sampled {n_samples} sequences ({blocks.numel()} tokens) from the {what} in "
            f"{time.time() - started:.1f} s")
    train, heldout = split_heldout(blocks, n_heldout) if n_heldout else (blocks, blocks[:0])
    return TokenBlocks(train, heldout, "teacher", int(blocks.numel()), repeated)


# -- distillation ---------------------------------------------------------------------------
def _distill_data(ctx: JobContext, spec: DistillSpec, source: TextSource, teacher: LoadedModel,
                  identity: dict[str, Any]) -> TokenBlocks:
    """The job's training blocks, built once and kept in the checkpoint folder, so a resumed
    job trains on exactly the same data (and does not sample from the teacher again)."""
    cache = ctx.checkpoint_dir / DATA_FILE
    stored = safe_load(cache)
    if stored and stored.get("identity") == identity:
        ctx.log(f"reusing the prepared training data ({stored['train'].shape[0]} blocks)")
        return TokenBlocks(stored["train"], stored["heldout"], stored["source"],
                           int(stored["n_tokens"]), bool(stored["repeated"]))
    if source.kind == "teacher":
        n_heldout = max(2, min(16, spec.teacher_samples // 10))
        data = _self_sampled_blocks(ctx, teacher, spec.teacher_samples, spec.seq_len, spec.seed,
                                    n_heldout, "teacher")
    else:
        needed = spec.steps * spec.batch_size * spec.grad_accum
        n_heldout = max(2, min(16, needed // 20))
        data = text_blocks(source, teacher.tokenizer, spec.seq_len, needed, n_heldout)
    if data.repeated:
        ctx.log(f"data {data.source!r} is short: its blocks repeat", level="warning")
    atomic_save({"identity": identity, "train": data.train, "heldout": data.heldout,
                 "source": data.source, "n_tokens": data.n_tokens, "repeated": data.repeated},
                cache)
    return data


BI_SAMPLES = 32      # training blocks the teacher's Block Influence is measured on


def _teacher_influence(ctx: JobContext, teacher: LoadedModel, blocks: torch.Tensor) -> list[float] | None:
    """Block Influence of each teacher block (ShortGPT, `compression.depth`) on the first
    training blocks; None, and so evenly spaced layers, when it cannot be measured."""
    import math

    if blocks.shape[0] == 0:
        ctx.log("no training text to measure block influence on: keeping evenly spaced layers",
                level="warning")
        return None
    started = time.time()
    influence = block_influence(teacher.model, blocks[:BI_SAMPLES], teacher.device)
    if not all(math.isfinite(b) for b in influence):
        ctx.log(f"block influence is not finite ({influence}): keeping evenly spaced layers",
                level="warning")
        return None
    influence = [round(b, 6) for b in influence]
    ctx.log(f"teacher block influence on {min(BI_SAMPLES, blocks.shape[0])} training blocks "
            f"({time.time() - started:.1f} s): {influence}")
    return influence


def _layer_choice(spec: DistillSpec, influence: list[float] | None) -> str | None:
    """How the student's layers were chosen (None for an existing student)."""
    if spec.student:
        return None
    return "explicit" if spec.student_layers else "block_influence" if influence else "even"


def _parallel_record(spec: DistillSpec, device: torch.device) -> dict[str, Any]:
    """How many training processes (and which process-group backend) a data-parallel job
    used, for its model's lineage and its result; nothing for a single-process job."""
    if spec.processes == 1:
        return {}
    return {"train_processes": spec.processes, "ddp_backend": backend_for(device.type)}


def run_distill(ctx: JobContext) -> dict[str, Any]:
    """Distil `spec.teacher` into a student; returns the registered model's id and the
    training summary (held-out KL to the teacher before/after, losses, tokens/s)."""
    spec: DistillSpec = ctx.spec
    source = parse_source(spec.data)                        # a missing file fails here
    teacher = ctx.load_model(spec.teacher)                  # shared, frozen, eval mode
    teacher_name = _model_name(ctx, teacher)
    _check_seq_len(teacher.model, spec.seq_len, "seq_len", f"teacher {teacher_name}")
    n_teacher = teacher_depth(teacher.model, f"teacher {teacher_name}")

    data: TokenBlocks | None = None
    influence: list[float] | None = None
    if spec.student:
        if spec.student_layers:
            ctx.log("student_layers is ignored: an existing student is given", level="warning")
        student = ctx.load_model(spec.student, fresh=True)
        student_name = _model_name(ctx, student)
        check_same_vocabulary(teacher.tokenizer, student.tokenizer, teacher_name, student_name)
        _check_seq_len(student.model, spec.seq_len, "seq_len", f"student {student_name}")
        kept: tuple[int, ...] | None = None
        identity = {"spec": spec.spec_hash(), "student": student.source.source}
    else:
        if not spec.student_layers:       # the teacher's Block Influence on its training text
            data = _distill_data(ctx, spec, source, teacher,
                                 {"spec": spec.spec_hash(), "layers": "block-influence"})
            influence = _teacher_influence(ctx, teacher, data.train)
        kept = choose_layers(n_teacher, spec.intensity, spec.student_layers, f"teacher {teacher_name}",
                             influence)
        student = ctx.load_model(spec.teacher, fresh=True)   # private fp32 copy to cut down
        keep_layers(student.model, kept)
        identity = {"spec": spec.spec_hash(), "layers": list(kept)}
    student_model = student.model.to(teacher.device)
    if spec.gradient_checkpointing and not getattr(student_model, "supports_gradient_checkpointing", False):
        raise JobFailed(f"gradient_checkpointing: {architecture_name(student_model)} does not support it")

    if data is None:
        data = _distill_data(ctx, spec, source, teacher, identity)
    if spec.processes > 1:          # DDP over several processes (engine.compression.distill_ddp)
        outcome = train_data_parallel(ctx, student_model, teacher.model, spec, teacher.device,
                                      identity)
    else:
        outcome = Distiller(student_model, teacher.model, data.train, data.heldout, spec,
                            teacher.device, ctx.checkpoint_dir, ctx, identity).run()

    method = "distill" if spec.distill else "ce-baseline"
    depth = num_layers(student_model)
    name = spec.name or f"{teacher_name}-{method}-{depth}of{n_teacher}L"
    params = {k: v for k, v in spec.to_dict().items() if k not in ("label", "device", "dtype")
              and not (k == "processes" and v == 1)}      # as before processes existed
    extra = {"kl_to_teacher": outcome.kl_after, "kl_to_teacher_before": outcome.kl_before,
             "kl_temperature": 1.0, "kl_heldout_blocks": int(data.heldout.shape[0]),
             "teacher_layers": n_teacher, "kept_layers": list(kept) if kept else None,
             "layer_choice": _layer_choice(spec, influence), "block_influence": influence,
             "initialised_from": None if kept else student.model_id, "data": data.source,
             **_parallel_record(spec, teacher.device)}
    model_id, path = save_and_register(
        ctx, student_model, student.tokenizer, name, device=teacher.device,
        parent_id=teacher.model_id, method=method, method_params=params, extra=extra)
    shutil.rmtree(ctx.checkpoint_dir, ignore_errors=True)   # done: the model is the artefact
    n_params, _ = count_parameters(student_model)
    return {
        "model_id": model_id, "path": str(path), "method": method,
        "teacher_model_id": teacher.model_id, "teacher_layers": n_teacher,
        "student_layers": depth, "kept_layers": list(kept) if kept else None,
        "layer_choice": _layer_choice(spec, influence), "block_influence": influence,
        "n_params": n_params, "steps": outcome.steps,
        "resumed_from_step": outcome.resumed_from_step,
        "kl_before": outcome.kl_before, "kl_after": outcome.kl_after,
        "final_losses": outcome.last_terms, "tokens_per_s": round(outcome.tokens_per_s, 1),
        "train_wall_s": round(outcome.wall_s, 2), "micro_batch": outcome.micro_batch,
        "grad_accum": outcome.grad_accum, "data": data.source,
        "train_blocks": int(data.train.shape[0]), "seq_len": spec.seq_len,
        **_parallel_record(spec, teacher.device),
    }


# -- pruning --------------------------------------------------------------------------------
def _validate_prune(spec: PruneSpec, method: PruneMethod, model, name: str) -> None:
    """Everything about the request that can be checked on the loaded, unpruned model: the
    method's own checks, then the calibration length when text is read."""
    method.check_model(spec, model, name)
    if method.needs_calibration_text or spec.recovery_steps:
        _check_seq_len(model, spec.calibration_seq_len, "calibration_seq_len", name)


def _calibration(ctx: JobContext, spec: PruneSpec, source: TextSource,
                 loaded: LoadedModel) -> torch.Tensor:
    """`[calibration_samples, calibration_seq_len]` token blocks."""
    if source.kind == "teacher":
        data = _self_sampled_blocks(ctx, loaded, spec.calibration_samples,
                                    spec.calibration_seq_len, spec.seed, 0, "model")
    else:
        data = text_blocks(source, loaded.tokenizer, spec.calibration_seq_len,
                           spec.calibration_samples)
    blocks = data.train
    if data.repeated or blocks.shape[0] < spec.calibration_samples:   # short text: cycle it
        ctx.log(f"calibration text {data.source!r} gives {blocks.shape[0]} distinct blocks of "
                f"{spec.calibration_seq_len} tokens for {spec.calibration_samples} samples; "
                "they repeat", level="warning")
        blocks = blocks.repeat(-(-spec.calibration_samples // blocks.shape[0]), 1)
    return blocks[:spec.calibration_samples]


def _recover(ctx: JobContext, model, blocks: torch.Tensor, spec: PruneSpec,
             device: torch.device, masks: unstructured.Masks | None) -> list[float]:
    """A short CE fine-tune on the calibration text; pruned weights stay zero."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=spec.recovery_learning_rate, weight_decay=0.0)
    generator = torch.Generator().manual_seed(spec.seed)
    batch = min(4, blocks.shape[0])
    losses = []
    model.train()
    for step in range(spec.recovery_steps):
        ctx.check_cancelled()
        ids = blocks[torch.randint(0, blocks.shape[0], (batch,), generator=generator)].to(device)
        loss = next_token_ce(model(input_ids=ids, use_cache=False).logits.float(), ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if masks:
            unstructured.apply_masks(model, masks)
        losses.append(loss.item())
        ctx.progress(step + 1, spec.recovery_steps, f"recovery step {step + 1} loss {losses[-1]:.4f}",
                     phase="recovery", step=step + 1, loss=round(losses[-1], 5))
    model.eval()
    return losses


@dataclass(frozen=True)
class _Pruned:
    """A pruned model's figures, between pruning and registering it."""

    method: PruneMethod
    record: SparsityRecord
    params: ParamCounts
    nonzero_before: int
    nonzero_after: int
    prune_s: float
    recovery_losses: list[float]
    calibration: str | None


def _register_pruned(ctx: JobContext, spec: PruneSpec, loaded: LoadedModel, name: str,
                     pruned: _Pruned) -> dict[str, Any]:
    """Save and register the pruned model with its lineage and record; the job's result."""
    model = loaded.model
    model_name = spec.name or f"{name}-{spec.method}-{pruned.method.name_suffix(spec)}"
    params = {k: v for k, v in spec.to_dict().items() if k not in ("label", "device", "dtype")}
    extra = {"architecture": architecture_name(model), "prune_wall_s": round(pruned.prune_s, 2),
             "recovery_losses": pruned.recovery_losses[-5:] or None,
             "calibration": pruned.calibration}
    model_id, path = save_and_register(ctx, model, loaded.tokenizer, model_name, device=loaded.device,
                                       parent_id=loaded.model_id, method=spec.method,
                                       method_params=params, sparsity=pruned.record.to_dict(),
                                       extra=extra)
    losses = pruned.recovery_losses
    return {"model_id": model_id, "path": str(path), "method": spec.method,
            "parent_model_id": loaded.model_id, "overall_sparsity": pruned.record.overall,
            "params_before": pruned.params.before, "params_after": pruned.params.after,
            "nonzero_before": pruned.nonzero_before, "nonzero_after": pruned.nonzero_after,
            "prune_wall_s": round(pruned.prune_s, 2), "recovery_steps": spec.recovery_steps,
            "recovery_final_loss": losses[-1] if losses else None}


def run_prune(ctx: JobContext) -> dict[str, Any]:
    """Prune `spec.model` with its registered method (`engine.compression.methods`); returns
    the registered model's id and the achieved sparsity."""
    spec: PruneSpec = ctx.spec
    method = get_method(spec.method, spec.kind)
    needs_text = method.needs_calibration_text or spec.recovery_steps > 0
    source = parse_source(spec.calibration_data) if needs_text else None
    loaded = ctx.load_model(spec.model, fresh=True)
    model, device = loaded.model, loaded.device
    name = _model_name(ctx, loaded)
    _validate_prune(spec, method, model, name)
    params_before, nonzero_before = count_parameters(model)

    calibration = _calibration(ctx, spec, source, loaded) if source else None
    started = time.time()
    outcome = method.apply(MethodRun(ctx, model, spec, device, calibration))
    prune_s = time.time() - started

    recovery_losses = _recover(ctx, model, calibration, spec, device, outcome.masks) \
        if spec.recovery_steps else []
    params_after, nonzero_after = count_parameters(model)
    params = ParamCounts(params_before, params_after)
    record = method.record(model, spec, outcome, params)
    ctx.log(f"{spec.method} pruning done in {prune_s:.1f} s: overall sparsity "
            f"{record.overall:.4f} ({params_after:,} parameters, {nonzero_after:,} non-zero)")
    pruned = _Pruned(method, record, params, nonzero_before, nonzero_after, prune_s,
                     recovery_losses, source.label if source else None)
    return _register_pruned(ctx, spec, loaded, name, pruned)
