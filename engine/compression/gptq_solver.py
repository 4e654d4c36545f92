"""GPTQ (Frantar, Ashkboos, Hoefler & Alistarh, 2023, "GPTQ: Accurate Post-Training
Quantization for Generative Pre-trained Transformers"), after the reference implementation
IST-DASLab/gptq `gptq.py` (`GPTQ.fasterquant`) and `quant.py` (`Quantizer`).

Definition. For a linear layer W `[out, in]` with layer Hessian H = 2 X X^T / N on calibration
inputs X (`engine.compression.hessian`), GPTQ quantizes the columns in order and compensates
each column's rounding error on the columns not yet quantized: with U the upper Cholesky factor
of (H + 0.01 mean(diag H) I)^-1, for column j, q_j = quant(w_j), e_j = (w_j - q_j) / U_jj and
W[:, j:] -= e_j U[j, j:]; in blocks of 128 columns with the lazy batch update
W[:, block end:] -= E U[block, block end:]. Act-order (quantizing columns by decreasing H_jj)
is off, and groups are not static: a group's scale and zero point are computed when its first
column is reached, from the group's *current* (already error-compensated) weights.

Grid. quant() is exactly round-to-nearest's grid (`engine.formats.rtn`): b bits,
groups of `group_size` consecutive inputs per row (the last may be shorter), symmetric
(scale = max|w| / (2^(b-1) - 1), codes offset by 2^(b-1)) or asymmetric (scale = (max - min) /
(2^b - 1), zero = round(-min / scale)), scales rounded to float16 as `rtn._storable` does. The
result is a `rtn.QuantizedTensor` (uint8 codes, float32 scales and zero points), so the RTN packed
format (`engine.formats.packed.save_quantized`) stores it and `load_quantized` rebuilds bit-identical
weights; the in-memory layer is set to `rtn.dequantize` of those codes. The reference's grid
differs slightly (its symmetric grid is 0..2^b - 1 around (2^b)/2, and it widens min/max to
include 0); the error compensation, which is GPTQ, is the same.

Why implemented here rather than taken from a library: `llmcompressor` 0.14 pins
transformers <= 5.17 and torch <= 2.14 while compfair runs transformers 5.24; `gptqmodel`
7.7.0 (on the package index; metadata read with pip) requires torch >= 2.14.1 while compfair
installs torch 2.13 (`torch>=2.2,<2.15`), ships as an sdist that builds native kernels (ninja,
maturin), and pulls datasets >= 5.1, pyarrow >= 26, torchao >= 0.18 and device-smi;
`auto-gptq` 0.7.1 (2024) is unmaintained. The algorithm is ~60 lines of torch on top of the
Hessians SparseGPT also uses, and its product is the packed format compfair already loads.

Layers are quantized block by block (`hessian.sequential_blocks`): each block is calibrated on
the outputs of the already-quantized blocks before it (the reference's sequential mode)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from engine.formats.architecture import block_list, is_conv1d, weight_out_in
from engine.compression.hessian import column_solver, damped_inverse_cholesky, sequential_blocks
from engine.formats.rtn import QuantConfig, QuantizedTensor, dequantize, quantize

BLOCK_SIZE = 128
PERCDAMP = 0.01


def group_grid(columns: torch.Tensor, config: QuantConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(scale `[out]`, zero point `[out]` or None) of one group's columns `[out, g]`: the RTN
    grid, computed by `rtn.quantize` itself so the two methods cannot drift apart."""
    qt = quantize(columns, QuantConfig(config.bits, columns.shape[1], config.symmetric))
    return qt.scales[:, 0], None if qt.zeros is None else qt.zeros[:, 0]


def quantize_column(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None,
                    config: QuantConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 codes, dequantized values) of one column `[out]` on its group's grid; the values
    are computed as `rtn.dequantize` computes them (same float32 operations)."""
    if zero is None:
        qmax = 2 ** (config.bits - 1) - 1
        q = torch.clamp(torch.round(w / scale), -(qmax + 1), qmax)
        codes = q + (qmax + 1)
        values = (codes - 2 ** (config.bits - 1)) * scale
    else:
        levels = 2 ** config.bits - 1
        codes = torch.clamp(torch.round(w / scale) + zero, 0, levels)
        values = (codes - zero) * scale
    return codes.to(torch.uint8), values


@torch.no_grad()
@column_solver()
def gptq_layer(weight: torch.Tensor, hessian: torch.Tensor, config: QuantConfig, *,
               block_size: int = BLOCK_SIZE, percdamp: float = PERCDAMP) -> QuantizedTensor:
    """GPTQ-quantize one weight `[out, in]` (not changed) with its Hessian `[in, in]`."""
    W = weight.detach().float().clone()
    rows, columns = W.shape
    Hinv, dead = damped_inverse_cholesky(hessian.to(W.device), percdamp)
    W[:, dead] = 0
    g = min(config.group_size, columns)
    n_groups = -(-columns // g)
    scales = torch.ones(rows, n_groups, dtype=torch.float32, device=W.device)
    zeros = None if config.symmetric else torch.zeros_like(scales)
    codes = torch.zeros(rows, columns, dtype=torch.uint8, device=W.device)
    scale = zero = None
    for i1 in range(0, columns, block_size):
        i2 = min(i1 + block_size, columns)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            column = i1 + i
            if column % g == 0:                       # a new group: its grid from current weights
                group = column // g
                current = torch.cat([W1[:, i:], W[:, i2:]], dim=1)[:, :g]
                scale, zero = group_grid(current, config)
                scales[:, group] = scale
                if zeros is not None:
                    zeros[:, group] = zero
            w = W1[:, i]
            codes[:, column], q = quantize_column(w, scale, zero, config)
            err = (w - q) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] @ Hinv1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return QuantizedTensor(codes, scales, zeros, config)


@torch.no_grad()
def gptq_quantize_model(model: nn.Module, calibration: torch.Tensor, config: QuantConfig, *,
                        device: torch.device, batch_size: int = 8, block_size: int = BLOCK_SIZE,
                        percdamp: float = PERCDAMP, on_block: Callable[[int, int], None] | None = None,
                        ) -> tuple[dict[str, QuantizedTensor], set[str]]:
    """Quantize every block linear layer in place (weights set to their dequantized codes);
    returns (quantized layers by module name, names stored `[in, out]`), as
    `quant.apply.rtn_quantize_model` does, for `engine.formats.packed.save_quantized`."""
    path, _ = block_list(model)
    layers: dict[str, QuantizedTensor] = {}
    transposed: set[str] = set()

    def step(index: int, block: nn.Module, linears: dict[str, nn.Module],
             hessians: dict[str, torch.Tensor]) -> None:
        for name, module in linears.items():
            view = weight_out_in(module)
            qt = gptq_layer(view, hessians[name], config, block_size=block_size, percdamp=percdamp)
            view.copy_(dequantize(qt, view.dtype).to(view.device))
            full = f"{path}.{index}.{name}"
            layers[full] = QuantizedTensor(qt.codes.cpu(), qt.scales.cpu(),
                                           None if qt.zeros is None else qt.zeros.cpu(), config)
            if is_conv1d(module):
                transposed.add(full)

    sequential_blocks(model, calibration, device, step, batch_size=batch_size, on_block=on_block)
    return layers, transposed
