"""Magnitude pruning: zero the lowest |W| per layer (`scope="layer"`) or across all block
layers at once (`scope="global"`), or the lowest of every M consecutive inputs (N:M). Needs no
calibration text. The computation is `engine.compression.prune.magnitude_prune`."""

from __future__ import annotations

from typing import Any

from engine.catalog.prune_info import MagnitudeInfo
from engine.compression.methods.base import MethodOutcome, MethodRun, register
from engine.compression.methods.unstructured import UnstructuredPruneMethod, n_m_pattern


@register
class Magnitude(MagnitudeInfo, UnstructuredPruneMethod):
    """Declared by `engine.catalog.prune_info`."""

    def apply(self, run: MethodRun) -> MethodOutcome:
        from engine.compression.prune import magnitude_prune  # on use: torch
        spec = run.spec
        run.reporter.progress(0, 1, "magnitude pruning", phase="pruning")
        return MethodOutcome(masks=magnitude_prune(run.model, spec.sparsity, spec.scope,
                                                   n_m_pattern(spec)))

    def expected_layer_sparsity(self, module: Any, spec) -> float:
        """N:M: (M - N) / M; per layer: exactly int(s * n) of n weights; global: no floor."""
        if spec.n_m:
            return super().expected_layer_sparsity(module, spec)
        if spec.scope == "layer":
            from engine.formats.architecture import weight_out_in  # on use: torch
            out_dim, in_dim = weight_out_in(module).shape
            return int(spec.sparsity * out_dim * in_dim) / (out_dim * in_dim)
        return 0.0
