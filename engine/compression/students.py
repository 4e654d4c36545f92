"""Students for distillation: a subset of the teacher's layers, or an existing model.

Built from the teacher (DistilGPT2-style): the student is a copy of the teacher that keeps only
some transformer blocks, so it starts from the teacher's embeddings, norms and the kept blocks'
weights. It keeps `round(intensity * L)` blocks: given the teacher's Block Influence on
calibration text (`engine.compression.depth`, ShortGPT), the blocks of highest influence (what a
distillation job does when no `student_layers` are given: it measures BI on its training text);
without it, blocks evenly spaced from the first to the last (12 -> 6 keeps 0, 2, 4, 7, 9, 11, as
DistilGPT2 does), which `student_layers` can also name explicitly. An existing student must share
the teacher's tokenizer, since the loss compares next-token distributions."""

from __future__ import annotations

import logging
from typing import Sequence

from torch import nn

from engine.formats.architecture import architecture_name, block_list, num_layers, set_block_list
from engine.errors import JobFailed, UnsupportedArchitecture
from engine.compression.depth import most_influential

log = logging.getLogger(__name__)


def choose_layers(n_teacher: int, intensity: float, explicit: Sequence[int] = (),
                  teacher_name: str = "the teacher",
                  influence: Sequence[float] | None = None) -> tuple[int, ...]:
    """The teacher block indices the student keeps, sorted; JobFailed for impossible choices.

    `explicit` wins; else with `influence` (one Block Influence per teacher block) the
    `round(intensity * L)` most influential blocks; else that many evenly spaced blocks."""
    if explicit:
        too_deep = [i for i in explicit if i >= n_teacher]
        if too_deep:
            raise JobFailed(f"student_layers {tuple(explicit)} name layer {too_deep[0]}, but "
                            f"{teacher_name} has only {n_teacher} layers (0..{n_teacher - 1})")
        if len(explicit) >= n_teacher:
            raise JobFailed(f"student_layers {tuple(explicit)} keep all {n_teacher} layers of "
                            f"{teacher_name}; the student would be no smaller")
        return tuple(sorted(explicit))
    if n_teacher < 2:
        raise JobFailed(f"{teacher_name} has only {n_teacher} layer; there is none to drop")
    n_keep = min(n_teacher - 1, max(1, round(intensity * n_teacher)))
    if influence is not None:
        if len(influence) != n_teacher:
            raise JobFailed(f"block influence has {len(influence)} values for the "
                            f"{n_teacher} layers of {teacher_name}")
        return most_influential(influence, n_keep)
    if n_keep == 1:
        return (0,)
    # Evenly spaced, first and last included; a step >= 1 keeps the rounded indices distinct.
    step = (n_teacher - 1) / (n_keep - 1)
    return tuple(int(round(i * step)) for i in range(n_keep))


def keep_layers(model: nn.Module, keep: Sequence[int]) -> nn.Module:
    """Cut `model` (a private copy) down to the blocks `keep`, in place; returns it.

    Updates the config's layer count (and `layer_types` where present) and renumbers every
    module's `layer_idx`, which the KV cache uses to find a layer's slot."""
    try:
        path, blocks = block_list(model)
    except UnsupportedArchitecture as exc:
        raise JobFailed(f"cannot build a student: {exc}") from None
    kept = nn.ModuleList([blocks[i] for i in keep])
    set_block_list(model, path, kept)
    config = model.config
    config.num_hidden_layers = len(keep)
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == len(blocks):
        config.layer_types = [layer_types[i] for i in keep]
    for new_index, block in enumerate(kept):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_index
            # GPT-2 option: scaling by 1/(layer_idx + 1) is fixed at construction; recompute it
            # so the student in memory equals the one from_pretrained rebuilds.
            if getattr(module, "scale_attn_by_inverse_layer_idx", False) and hasattr(module, "scaling"):
                module.scaling = (module.head_dim ** -0.5 if module.scale_attn_weights else 1.0)
                module.scaling /= float(new_index + 1)
    log.info("student of %s keeps layers %s of %d", architecture_name(model), list(keep), len(blocks))
    return model


def teacher_depth(model: nn.Module, teacher_name: str) -> int:
    try:
        block_list(model)
        return num_layers(model)
    except UnsupportedArchitecture as exc:
        raise JobFailed(f"cannot build a student from {teacher_name}: {exc}") from None


def check_same_vocabulary(teacher_tokenizer, student_tokenizer, teacher_name: str,
                          student_name: str) -> None:
    """JobFailed unless both tokenizers map the same strings to the same ids."""
    t_vocab, s_vocab = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if t_vocab != s_vocab:
        differing = len(set(t_vocab.items()) ^ set(s_vocab.items()))
        raise JobFailed(f"student {student_name} and teacher {teacher_name} use different "
                        f"tokenizers ({len(s_vocab)} vs {len(t_vocab)} tokens, {differing} "
                        "entries differ); distillation needs one shared vocabulary")
