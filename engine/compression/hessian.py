"""What SparseGPT and GPTQ share: layer-wise reconstruction on calibration inputs.

Both methods solve, for every linear layer with weight W `[out, in]` and calibration inputs
X `[in, N]` (N tokens), argmin_W' ||W X - W' X||_2^2 under a constraint on W' (a sparsity
pattern, or a quantization grid). The loss is a quadratic form in the rows of W - W' with the
layer Hessian H = 2 X X^T / N, so each method needs only H, and the inverse Hessian's upper
Cholesky factor drives their column-by-column updates (OBS: an error made on column j is
compensated on the columns after it, in proportion to Hinv[j, j:]).

This module collects H for every linear layer of every block *sequentially*, as the reference
code does (IST-DASLab/sparsegpt `opt.py`/`llama.py`, IST-DASLab/gptq `llama.py`, and the port
in locuslab/wanda `lib/prune.py` `prune_sparsegpt`): the first block's inputs are captured on
the calibration token blocks (`prune.first_block_inputs`, which keeps the model's own attention
masks and rotary embeddings), each block's layer Hessians are gathered by forward hooks on its
inputs, the block is then compressed, and its outputs *after* compression are what the next
block is calibrated on. `damped_inverse_cholesky` is the reference's `H += percdamp *
mean(diag H) I; Hinv = chol(chol_inverse(chol(H)), upper)`, with dead inputs (an input feature
that is zero on every calibration token) given H[j, j] = 1 and their weights zeroed."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from engine.formats.architecture import block_list, in_features, linears_of_block
from engine.compression.prune import _hidden, first_block_inputs

log = logging.getLogger(__name__)

# (block index, the block, its linear layers by name inside the block, their Hessians)
BlockStep = Callable[[int, nn.Module, dict[str, nn.Module], dict[str, torch.Tensor]], None]


class HessianAccumulator:
    """H = 2 / N * sum over calibration tokens of x x^T (float32), for one layer's inputs."""

    def __init__(self, columns: int, device: torch.device) -> None:
        self.matrix = torch.zeros(columns, columns, dtype=torch.float32, device=device)
        self.tokens = 0

    def add(self, inputs: torch.Tensor) -> None:
        """Add a batch of inputs `[..., in]` (the running mean is kept exact)."""
        x = inputs.detach().reshape(-1, inputs.shape[-1]).float()
        n = x.shape[0]
        if n == 0:
            return
        self.matrix *= self.tokens / (self.tokens + n)
        self.tokens += n
        x = x * (2.0 / self.tokens) ** 0.5
        self.matrix += x.t() @ x


@torch.no_grad()
def block_hessians(block: nn.Module, linears: dict[str, nn.Module],
                   inputs: list[tuple[tuple, dict]], device: torch.device) -> dict[str, torch.Tensor]:
    """Run `block` on every captured `(args, kwargs)` and return each linear layer's H."""
    accumulators = {name: HessianAccumulator(in_features(m), device) for name, m in linears.items()}

    def make_hook(name: str):
        def hook(module, args, output):
            accumulators[name].add(args[0])
        return hook

    handles = [m.register_forward_hook(make_hook(name)) for name, m in linears.items()]
    try:
        for args, kwargs in inputs:
            block(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return {name: acc.matrix for name, acc in accumulators.items()}


@torch.no_grad()
def sequential_blocks(model: nn.Module, calibration: torch.Tensor, device: torch.device,
                      step: BlockStep, *, batch_size: int = 8,
                      on_block: Callable[[int, int], None] | None = None) -> None:
    """For each block in order: gather its layers' Hessians on the block's inputs, call
    `step` (which changes the block's weights in place), then feed the changed block's
    outputs to the next block. `calibration` is `[samples, seq_len]` token ids."""
    _, blocks = block_list(model)
    was_training = model.training
    model.eval()
    inputs = first_block_inputs(model, calibration, device, batch_size)
    try:
        for index, block in enumerate(blocks):
            linears = linears_of_block(block)
            hessians = block_hessians(block, linears, inputs, device)
            step(index, block, linears, hessians)
            del hessians
            inputs = [((_hidden(block(*args, **kwargs)),) + tuple(args[1:]), kwargs)
                      for args, kwargs in inputs]
            if on_block:
                on_block(index + 1, len(blocks))
    finally:
        model.train(was_training)


def _flushing_denormals_now() -> bool:
    """Whether the CPU currently flushes denormal floats to zero (torch has no getter)."""
    return float(torch.tensor([1e-39], dtype=torch.float32).mul(1.0)) == 0.0


@contextmanager
def column_solver() -> Iterator[None]:
    """One CPU thread, with denormal floats flushed to zero, for the duration (both settings
    restored afterwards): the setting for the column-by-column loops of SparseGPT and GPTQ.

    Those loops run thousands of tiny operations (one column of <= a few thousand values each):
    with several intra-op threads they wait on each other, badly so when another process shares
    the cores, and the products of tiny inverse-Hessian entries and small errors can be
    denormal, which every later operation on x86 handles many times slower (measured on
    SmolLM2-135M on 2 shared cores: 23-43 s per SparseGPT block instead of 2.6 s). Flushing is
    per thread, hence one thread. Values below 1.2e-38 change no weight that float32, float16
    or bfloat16 stores."""
    threads, flushing = torch.get_num_threads(), _flushing_denormals_now()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(flushing)
        torch.set_num_threads(threads)


def damped_inverse_cholesky(hessian: torch.Tensor, percdamp: float = 0.01,
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(upper Cholesky factor of (H + damp I)^-1, bool mask of dead input columns).

    damp = percdamp * mean(diag H), as in the reference code. Should the factorisation fail
    (H not positive definite in float32), the damping is raised tenfold, up to three times."""
    H = hessian.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    mean_diag = torch.mean(torch.diag(H))
    diag = torch.arange(H.shape[0], device=H.device)
    damp = percdamp
    for attempt in range(4):
        try:
            damped = H.clone()
            damped[diag, diag] += damp * mean_diag
            lower = torch.linalg.cholesky(damped)
            inverse = torch.cholesky_inverse(lower)
            return torch.linalg.cholesky(inverse, upper=True), dead
        except RuntimeError:   # torch.linalg.LinAlgError: not positive definite
            if attempt == 3:
                raise
            damp *= 10
            log.warning("Hessian not positive definite; raising the dampening to %g", damp)
    raise AssertionError("unreachable")


def reconstruction_error(original: torch.Tensor, changed: torch.Tensor, hessian: torch.Tensor) -> float:
    """||W X - W' X||^2 / N * 2 = tr((W - W') H (W - W')^T): the layer-wise loss both methods
    minimise, from the Hessian alone (`original`, `changed`: `[out, in]`)."""
    delta = (original.float() - changed.float())
    return float(torch.einsum("oi,ij,oj->", delta, hessian.float(), delta))
