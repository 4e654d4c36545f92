"""The compression record of a model: what a compression job achieved, as stored in
`models.sparsity`.

Every method writes one `SparsityRecord`: the overall share removed, the unit it counts
(weights of the block linear layers, attention heads, ...), the share asked for, a per-layer
share, and method-specific extras (scope, N:M pattern, head layout, parameter counts). It is
turned into JSON only at the store boundary (`to_dict`, which `Store.upsert_model` serialises);
readers go through `from_json`, which accepts every shape stored so far: the full record of the
unstructured and head-pruning methods, a bare number (older rows and the TUI demo), or nothing.

This module imports neither torch nor numpy: the TUI reads it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from numbers import Number
from typing import Any, Mapping

# keys an older record may carry its overall share under, most specific first
_OVERALL_KEYS = ("overall", "global", "total", "sparsity")
_CORE_KEYS = ("overall", "unit", "requested", "layers")


@dataclass(frozen=True)
class SparsityRecord:
    """What a compression method removed from a model.

    `overall`: the share removed, in `unit`s (0.5 = half). `requested`: the share the spec
    asked for (the N:M share for N:M sparsity; None when unknown). `layers`: {layer name: share
    removed there}. `extras`: method-specific fields, stored beside the core ones (e.g.
    `scope`, `n_m`, `n_zero`, `n_weights` for unstructured pruning; `removed`, `importance`,
    `layout`, `heads_before`, `heads_after`, `params_before`, `params_after`,
    `param_reduction` for head pruning)."""

    overall: float
    unit: str = ""
    requested: float | None = None
    layers: Mapping[str, float] = field(default_factory=dict)
    extras: Mapping[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        """A core field or an extra by its stored key."""
        if key in _CORE_KEYS:
            return getattr(self, key)
        return self.extras.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        """The stored form: the extras and the core fields in one flat mapping."""
        return {**self.extras, "overall": self.overall, "unit": self.unit,
                "requested": self.requested, "layers": dict(self.layers)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SparsityRecord | None":
        """A record from a stored mapping; None when it holds no overall share."""
        overall = next((float(data[k]) for k in _OVERALL_KEYS
                        if isinstance(data.get(k), Number) and not isinstance(data.get(k), bool)),
                       None)
        if overall is None:
            return None
        requested = data.get("requested")
        layers = data.get("layers")
        return cls(overall=overall, unit=str(data.get("unit") or ""),
                   requested=float(requested) if isinstance(requested, Number) else None,
                   layers=dict(layers) if isinstance(layers, Mapping) else {},
                   extras={k: v for k, v in data.items() if k not in _CORE_KEYS})

    @classmethod
    def from_json(cls, value: str | bytes | Mapping[str, Any] | float | None) -> "SparsityRecord | None":
        """A record from `models.sparsity` as stored (JSON text) or already decoded (a mapping
        or a bare number); None when there is none or it cannot be read."""
        if isinstance(value, (str, bytes)):
            try:
                value = json.loads(value) if value.strip() else None
            except ValueError:
                return None
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, Number):
            return cls(overall=float(value))
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        return None
