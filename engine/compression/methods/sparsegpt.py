"""SparseGPT (Frantar & Alistarh, 2023): prune each block linear layer by solving its layer-wise
reconstruction ||W X - W' X||^2 with OBS weight updates, calibrated on text block by block
(each block on the outputs of the pruned blocks before it), at a free per-layer sparsity or N:M;
dampening 0.01, column blocks of 128. No global scope (the mask is chosen per layer, within each
column block). The computation is `engine.compression.sparsegpt_solver` (after IST-DASLab/sparsegpt)."""

from __future__ import annotations

from typing import Any

from engine.catalog.prune_info import SparseGPTInfo
from engine.compression.methods.base import MethodOutcome, MethodRun, register
from engine.compression.methods.unstructured import UnstructuredPruneMethod, n_m_pattern


@register
class SparseGPT(SparseGPTInfo, UnstructuredPruneMethod):
    """Declared by `engine.catalog.prune_info`."""

    def apply(self, run: MethodRun) -> MethodOutcome:
        from engine.compression.sparsegpt_solver import BLOCK_SIZE, PERCDAMP, sparsegpt_prune  # on use: torch
        reporter = run.reporter

        def on_block(done: int, total: int) -> None:
            reporter.check_cancelled()
            reporter.progress(done, total, f"sparsegpt: block {done}/{total}", phase="pruning")

        masks = sparsegpt_prune(run.model, run.calibration, run.spec.sparsity, n_m_pattern(run.spec),
                                device=run.device, on_block=on_block)
        return MethodOutcome(masks=masks, details={"block_size": BLOCK_SIZE, "percdamp": PERCDAMP})

    def expected_layer_sparsity(self, module: Any, spec) -> float:
        """N:M: (M - N) / M; otherwise exactly int(s * n) of a layer's n weights."""
        if spec.n_m:
            return super().expected_layer_sparsity(module, spec)
        from engine.formats.architecture import weight_out_in  # on use: torch
        out_dim, in_dim = weight_out_in(module).shape
        return int(spec.sparsity * out_dim * in_dim) / (out_dim * in_dim)
