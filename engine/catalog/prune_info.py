"""Layer 3 (catalog): the `prune` job kind's methods, declared (in registration order):
magnitude, wanda, heads, sparsegpt and layers (depth pruning by Block Influence). Implemented
by the modules of `engine.compression.methods` of the same names."""

from __future__ import annotations

from typing import ClassVar

from engine.catalog.method_info import PruneMethodInfo, register


class UnstructuredPruneInfo(PruneMethodInfo):
    """Zeroes individual weights of the block linear layers (free sparsity or N:M)."""

    supports_n_m: ClassVar[bool] = True


@register
class MagnitudeInfo(UnstructuredPruneInfo):
    name = "magnitude"
    title = "magnitude (|W|)"


@register
class WandaInfo(UnstructuredPruneInfo):
    name = "wanda"
    title = "Wanda (|W| x ||X||)"
    needs_calibration_text = True
    supports_global_scope = False
    global_scope_reason = "wanda compares weights within each output row"


@register
class HeadsInfo(PruneMethodInfo):
    name = "heads"
    title = "attention heads (structured)"
    needs_calibration_text = True


@register
class SparseGPTInfo(UnstructuredPruneInfo):
    name = "sparsegpt"
    title = "SparseGPT (OBS reconstruction)"
    needs_calibration_text = True
    supports_global_scope = False
    global_scope_reason = "sparsegpt chooses each layer's mask within its own column blocks"


@register
class LayersInfo(PruneMethodInfo):
    name = "layers"
    title = "transformer blocks (Block Influence)"
    needs_calibration_text = True
    supports_global_scope = False
    global_scope_reason = "layers ranks whole blocks of one model; it has no per-layer scope to widen"

    def name_suffix(self, spec) -> str:
        return f"{spec.sparsity:g}blocks"
