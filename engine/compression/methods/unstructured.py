"""What unstructured pruning methods share: weights of the block linear layers are zeroed in
place (the shapes stay), the keep masks are held fixed by a recovery fine-tune, and every layer
must reach the share of zeros the method promises (`expected_layer_sparsity`).

A new unstructured method (e.g. SparseGPT) subclasses `UnstructuredPruneMethod` and implements
`apply` and `expected_layer_sparsity`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.catalog.method_info import parse_n_m
from engine.catalog.prune_info import UnstructuredPruneInfo
from engine.compression.methods.base import MethodOutcome, ParamCounts, PruneMethod
from engine.compression.records import SparsityRecord
from engine.errors import JobFailed

if TYPE_CHECKING:                     # pragma: no cover - types only
    from engine.compression.records import SparsityRecord
    from engine.specs import PruneSpec

UNIT = "weights of block linear layers"


class UnstructuredPruneMethod(UnstructuredPruneInfo, PruneMethod):
    """Zeroes individual weights of the block linear layers (free sparsity or N:M)."""

    def expected_layer_sparsity(self, module: Any, spec: "PruneSpec") -> float:
        """The share of zeros a layer must reach at least (exact unless it had zeros before);
        N:M gives exactly (M - N) / M in every layer."""
        pattern = n_m_pattern(spec)
        if pattern is None:
            return 0.0
        n, m = pattern
        return (m - n) / m

    def record(self, model: Any, spec: "PruneSpec", outcome: MethodOutcome,
               params: ParamCounts) -> "SparsityRecord":
        """The achieved sparsity per layer and overall; `JobFailed` when a layer is short of
        its target."""
        from engine.formats.architecture import block_linears  # on use: torch
        from engine.compression.prune import check_sparsity  # on use: torch
        achieved = check_sparsity(model)
        linears = block_linears(model)
        short = [n for n, s in achieved["layers"].items()
                 if s + 1e-9 < self.expected_layer_sparsity(linears[n], spec)]
        if short:
            raise JobFailed(f"pruning missed its target on {short[0]} "
                            f"({achieved['layers'][short[0]]:.4f})")
        return SparsityRecord(
            overall=achieved["overall"], unit=UNIT, requested=spec.effective_sparsity,
            layers=achieved["layers"],
            extras={"n_zero": achieved["n_zero"], "n_weights": achieved["n_weights"],
                    "scope": spec.scope, "n_m": spec.n_m})


def n_m_pattern(spec: "PruneSpec") -> tuple[int, int] | None:
    """(N, M) of the spec's N:M pattern, or None for a free sparsity."""
    return parse_n_m(spec.n_m) if spec.n_m else None
