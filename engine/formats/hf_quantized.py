"""Quantization through a library that transformers integrates (torchao, bitsandbytes): the
parent is written to a scratch folder, reloaded by `from_pretrained` with the library's
`quantization_config`, and saved with `save_pretrained`, so the product is exactly the
checkpoint a user of that library would produce and load (its config.json names the
quantization; the registry's plain `from_pretrained` path reads it back).

Bits per weight are measured on the written file: the bytes of every stored tensor that
belongs to a quantized block linear layer (codes, scales, zero points, quantization state)
over the number of weights those layers hold in the parent."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from engine.formats.architecture import block_linears

log = logging.getLogger(__name__)

SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
                     "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4}


@dataclass(frozen=True)
class WrittenCheckpoint:
    """A quantized checkpoint written by transformers: its folder, the weights' bytes on disk,
    stored bits per weight over the quantized layers, and how many layers were quantized."""

    folder: Path
    disk_bytes: int
    bits_per_weight: float
    quantized_layers: int


def write_quantized(model: nn.Module, tokenizer: Any, folder: Path, quantization_config: Any,
                    layer_names: dict[str, int]) -> WrittenCheckpoint:
    """Save `model` (float weights) quantized by `quantization_config` into `folder`.

    `layer_names`: the block linear layers (full module names) and their weight counts in the
    parent, over which bits per weight are measured."""
    from transformers import AutoModelForCausalLM
    folder.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="compfair-quant-", dir=folder.parent))
    try:
        model.save_pretrained(scratch)
        quantized = AutoModelForCausalLM.from_pretrained(
            str(scratch), quantization_config=quantization_config, dtype=torch.float32,
            device_map=str(next(model.parameters()).device))
        quantized.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    files = sorted(folder.glob("*.safetensors"))
    stored = _stored_bytes_by_key(files)
    quantized_bytes = weights = layers = 0
    for name, count in layer_names.items():
        own = sum(size for key, size in stored.items() if key.startswith(name + "."))
        if own and own < 4 * count:          # below float32: this layer was quantized
            quantized_bytes += own
            weights += count
            layers += 1
    if not layers:
        raise ValueError("the library quantized none of the model's block linear layers")
    return WrittenCheckpoint(folder, sum(f.stat().st_size for f in files),
                             round(8 * quantized_bytes / weights, 3), layers)


def _stored_bytes_by_key(files: list[Path]) -> dict[str, int]:
    """Bytes of each tensor in safetensors files, read from their JSON headers."""
    sizes: dict[str, int] = {}
    for path in files:
        with path.open("rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(length))
        for key, info in header.items():
            if key == "__metadata__":
                continue
            start, end = info["data_offsets"]
            sizes[key] = end - start
    return sizes


def layer_weight_counts(model: nn.Module) -> dict[str, int]:
    """Every block linear layer's full name and weight count."""
    return {name: module.weight.numel() for name, module in block_linears(model).items()}


def has_conv1d_layers(model: nn.Module) -> bool:
    """True when the blocks hold GPT-2-style Conv1D layers (transposed nn.Linear), which
    torchao's `quantize_` does not convert."""
    return any(not isinstance(m, nn.Linear) for m in block_linears(model).values())


def torchao_config(bits: int, group_size: int) -> Any:
    """transformers' TorchAoConfig for weight-only int8 (per channel) or int4 (per group of
    `group_size`; torchao's CPU layout keeps 4-bit values in int8 containers)."""
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, PerGroup
    from transformers import TorchAoConfig
    if bits == 8:
        return TorchAoConfig(Int8WeightOnlyConfig())
    return TorchAoConfig(IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group_size)))


def bnb_config(bits: int) -> Any:
    """transformers' BitsAndBytesConfig: LLM.int8() for 8 bits, NF4 (blocks of 64, float32
    compute) for 4 bits."""
    from transformers import BitsAndBytesConfig
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=torch.float32)


def dense_view(param: torch.Tensor) -> torch.Tensor | None:
    """A parameter as plain float values where that can be had (torchao tensor subclasses
    dequantize; bitsandbytes' packed 4-bit parameters through their quant state), else None
    for integer-coded storage whose values are not weights (bitsandbytes int8 codes are
    checked as they are: they are finite by construction)."""
    if type(param) in (torch.Tensor, nn.Parameter) and type(param.data) is torch.Tensor:
        return param if param.is_floating_point() else None
    if hasattr(param, "quant_state") and getattr(param, "quant_state", None) is not None:
        import bitsandbytes.functional as bnb_functional
        return bnb_functional.dequantize_4bit(param.data, param.quant_state)
    data = param.data if isinstance(param, nn.Parameter) else param
    if type(data) is not torch.Tensor and hasattr(data, "dequantize"):      # a torchao subclass
        return data.dequantize()
    return data if data.is_floating_point() else None


def logical_numel(param: torch.Tensor) -> int:
    """The number of weights a parameter stands for (a packed 4-bit parameter holds two a byte)."""
    state = getattr(param, "quant_state", None)
    if state is not None and getattr(state, "shape", None) is not None:
        return int(torch.Size(state.shape).numel())
    return param.numel()
