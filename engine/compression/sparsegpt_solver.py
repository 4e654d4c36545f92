"""SparseGPT (Frantar & Alistarh, 2023, "SparseGPT: Massive Language Models Can Be Accurately
Pruned in One-Shot"), after the reference implementation IST-DASLab/sparsegpt `sparsegpt.py`
(`SparseGPT.fasterprune`) and its port in locuslab/wanda `lib/sparsegpt.py` / `lib/prune.py`.

Definition. For a linear layer W `[out, in]` with layer Hessian H = 2 X X^T / N on calibration
inputs X (`engine.compression.hessian`), SparseGPT approximately solves
min ||W X - W' X||^2 subject to W' having the requested zeros, by the OBS update applied to the
columns in order: with U the upper Cholesky factor of (H + 0.01 mean(diag H) I)^-1,

- columns are taken in blocks of B = 128; at the start of each block the mask is chosen on the
  block's *current* (already updated) weights by the OBS saliency w_ij^2 / U_jj^2: the lowest
  `sparsity` share of the block's out x B scores is pruned (adaptive mask selection);
- N:M: at every M-th column the M - N lowest saliencies of each row's next M columns are pruned;
- for each column j of the block, q_j = w_j with the masked entries set to 0, and the error
  e_j = (w_j - q_j) / U_jj is spread over the remaining columns: W[:, j:] -= e_j U[j, j:];
  after the block, W[:, block end:] -= E U[block, block end:] (lazy batch update).

Exactness. The reference prunes every score <= the block's threshold (ties and the threshold
itself make it prune a little more than asked); here each block prunes exactly
k_b = int(s * out * end_b) - int(s * out * start_b) weights, so every layer has exactly
int(s * out * in) zeros, the same count as magnitude pruning. N:M is exact by construction.

Layers are processed block by block (`hessian.sequential_blocks`): each block is calibrated on
the outputs of the already-pruned blocks before it, and all linear layers of a block take their
Hessians from the block's inputs before any of them is pruned, as in the reference. GPT-2's
`Conv1D` (`[in, out]` weights) is handled through `arch.weight_out_in`."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from engine.formats.architecture import block_list, is_conv1d, weight_out_in
from engine.compression.hessian import column_solver, damped_inverse_cholesky, sequential_blocks

BLOCK_SIZE = 128
PERCDAMP = 0.01

Masks = dict[str, torch.Tensor]


def _block_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of exactly the `k` lowest scores of a column block `[out, count]`."""
    prune = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if k > 0:
        prune[torch.topk(scores.flatten(), k, largest=False).indices] = True
    return prune.view_as(scores)


@torch.no_grad()
@column_solver()
def sparsegpt_layer(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float,
                    n_m: tuple[int, int] | None = None, *, block_size: int = BLOCK_SIZE,
                    percdamp: float = PERCDAMP) -> tuple[torch.Tensor, torch.Tensor]:
    """(pruned and updated weight `[out, in]` float32, bool 'pruned' mask) for one layer
    (see the module docstring); `weight` is not changed."""
    W = weight.detach().float().clone()
    rows, columns = W.shape
    Hinv, dead = damped_inverse_cholesky(hessian.to(W.device), percdamp)
    W[:, dead] = 0
    if n_m:
        n, m = n_m
        block_size = max(m, block_size - block_size % m)   # N:M groups never straddle blocks
    pruned = torch.zeros_like(W, dtype=torch.bool)
    for i1 in range(0, columns, block_size):
        i2 = min(i1 + block_size, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        diag1 = torch.diag(Hinv1)
        if n_m:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        else:
            k = int(sparsity * rows * i2) - int(sparsity * rows * i1)
            mask1 = _block_mask(W1 ** 2 / diag1[None, :] ** 2, k)
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if n_m and i % m == 0:
                scores = W1[:, i:i + m] ** 2 / diag1[None, i:i + m] ** 2
                mask1.scatter_(1, i + torch.topk(scores, m - n, dim=1, largest=False).indices, True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err = (w - q) / d
            W1[:, i:] -= err[:, None] @ Hinv1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        pruned[:, i1:i2] = mask1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return W, pruned


@torch.no_grad()
def sparsegpt_prune(model: nn.Module, calibration: torch.Tensor, sparsity: float,
                    n_m: tuple[int, int] | None = None, *, device: torch.device,
                    batch_size: int = 8, block_size: int = BLOCK_SIZE, percdamp: float = PERCDAMP,
                    on_block: Callable[[int, int], None] | None = None) -> Masks:
    """Prune every block linear layer with SparseGPT, block by block; returns the keep masks
    (module name -> bool, in the weight's own layout) that a recovery fine-tune holds fixed."""
    path, _ = block_list(model)
    masks: Masks = {}

    def step(index: int, block: nn.Module, linears: dict[str, nn.Module],
             hessians: dict[str, torch.Tensor]) -> None:
        for name, module in linears.items():
            view = weight_out_in(module)                    # a view: writes reach the layer
            new, prune = sparsegpt_layer(view, hessians[name], sparsity, n_m,
                                         block_size=block_size, percdamp=percdamp)
            view.copy_(new.to(view.dtype))
            view[prune] = 0                                 # exact zeros whatever the dtype
            keep = ~prune
            masks[f"{path}.{index}.{name}"] = keep.t().contiguous() if is_conv1d(module) else keep

    sequential_blocks(model, calibration, device, step, batch_size=batch_size, on_block=on_block)
    return masks
