"""Device and dtype choice: cuda > mps > cpu; bf16 (or fp16) on GPU, fp32 on CPU."""

from __future__ import annotations

import torch


def pick_device(preference: str = "auto") -> torch.device:
    """The device to use for `preference` ("auto", "cpu", "cuda", "cuda:N", "mps")."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {preference!r} was asked for but no CUDA GPU is available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device {preference!r} was asked for but MPS is not available")
    return device


def pick_dtype(preference: str, device: torch.device) -> torch.dtype:
    """fp32 on CPU; bf16 on GPUs that support it, otherwise fp16; or the explicit choice."""
    if preference != "auto":
        return getattr(torch, preference)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/MPS/CPU allocation failures (the cue to halve a batch)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text or isinstance(exc, MemoryError))


def free_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
