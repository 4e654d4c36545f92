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


# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
HEAP_REUSE_BELOW = 256 << 20     # allocations up to this size come from (and return to) the heap


def keep_freed_host_memory() -> bool:
    """Ask glibc to serve host allocations up to HEAP_REUSE_BELOW from the heap and keep freed
    memory for reuse, instead of mapping fresh pages for every large tensor and unmapping them
    on free. CPU decoding allocates the same tens-of-MiB tensors every step; by default glibc
    maps those above 32 MiB anew each time, and the rest until its adaptive threshold catches
    up, so the first chunk of a job pays page faults on every step (measured: ~10% of the
    first 256-row SmolLM2 chunk on 2 cores). Process-wide and idempotent; False where the C
    library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, HEAP_REUSE_BELOW)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 * HEAP_REUSE_BELOW))
