"""Unstructured pruning of the linear layers inside the transformer blocks.

- **magnitude**: score |W|; the lowest `sparsity` share is zeroed per layer (`scope="layer"`) or
  across all block layers at once (`scope="global"`).
- **Wanda** (Sun et al., 2023; locuslab/wanda): score |W_ij| * ||X_j||_2, where ||X_j||_2 is
  the L2 norm of input feature j over all calibration tokens, gathered by forward hooks; weights
  are compared *within each output row*. Blocks are processed in order and each block is
  calibrated on the outputs of the already-pruned blocks before it, as in the reference code.
- **N:M** (e.g. 2:4, either score): in every group of M consecutive inputs of a row, the M-N
  lowest-scoring weights are zeroed, which sparse tensor cores can exploit.

Scores and masks are computed on `[out, in]` views of the weights (GPT-2's `Conv1D` stores
`[in, out]`; `arch.weight_out_in` transposes it). Embeddings and the tied `lm_head` are outside
the blocks and never pruned. Pruning writes zeros into the weights (the masks are permanent);
`check_sparsity` is the post-condition, and `apply_masks` holds them fixed during recovery
fine-tuning."""

from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import nn

from engine.formats.architecture import (block_linears, block_list, in_features, is_conv1d,
                                     linears_of_block, weight_out_in)

log = logging.getLogger(__name__)

Masks = dict[str, torch.Tensor]   # module name -> bool "keep" mask in the weight's own layout


# -- choosing what to zero ------------------------------------------------------------------
def lowest_in_tensor(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Bool mask of exactly int(sparsity * numel) lowest scores in the whole tensor."""
    k = int(sparsity * scores.numel())
    prune = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if k:
        prune[torch.topk(scores.flatten(), k, largest=False).indices] = True
    return prune.view_as(scores)


def lowest_per_row(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Bool mask of exactly int(sparsity * in) lowest scores in each output row of [out, in]."""
    k = int(sparsity * scores.shape[1])
    prune = torch.zeros_like(scores, dtype=torch.bool)
    if k:
        prune.scatter_(1, torch.topk(scores, k, dim=1, largest=False).indices, True)
    return prune


def lowest_n_m(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Bool mask zeroing the M-N lowest scores in each group of M consecutive inputs."""
    out_dim, in_dim = scores.shape
    groups = scores.reshape(out_dim, in_dim // m, m)            # [out, in/M, M]
    prune = torch.zeros_like(groups, dtype=torch.bool)
    prune.scatter_(2, torch.topk(groups, m - n, dim=2, largest=False).indices, True)
    return prune.reshape(out_dim, in_dim)


def lowest_global(scores: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Masks zeroing exactly int(sparsity * total) lowest scores across all tensors."""
    total = sum(s.numel() for s in scores.values())
    k = int(sparsity * total)
    if k == 0:
        return {name: torch.zeros_like(s, dtype=torch.bool) for name, s in scores.items()}
    flat = torch.cat([s.flatten().float() for s in scores.values()])
    threshold = torch.kthvalue(flat, k).values
    del flat
    masks = {name: (s < threshold).contiguous() for name, s in scores.items()}
    # Ties at the threshold: zero just enough of them, in module order, to hit k exactly.
    short = k - sum(int(m.sum()) for m in masks.values())
    for name, s in scores.items():
        if short <= 0:
            break
        ties = (s == threshold).reshape(-1).nonzero().flatten()[:short]
        masks[name].view(-1)[ties] = True
        short -= ties.numel()
    return masks


def prune_mask(scores: torch.Tensor, sparsity: float, per_row: bool,
               n_m: tuple[int, int] | None) -> torch.Tensor:
    """The bool 'zero this' mask for one layer's `[out, in]` scores."""
    if n_m:
        return lowest_n_m(scores, *n_m)
    return lowest_per_row(scores, sparsity) if per_row else lowest_in_tensor(scores, sparsity)


@torch.no_grad()
def zero_weights(module: nn.Module, prune_out_in: torch.Tensor) -> torch.Tensor:
    """Zero the masked weights in place; returns the keep mask in the weight's own layout."""
    weight = weight_out_in(module)
    weight[prune_out_in] = 0
    keep = ~prune_out_in
    return keep.t().contiguous() if is_conv1d(module) else keep


# -- magnitude ------------------------------------------------------------------------------
@torch.no_grad()
def magnitude_prune(model: nn.Module, sparsity: float, scope: str = "layer",
                    n_m: tuple[int, int] | None = None) -> Masks:
    """Zero the smallest |W| in every block linear layer; returns the keep masks."""
    linears = block_linears(model)
    # .contiguous(): a Conv1D's [out, in] view is transposed; masks index it row-major.
    scores = {name: weight_out_in(m).abs().contiguous() for name, m in linears.items()}
    if scope == "global" and not n_m:
        prune = lowest_global(scores, sparsity)
    else:
        prune = {name: prune_mask(s, sparsity, per_row=False, n_m=n_m) for name, s in scores.items()}
    return {name: zero_weights(linears[name], prune[name]) for name in linears}


# -- Wanda ----------------------------------------------------------------------------------
class _StopForward(Exception):
    """Raised by the capture hook once the first block's inputs are recorded."""


@torch.no_grad()
def first_block_inputs(model: nn.Module, calibration: torch.Tensor, device: torch.device,
                       batch_size: int) -> list[tuple[tuple, dict]]:
    """(args, kwargs) that the first block receives for each calibration batch.

    A forward pre-hook records the call and stops the forward pass, so attention masks and
    rotary position embeddings come from the model's own code, for any architecture."""
    _, blocks = block_list(model)
    captured: list[tuple[tuple, dict]] = []

    def catch(module, args, kwargs):
        captured.append((args, kwargs))
        raise _StopForward

    handle = blocks[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        for start in range(0, calibration.shape[0], batch_size):
            batch = calibration[start:start + batch_size].to(device)
            try:
                model(input_ids=batch, use_cache=False)
            except _StopForward:
                pass
    finally:
        handle.remove()
    return captured


def _hidden(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@torch.no_grad()
def wanda_prune(model: nn.Module, calibration: torch.Tensor, sparsity: float,
                n_m: tuple[int, int] | None = None, *, device: torch.device,
                batch_size: int = 8,
                on_block: Callable[[int, int], None] | None = None) -> Masks:
    """Wanda: per block, gather ||X_j||^2 per input feature of each linear layer with forward
    hooks, zero the lowest |W_ij| * ||X_j|| within each output row, then feed the pruned block's
    outputs to the next block. `calibration` is `[n, seq_len]` token ids."""
    path, blocks = block_list(model)
    was_training = model.training
    model.eval()
    inputs = first_block_inputs(model, calibration, device, batch_size)
    masks: Masks = {}
    for index, block in enumerate(blocks):
        linears = linears_of_block(block)
        sq_norms = {name: torch.zeros(in_features(m), dtype=torch.float32, device=device)
                    for name, m in linears.items()}

        def make_hook(name: str):
            def hook(module, args, output):
                x = args[0].detach()                                  # [b, t, in]
                sq_norms[name] += x.reshape(-1, x.shape[-1]).float().pow(2).sum(0)
            return hook

        handles = [m.register_forward_hook(make_hook(name)) for name, m in linears.items()]
        try:
            for args, kwargs in inputs:
                block(*args, **kwargs)
        finally:
            for handle in handles:
                handle.remove()
        for name, module in linears.items():
            # |W| [out, in] * ||X_j|| [1, in]: compared within each output row.
            scores = weight_out_in(module).abs() * sq_norms[name].sqrt().to(module.weight.dtype)[None, :]
            masks[f"{path}.{index}.{name}"] = zero_weights(
                module, prune_mask(scores, sparsity, per_row=True, n_m=n_m))
        # The next block sees what this (now pruned) block produces.
        inputs = [((_hidden(block(*args, **kwargs)),) + tuple(args[1:]), kwargs)
                  for args, kwargs in inputs]
        if on_block:
            on_block(index + 1, len(blocks))
    model.train(was_training)
    return masks


# -- post-condition and recovery ------------------------------------------------------------
@torch.no_grad()
def check_sparsity(model: nn.Module) -> dict:
    """Achieved sparsity of the block linear layers: per layer and overall (share of zeros)."""
    layers, zeros, total = {}, 0, 0
    for name, module in block_linears(model).items():
        weight = module.weight
        n_zero = int((weight == 0).sum())
        layers[name] = n_zero / weight.numel()
        zeros += n_zero
        total += weight.numel()
    return {"layers": layers, "overall": zeros / total if total else 0.0,
            "n_zero": zeros, "n_weights": total}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Re-zero pruned weights (after an optimiser step), holding the masks fixed."""
    linears = block_linears(model)
    for name, keep in masks.items():
        linears[name].weight.mul_(keep.to(linears[name].weight.dtype))


def n_m_problems(model: nn.Module, m: int) -> list[str]:
    """Block linear layers whose input width is not a multiple of M (N:M cannot apply)."""
    return [f"{name} ({in_features(mod)} inputs)" for name, mod in block_linears(model).items()
            if in_features(mod) % m]
