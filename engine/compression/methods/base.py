"""Layer 5 (compression): what a compression method does. `CompressionMethod` is the
implementation base of methods: it adds to a method's declaration (`engine.catalog.MethodInfo`,
layer 3: name, job kind, calibration text, spec checks, name suffix) the checks of the loaded
model (at job time, raising `JobFailed`), the compression itself (`apply`), and the record of
what it achieved (`record`, a `SparsityRecord`, checking the method's post-condition).
`PruneMethod` adds what the `prune` kind asks of its methods at job time. The runner, `specs`,
the bench, the CLI and the TUI ask the registry (`get_method`) and never branch on a method's
name. A new method, or a new compression job kind, is a declaration and a module defining a
subclass and registering it.

The registry itself is the catalog's (`engine.catalog.method_info`): registering an
implementation replaces its declaration under the same name. This module imports no torch at
import time: methods import their heavy parts inside the methods that need them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Protocol

from engine.catalog.method_info import (KIND_NOUNS, MethodInfo, PruneMethodInfo, get_method_info,  # noqa: F401 - re-exported
                                        method_names, methods, parse_n_m, register)
from engine.errors import JobFailed, UnsupportedArchitecture

if TYPE_CHECKING:                     # pragma: no cover - types only
    from engine.compression.records import SparsityRecord
    from engine.specs import PruneSpec

log = logging.getLogger(__name__)


class Reporter(Protocol):
    """What a method may tell the job it runs in (a `JobContext`, or the bench's stand-in)."""

    def progress(self, done: float, total: float, message: str = "", *, force: bool = False,
                 **data: Any) -> None: ...

    def check_cancelled(self) -> None: ...

    def log(self, message: str, level: str = "info", **data: Any) -> None: ...


@dataclass(frozen=True)
class MethodRun:
    """What `apply` works on: the loaded model (changed in place), the job's spec, the device,
    the calibration token blocks (`[samples, seq_len]`, None unless the method or a recovery
    fine-tune needs text) and the job to report progress to."""

    reporter: Reporter
    model: Any
    spec: Any
    device: Any
    calibration: Any | None = None


@dataclass(frozen=True)
class MethodOutcome:
    """What `apply` did. `masks`: keep masks that a recovery fine-tune must hold fixed (None
    when the method changes shapes instead of zeroing weights); `details`: method-specific
    figures that `record` turns into the stored record."""

    masks: Any | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of the model before and after compression (recovery included)."""

    before: int
    after: int


class CompressionMethod(MethodInfo):
    """Base class of compression method implementations; subclasses (of a declaration, and of
    this) implement `apply` and `record`."""

    # -- job time ----------------------------------------------------------------------------
    def check_model(self, spec: Any, model: Any, model_name: str) -> None:
        """Checks on the loaded, uncompressed model before any compute (raise `JobFailed`)."""

    def apply(self, run: MethodRun) -> MethodOutcome:
        """Compress `run.model` in place."""
        raise NotImplementedError

    def record(self, model: Any, spec: Any, outcome: MethodOutcome,
               params: ParamCounts) -> "SparsityRecord":
        """What the method achieved, after checking its post-condition (raise `JobFailed`)."""
        raise NotImplementedError


class PruneMethod(PruneMethodInfo, CompressionMethod):
    """A method of the `prune` job kind (`PruneSpec.method`), declared by a `PruneMethodInfo`."""

    def check_model(self, spec: "PruneSpec", model: Any, model_name: str) -> None:
        """Scope, architecture and N:M divisibility, in that order (the first problem is the
        job's one-line failure)."""
        if spec.scope == "global" and not self.supports_global_scope:
            able = " and ".join(m.name for m in methods(self.kind)
                                if getattr(m, "supports_global_scope", False))
            raise JobFailed(f"{self.global_scope_reason}; scope=global applies to {able} only")
        if spec.n_m and spec.scope == "global":
            raise JobFailed(f"N:M sparsity {spec.n_m} is per group of weights; it has no global scope")
        try:
            self.check_architecture(spec, model)
        except (UnsupportedArchitecture, ValueError) as exc:
            raise JobFailed(f"{self.name} pruning of {model_name}: {exc}") from None
        if spec.n_m:
            from engine.compression.prune import n_m_problems  # on use: torch
            _, m = parse_n_m(spec.n_m)
            bad = n_m_problems(model, m)
            if bad:
                raise JobFailed(f"N:M {spec.n_m} needs input widths divisible by {m}; "
                                f"{bad[0]} is not")

    def check_architecture(self, spec: "PruneSpec", model: Any) -> None:
        """Raise `UnsupportedArchitecture` or `ValueError` (one line) when the model's layout
        does not allow the request; the default needs the block linear layers."""
        from engine.formats.architecture import block_linears  # on use: torch
        block_linears(model)


def get_method(name: str, kind: str = "prune") -> CompressionMethod:
    """The registered method `name` of job kind `kind`; `SpecError` naming the known ones
    (field "method") otherwise."""
    return get_method_info(name, kind)  # type: ignore[return-value]
