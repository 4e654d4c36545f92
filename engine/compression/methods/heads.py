"""Structured attention-head pruning: score heads by importance on calibration text, remove
that share of them (per layer or globally) and cut the projections, so the model really gets
smaller. The computation is `engine.formats.head_pruned`."""

from __future__ import annotations

from typing import Any

from engine.catalog.prune_info import HeadsInfo
from engine.compression.methods.base import MethodOutcome, MethodRun, ParamCounts, PruneMethod, register
from engine.compression.records import SparsityRecord
from engine.errors import JobFailed


@register
class Heads(HeadsInfo, PruneMethod):
    """Declared by `engine.catalog.prune_info`."""

    def check_architecture(self, spec, model: Any) -> None:
        from engine.formats import head_pruned as head_pruning  # on use: torch
        layers = head_pruning.attention_layers(model)
        head_pruning.validate_plan_inputs(layers, spec.sparsity, spec.scope)

    def apply(self, run: MethodRun) -> MethodOutcome:
        from engine.formats import head_pruned as head_pruning  # on use: torch
        reporter, spec = run.reporter, run.spec

        def on_batch(done: int, total: int) -> None:
            reporter.check_cancelled()
            reporter.progress(done, total, f"head importance: {done}/{total} samples", phase="importance")

        layers = head_pruning.attention_layers(run.model)
        importance = head_pruning.head_importance(run.model, run.calibration, run.device,
                                                  on_batch=on_batch)
        planner = head_pruning.plan_global if spec.scope == "global" else head_pruning.plan_layerwise
        plan = planner(layers, importance, spec.sparsity)
        layout = head_pruning.apply_plan(run.model, plan)
        heads_before = sum(a.n_heads for a in layers)
        heads_after = sum(n for n, _ in layout)
        return MethodOutcome(details={
            "layers": {str(a.layer): len(plan[a.layer].removed) / a.n_heads for a in layers},
            "removed": {str(a.layer): plan[a.layer].removed for a in layers},
            "importance": {str(a.layer): [round(float(x), 5) for x in imp]
                           for a, imp in zip(layers, importance)},
            "layout": layout, "heads_before": heads_before, "heads_after": heads_after,
            "overall": 1 - heads_after / heads_before})

    def record(self, model: Any, spec, outcome: MethodOutcome, params: ParamCounts):
        """Heads removed per layer and overall, and the parameters that went with them;
        `JobFailed` when no parameter was removed although some sparsity was asked for."""
        details = outcome.details
        if params.after >= params.before and spec.sparsity > 0:
            raise JobFailed("head pruning removed no parameters")
        extras = {k: details[k] for k in ("removed", "importance", "layout", "heads_before", "heads_after")}
        return SparsityRecord(
            overall=details["overall"], unit="attention heads", requested=spec.sparsity,
            layers=details["layers"],
            extras={**extras, "params_before": params.before, "params_after": params.after,
                    "param_reduction": 1 - params.after / params.before})
