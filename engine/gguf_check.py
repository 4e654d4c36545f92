"""A cheap look at a GGUF file, for submit time: the signature, and whether the file is as long
as its own header says (a download or copy cut short is not). Reads the header only (key/value
metadata and tensor table: ~50 ms for SmolLM2's 49k-token vocabulary, against ~10 s for
`gguf.GGUFReader`, which maps every array), and imports neither torch nor the model loader.

GGUF layout (v2 and v3): magic "GGUF", uint32 version, uint64 tensor count, uint64 key/value
count, the key/value pairs, the tensor infos (name, dims, type, offset into the data section),
then the data section, aligned to `general.alignment` (32 by default). The expected length is
the data section's start plus the furthest tensor's offset + size (size from
`gguf.GGML_QUANT_SIZES`: elements / block size * bytes per block)."""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from engine.errors import GGUFProblem

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
_FIXED_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
_LIMIT = 1 << 24          # counts beyond this are garbage, not a real header


def check_gguf(path: Path) -> None:
    """Raise GGUFProblem when `path` lacks the GGUF signature or is shorter than its header
    says; a version this check does not know (v1, a future one) passes after the signature."""
    with open(path, "rb") as handle:
        if handle.read(4) != MAGIC:
            raise GGUFProblem("is not a GGUF file (no GGUF signature)")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            _check_layout(_Cursor(data, 4))


def _check_layout(cur: "_Cursor") -> None:
    size = len(cur.data)
    if cur.take("<I") not in (2, 3):
        return
    n_tensors, n_kv = cur.take("<Q"), cur.take("<Q")
    if n_tensors > _LIMIT or n_kv > _LIMIT:
        raise GGUFProblem(f"has an unreadable header ({n_tensors} tensors, {n_kv} keys)")
    alignment = DEFAULT_ALIGNMENT
    for _ in range(n_kv):
        key = cur.string()
        kind = cur.take("<I")
        if key == "general.alignment" and kind == 4:
            alignment = cur.take("<I") or DEFAULT_ALIGNMENT
        else:
            cur.skip_value(kind)
    end = 0
    for _ in range(n_tensors):
        cur.string(keep=False)
        dims = [cur.take("<Q") for _ in range(cur.take("<I"))]
        kind, offset = cur.take("<I"), cur.take("<Q")
        end = max(end, offset + _tensor_bytes(kind, dims))
    start = -(-cur.pos // alignment) * alignment
    if size < start + end:
        raise GGUFProblem(f"is truncated ({size} bytes; its header describes {start + end})")


class _Cursor:
    """Reads little-endian values from a mapped file, refusing to run past its end."""

    def __init__(self, data: mmap.mmap, pos: int):
        self.data, self.pos = data, pos

    def advance(self, n: int) -> int:
        start, self.pos = self.pos, self.pos + n
        if self.pos > len(self.data):
            raise GGUFProblem("is truncated inside its header")
        return start

    def take(self, fmt: str) -> int:
        return struct.unpack_from(fmt, self.data, self.advance(struct.calcsize(fmt)))[0]

    def string(self, keep: bool = True) -> str:
        length = self.take("<Q")
        start = self.advance(length)
        return self.data[start:self.pos].decode("utf-8", errors="replace") if keep else ""

    def skip_value(self, kind: int) -> None:
        if kind in _FIXED_SIZES:
            self.advance(_FIXED_SIZES[kind])
        elif kind == _STRING:
            self.advance(self.take("<Q"))
        elif kind == _ARRAY:
            item, count = self.take("<I"), self.take("<Q")
            if item in _FIXED_SIZES:
                self.advance(_FIXED_SIZES[item] * count)
            elif item == _STRING:
                for _ in range(count):
                    self.advance(self.take("<Q"))
            else:
                for _ in range(count):
                    self.skip_value(item)
        else:
            raise GGUFProblem(f"has an unreadable header (value type {kind})")


def _tensor_bytes(kind: int, dims: list[int]) -> int:
    """Bytes of a tensor of GGML type `kind`; 0 for a type this gguf version does not know."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
    try:
        block, per_block = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
    except (ValueError, KeyError):
        return 0
    elements = 1
    for d in dims:
        elements *= d
    return elements // block * per_block
