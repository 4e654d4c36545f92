"""Depth pruning (`layers`): remove whole transformer blocks, the n of lowest Block Influence on
calibration text (ShortGPT, Men et al., 2024; `engine.compression.depth`). `sparsity` is the
share of blocks removed: n = round(sparsity * blocks), at least 1 and never all. The blocks are
physically removed (the config's layer count drops), so the model gets smaller and faster; the
record keeps every block's BI, the removed and the kept indices. No N:M, no global scope."""

from __future__ import annotations

from typing import Any

from engine.catalog.prune_info import LayersInfo
from engine.compression.methods.base import MethodOutcome, MethodRun, ParamCounts, PruneMethod, register
from engine.compression.records import SparsityRecord
from engine.errors import JobFailed


@register
class Layers(LayersInfo, PruneMethod):
    """Declared by `engine.catalog.prune_info`."""

    def check_architecture(self, spec, model: Any) -> None:
        from engine.formats.architecture import block_list, num_layers  # on use: torch
        from engine.compression.depth import blocks_to_remove  # on use: torch
        block_list(model)
        blocks_to_remove(num_layers(model), spec.sparsity)     # ValueError for a 1-block model

    def apply(self, run: MethodRun) -> MethodOutcome:
        from engine.formats.architecture import num_layers  # on use: torch
        from engine.compression.depth import block_influence, blocks_to_remove, least_influential  # on use: torch
        from engine.compression.students import keep_layers  # on use: torch
        reporter, spec = run.reporter, run.spec

        def on_batch(done: int, total: int) -> None:
            reporter.check_cancelled()
            reporter.progress(done, total, f"block influence: {done}/{total} samples", phase="importance")

        n_blocks = num_layers(run.model)
        influence = block_influence(run.model, run.calibration, run.device, on_batch=on_batch)
        removed = least_influential(influence, blocks_to_remove(n_blocks, spec.sparsity))
        kept = tuple(i for i in range(n_blocks) if i not in removed)
        keep_layers(run.model, kept)
        reporter.log(f"removed blocks {list(removed)} of {n_blocks} (lowest block influence)")
        return MethodOutcome(details={"block_influence": [round(b, 6) for b in influence],
                                      "removed": list(removed), "kept": list(kept),
                                      "blocks_before": n_blocks, "blocks_after": len(kept)})

    def record(self, model: Any, spec, outcome: MethodOutcome, params: ParamCounts):
        """Blocks removed (share, per block 1.0 / 0.0), every block's BI and the parameters
        that went; `JobFailed` when the model did not get shallower or smaller."""
        from engine.formats.architecture import num_layers  # on use: torch
        details = outcome.details
        if num_layers(model) != details["blocks_after"] or params.after >= params.before:
            raise JobFailed(f"depth pruning left {num_layers(model)} blocks and "
                            f"{params.after:,} of {params.before:,} parameters")
        removed = set(details["removed"])
        return SparsityRecord(
            overall=len(removed) / details["blocks_before"], unit="transformer blocks",
            requested=spec.sparsity,
            layers={str(i): 1.0 if i in removed else 0.0 for i in range(details["blocks_before"])},
            extras={**details, "params_before": params.before, "params_after": params.after,
                    "param_reduction": 1 - params.after / params.before})
