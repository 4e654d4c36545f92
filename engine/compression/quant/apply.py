"""Quantizing a loaded model in place: every linear layer inside the transformer blocks (never
embeddings or the output head, as for pruning), with RTN (`rtn.quantize`). The in-memory
weights are replaced by their dequantized values, so the model evaluated, saved and reloaded
is the same one."""

from __future__ import annotations

import torch
from torch import nn

from engine.formats.architecture import block_linears, is_conv1d, weight_out_in
from engine.formats.rtn import QuantConfig, QuantizedTensor, dequantize, quantize


@torch.no_grad()
def rtn_quantize_model(model: nn.Module, config: QuantConfig) -> tuple[dict[str, QuantizedTensor], set[str]]:
    """(quantized layers by module name, the names whose parameter is stored [in, out])."""
    layers: dict[str, QuantizedTensor] = {}
    transposed: set[str] = set()
    for name, module in block_linears(model).items():
        weight = weight_out_in(module)                 # a view: writing it updates the layer
        qt = quantize(weight, config)
        weight.copy_(dequantize(qt, weight.dtype).to(weight.device))
        layers[name] = qt
        if is_conv1d(module):
            transposed.add(name)
    return layers, transposed


def bits_per_weight(layers: dict[str, QuantizedTensor]) -> float:
    """Average stored bits per quantized weight: the codes plus each group's fp16 scale (and
    8-bit zero point when asymmetric)."""
    weights = sum(qt.codes.numel() for qt in layers.values())
    bits = sum(qt.codes.numel() * qt.config.bits + qt.scales.numel() * (16 + (8 if qt.zeros is not None else 0))
               for qt in layers.values())
    return bits / weights if weights else 0.0
