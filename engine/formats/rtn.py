"""Round-to-nearest (RTN) weight-only quantization, group-wise along the input dimension.

For a weight W [out, in] and group size g, every row is cut into groups of g consecutive input
weights (the last group may be shorter), each with its own scale (and zero point):

- symmetric, b bits: scale = max|w| / (2^(b-1) - 1); q = clamp(round(w / scale), -2^(b-1),
  2^(b-1) - 1); w' = q * scale (the integer grid is centred on 0; for b = 2 it is -2..1);
- asymmetric: scale = (max w - min w) / (2^b - 1); zero = round(-min w / scale);
  q = clamp(round(w / scale) + zero, 0, 2^b - 1); w' = (q - zero) * scale.

A group of zeros gets scale 1 (so q = 0 and w' = 0 exactly); scales are rounded to float16, the
precision they are stored in. Integers are returned unsigned
(symmetric ones offset by 2^(b-1)) so they pack into b bits; `dequantize` inverts that. Pure
torch, CPU or GPU; computed in float32 whatever the weight's dtype."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.catalog.quantize_info import RTN_BITS as BITS


@dataclass(frozen=True)
class QuantConfig:
    bits: int = 8
    group_size: int = 128
    symmetric: bool = True

    def __post_init__(self) -> None:
        if self.bits not in BITS:
            raise ValueError(f"bits {self.bits} is not one of {', '.join(map(str, BITS))}")
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")


@dataclass
class QuantizedTensor:
    """Unsigned integer codes [out, in] (uint8, values < 2^bits), per-group scales
    [out, n_groups] (float32) and zero points (same shape, float32; None when symmetric)."""

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    config: QuantConfig

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape)  # type: ignore[return-value]


def _groups(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, int]:
    """W [out, in] -> [out, n_groups, g] (zero-padded at the end of each row), and in."""
    out_features, in_features = weight.shape
    g = min(group_size, in_features)
    n_groups = -(-in_features // g)
    padded = torch.zeros(out_features, n_groups * g, dtype=torch.float32, device=weight.device)
    padded[:, :in_features] = weight.float()
    return padded.view(out_features, n_groups, g), in_features


def _storable(scales: torch.Tensor) -> torch.Tensor:
    """Scales as they are stored (float16, a zero group's scale 1), so the codes computed here
    and the weights dequantized from the file are the same numbers."""
    scales = scales.half().float()
    return torch.where(scales > 0, scales, torch.ones_like(scales))


def quantize(weight: torch.Tensor, config: QuantConfig) -> QuantizedTensor:
    """RTN-quantize a 2-D weight (see the module docstring)."""
    if weight.dim() != 2:
        raise ValueError(f"quantize expects a 2-D weight, got shape {tuple(weight.shape)}")
    groups, in_features = _groups(weight, config.group_size)
    if config.symmetric:
        qmax = 2 ** (config.bits - 1) - 1
        scales = groups.abs().amax(dim=-1) / max(qmax, 1)
        scales = _storable(scales)
        q = torch.clamp(torch.round(groups / scales[..., None]), -(qmax + 1), qmax)
        codes = (q + (qmax + 1)).to(torch.uint8)
        zeros = None
    else:
        levels = 2 ** config.bits - 1
        low, high = groups.amin(dim=-1), groups.amax(dim=-1)
        scales = (high - low) / levels
        scales = _storable(scales)
        zeros = torch.clamp(torch.round(-low / scales), 0, levels)
        q = torch.clamp(torch.round(groups / scales[..., None]) + zeros[..., None], 0, levels)
        codes = q.to(torch.uint8)
    out_features = weight.shape[0]
    codes = codes.view(out_features, -1)[:, :in_features].contiguous()
    return QuantizedTensor(codes, scales.contiguous(), zeros, config)


def dequantize(qt: QuantizedTensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The weight the quantized codes stand for, [out, in]."""
    config = qt.config
    out_features, in_features = qt.codes.shape
    g = min(config.group_size, in_features)
    n_groups = qt.scales.shape[1]
    codes = torch.zeros(out_features, n_groups * g, dtype=torch.float32, device=qt.codes.device)
    codes[:, :in_features] = qt.codes.float()
    codes = codes.view(out_features, n_groups, g)
    if qt.zeros is None:
        values = (codes - 2 ** (config.bits - 1)) * qt.scales[..., None]
    else:
        values = (codes - qt.zeros[..., None]) * qt.scales[..., None]
    return values.view(out_features, -1)[:, :in_features].to(dtype)
