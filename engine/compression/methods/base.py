"""What a compression method is: the one place that describes a method to the rest of compfair.

A `CompressionMethod` owns everything method-specific: its name and the job kind whose spec
names it, whether it needs calibration text, its checks of the spec (at construction, raising
`SpecError`) and of the loaded model (at job time, raising `JobFailed`), the compression itself
(`apply`), and the record of what it achieved (`record`, a `SparsityRecord`, checking the
method's post-condition). `PruneMethod` adds what the `prune` kind asks of its methods (N:M
support, global scope). The runner, `specs`, the bench, the CLI and the TUI ask the registry
(`get_method`) and never branch on a method's name. A new method, or a new compression job
kind (e.g. `quantize`), is one module defining a subclass and registering it.

This module imports neither torch nor any other engine module at import time: `engine.specs`
validates specs with it and the TUI lists its names. Methods import their heavy parts inside
the methods that need them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Protocol

if TYPE_CHECKING:                     # pragma: no cover - types only
    from engine.compression.records import SparsityRecord
    from engine.specs import PruneSpec

log = logging.getLogger(__name__)

# how a message names the methods of a job kind ("pruning method 'x' is unknown")
KIND_NOUNS = {"prune": "pruning", "quantize": "quantization"}


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


class CompressionMethod:
    """Base class of compression methods; subclasses set the class attributes and implement
    `apply` and `record`."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""                       # the job kind whose spec names this method
    title: ClassVar[str] = ""
    needs_calibration_text: ClassVar[bool] = False

    # -- spec (construction time) --------------------------------------------------------------
    def validate_spec(self, spec: Any) -> None:
        """Method-specific checks of a spec (raise `SpecError`); the default has none."""

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

    def name_suffix(self, spec: Any) -> str:
        """The end of a derived model's default name (`<parent>-<method>-<suffix>`)."""
        return ""


class PruneMethod(CompressionMethod):
    """A method of the `prune` job kind (`PruneSpec.method`).

    `supports_n_m`: the method can produce N:M semi-structured sparsity (`spec.n_m`).
    `supports_global_scope`: `scope="global"` means something for it; when it does not,
    `global_scope_reason` says why (the start of the one-line job failure)."""

    kind: ClassVar[str] = "prune"
    supports_n_m: ClassVar[bool] = False
    supports_global_scope: ClassVar[bool] = True
    global_scope_reason: ClassVar[str] = ""

    def validate_spec(self, spec: "PruneSpec") -> None:
        from engine.specs import SpecError, parse_n_m
        if spec.n_m is not None:
            if not self.supports_n_m:
                able = " or ".join(m.name for m in methods(self.kind) if getattr(m, "supports_n_m", False))
                raise SpecError(f"N:M sparsity applies to {able}, not {self.name!r}", "n_m")
            parse_n_m(spec.n_m)

    def check_model(self, spec: "PruneSpec", model: Any, model_name: str) -> None:
        """Scope, architecture and N:M divisibility, in that order (the first problem is the
        job's one-line failure)."""
        from engine.errors import UnsupportedArchitecture
        from engine.errors import JobFailed
        from engine.specs import parse_n_m
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
            from engine.compression.prune import n_m_problems
            _, m = parse_n_m(spec.n_m)
            bad = n_m_problems(model, m)
            if bad:
                raise JobFailed(f"N:M {spec.n_m} needs input widths divisible by {m}; "
                                f"{bad[0]} is not")

    def check_architecture(self, spec: "PruneSpec", model: Any) -> None:
        """Raise `UnsupportedArchitecture` or `ValueError` (one line) when the model's layout
        does not allow the request; the default needs the block linear layers."""
        from engine.compression.arch import block_linears
        block_linears(model)

    def name_suffix(self, spec: "PruneSpec") -> str:
        return spec.n_m.replace(":", "of") if spec.n_m else f"{spec.sparsity:g}"


# -- the registry -----------------------------------------------------------------------------
_REGISTRY: dict[tuple[str, str], CompressionMethod] = {}


def register(method: CompressionMethod | type[CompressionMethod]):
    """Add a method (an instance or a class, usable as a decorator) to the registry."""
    instance = method() if isinstance(method, type) else method
    if not instance.name or not instance.kind:
        raise ValueError("a compression method needs a name and a job kind")
    _REGISTRY[(instance.kind, instance.name)] = instance
    return method


def methods(kind: str = "prune") -> tuple[CompressionMethod, ...]:
    """The registered methods of job kind `kind`, in registration order."""
    return tuple(m for (k, _), m in _REGISTRY.items() if k == kind)


def method_names(kind: str = "prune") -> tuple[str, ...]:
    return tuple(m.name for m in methods(kind))


def get_method(name: str, kind: str = "prune") -> CompressionMethod:
    """The registered method `name` of job kind `kind`; `SpecError` naming the known ones
    (field "method") otherwise."""
    try:
        return _REGISTRY[(kind, name)]
    except (KeyError, TypeError):
        from engine.specs import SpecError
        raise SpecError(f"{KIND_NOUNS.get(kind, kind)} method {name!r} is unknown; choose from "
                        f"{', '.join(method_names(kind))}", "method") from None

