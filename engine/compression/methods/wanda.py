"""Wanda (Sun et al., 2023): zero the lowest |W_ij| * ||X_j||_2 within each output row, with
input norms gathered on calibration text block by block (free sparsity or N:M; no global
scope). The computation is `engine.compression.prune.wanda_prune`."""

from __future__ import annotations

from typing import Any

from engine.catalog.prune_info import WandaInfo
from engine.compression.methods.base import MethodOutcome, MethodRun, register
from engine.compression.methods.unstructured import UnstructuredPruneMethod, n_m_pattern


@register
class Wanda(WandaInfo, UnstructuredPruneMethod):
    """Declared by `engine.catalog.prune_info`."""

    def apply(self, run: MethodRun) -> MethodOutcome:
        from engine.compression.prune import wanda_prune  # on use: torch
        reporter = run.reporter

        def on_block(done: int, total: int) -> None:
            reporter.check_cancelled()
            reporter.progress(done, total, f"wanda: block {done}/{total}", phase="pruning")

        masks = wanda_prune(run.model, run.calibration, run.spec.sparsity, n_m_pattern(run.spec),
                            device=run.device, on_block=on_block)
        return MethodOutcome(masks=masks)

    def expected_layer_sparsity(self, module: Any, spec) -> float:
        """N:M: (M - N) / M; otherwise exactly int(s * in) of every row's `in` weights."""
        if spec.n_m:
            return super().expected_layer_sparsity(module, spec)
        from engine.formats.architecture import weight_out_in  # on use: torch
        _, in_dim = weight_out_in(module).shape
        return int(spec.sparsity * in_dim) / in_dim
