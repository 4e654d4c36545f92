"""Depth pruning by Block Influence (ShortGPT: Men et al., 2024, "ShortGPT: Layers in Large
Language Models are More Redundant Than You Expect").

Definition. The Block Influence of transformer block i is
    BI_i = 1 - E_{x, t} [ cos(h_in[x, t], h_out[x, t]) ],
the mean over calibration sequences x and their token positions t of the cosine similarity
between the hidden state entering block i and the one leaving it (the residual stream before
and after the block). A block whose output is (nearly) its input has BI ~ 0 and can be removed
at little cost; ShortGPT removes the n blocks of lowest BI and keeps the rest in order.

The hidden states are caught by hooks on the blocks themselves (not `output_hidden_states`,
whose last entry has the final norm applied), on calibration token blocks `[samples, seq_len]`
without padding, so every position counts. Removing blocks is
`engine.compression.students.keep_layers` (the config's layer count and every `layer_idx` are
updated), so the product is a standard, shallower model. The same scores choose which teacher
blocks a distilled student keeps (`students.choose_layers`)."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from engine.formats.architecture import block_list


def _hidden(value) -> torch.Tensor:
    return value[0] if isinstance(value, (tuple, list)) else value


@torch.no_grad()
def block_influence(model: nn.Module, calibration: torch.Tensor, device: torch.device, *,
                    batch_size: int = 8,
                    on_batch: Callable[[int, int], None] | None = None) -> list[float]:
    """BI of every block (see the module docstring), in block order."""
    _, blocks = block_list(model)
    sums = [0.0] * len(blocks)
    counts = [0] * len(blocks)
    entering: dict[int, torch.Tensor] = {}

    def pre_hook(index: int):
        def hook(module, args, kwargs):
            entering[index] = args[0] if args else kwargs["hidden_states"]
        return hook

    def post_hook(index: int):
        def hook(module, args, kwargs, output):
            h_in, h_out = entering.pop(index).float(), _hidden(output).float()
            cos = torch.nn.functional.cosine_similarity(h_in, h_out, dim=-1)   # [b, t]
            sums[index] += float(cos.sum())
            counts[index] += cos.numel()
        return hook

    handles = []
    for index, block in enumerate(blocks):
        handles.append(block.register_forward_pre_hook(pre_hook(index), with_kwargs=True))
        handles.append(block.register_forward_hook(post_hook(index), with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        total = calibration.shape[0]
        for start in range(0, total, batch_size):
            model(input_ids=calibration[start:start + batch_size].to(device), use_cache=False)
            if on_batch:
                on_batch(min(start + batch_size, total), total)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [1.0 - s / c if c else float("nan") for s, c in zip(sums, counts)]


def blocks_to_remove(n_blocks: int, share: float) -> int:
    """How many of `n_blocks` blocks a share removes: rounded, at least 1, never all."""
    if n_blocks < 2:
        raise ValueError(f"the model has {n_blocks} transformer block; removing one leaves none")
    return min(n_blocks - 1, max(1, int(round(share * n_blocks))))


def least_influential(influence: Sequence[float], n: int) -> tuple[int, ...]:
    """Indices of the `n` blocks of lowest BI, sorted (ties: the earlier block first)."""
    if any(not math.isfinite(b) for b in influence):
        raise ValueError("block influence is not finite for every block")
    order = sorted(range(len(influence)), key=lambda i: (influence[i], i))
    return tuple(sorted(order[:n]))


def most_influential(influence: Sequence[float], n_keep: int) -> tuple[int, ...]:
    """Indices of the `n_keep` blocks of highest BI, sorted: the blocks a student keeps."""
    removed = set(least_influential(influence, len(influence) - n_keep))
    return tuple(i for i in range(len(influence)) if i not in removed)
