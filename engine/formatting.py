"""Plain-text formatting of figures, shared by the CLI, the report and the TUI."""

from __future__ import annotations

from datetime import datetime


def fmt_time(ts: float | None) -> str:
    """A timestamp as local 'YYYY-MM-DD HH:MM' ('' for none)."""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else ""


def fmt_count(n: int | None) -> str:
    """A count with a k/M/G suffix: 134515008 -> '134.5M'."""
    if n is None:
        return ""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def fmt_bytes(n: int | None) -> str:
    """A size in binary units: 517 MB, 3.2 GB."""
    if n is None:
        return ""
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def fmt_storage(extra) -> str:
    """How a model's weights are stored, from its registry `extra` (JSON text or dict):
    'rtn-packed 4.50 b/w', 'gguf-q4_0 5.04 b/w', 'sparse 341.2 MB float16' (its bitmask size
    and the precision it is saved in), 'float16' (a half-precision derived model) or ''."""
    import json
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except ValueError:
            extra = {}
    extra = extra or {}
    quant = extra.get("quantization") or {}
    if quant.get("format"):
        return f"{quant['format']} {quant.get('bits_per_weight', 0):.2f} b/w"
    dtype = extra.get("saved_dtype") or ""
    if extra.get("sparse_bytes"):
        return f"sparse {fmt_bytes(extra['sparse_bytes'])}" + (f" {dtype}" if dtype else "")
    return dtype
