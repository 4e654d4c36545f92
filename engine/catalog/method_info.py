"""Layer 3 (catalog): what a compression method is, declared: `MethodInfo` (its name, the job
kind whose spec names it, whether it needs calibration text, its checks of the spec at
construction, the end of a derived model's default name) and `PruneMethodInfo` (what the
`prune` kind asks of its methods: N:M support, global scope), with the method registry
(`get_method_info`, `method_names`, ...), one `Registry` per job kind.

The built-in methods are declared in `prune_info` and `quantize_info`; their implementations
(`engine.compression.methods`, layer 5: the compression itself and its record) subclass the
declarations and register under the same names, replacing them. Specs, the CLI and the TUI
read the declarations without importing the compression code.

Imports nothing from engine but `engine.errors` and the catalog; no torch."""

from __future__ import annotations

from typing import Any, ClassVar

from engine.catalog.registry import Registry
from engine.errors import SpecError

# how a message names the methods of a job kind ("pruning method 'x' is unknown")
KIND_NOUNS = {"prune": "pruning", "quantize": "quantization"}


class MethodInfo:
    """The declarative part of a compression method; subclasses set the class attributes. The
    implementation (`engine.compression.methods.CompressionMethod`) adds the compression."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""                       # the job kind whose spec names this method
    title: ClassVar[str] = ""
    needs_calibration_text: ClassVar[bool] = False
    # the spec fields of its kind that this method reads and some other method does not (the
    # new-job form shows a method's own and hides the other methods', left at their defaults)
    fields: ClassVar[tuple[str, ...]] = ()

    def spec_fields(self) -> tuple[str, ...]:
        """`fields`, with those a kind derives from the method's other declarations."""
        return self.fields

    def validate_spec(self, spec: Any) -> None:
        """Method-specific checks of a spec (raise `SpecError`); the default has none."""

    def name_suffix(self, spec: Any) -> str:
        """The end of a derived model's default name (`<parent>-<method>-<suffix>`)."""
        return ""


def parse_n_m(text: str) -> tuple[int, int]:
    """'2:4' -> (2, 4): keep N weights out of every M consecutive ones."""
    try:
        n_text, m_text = text.split(":")
        n, m = int(n_text), int(m_text)
    except ValueError:
        raise SpecError(f"N:M pattern {text!r} is not of the form N:M (e.g. 2:4)", "n_m") from None
    if not 0 < n < m <= 64:
        raise SpecError(f"N:M pattern {text!r} needs 0 < N < M <= 64", "n_m")
    return n, m


class PruneMethodInfo(MethodInfo):
    """A method of the `prune` job kind (`PruneSpec.method`).

    `supports_n_m`: the method can produce N:M semi-structured sparsity (`spec.n_m`).
    `supports_global_scope`: `scope="global"` means something for it; when it does not,
    `global_scope_reason` says why (the start of the one-line job failure)."""

    kind: ClassVar[str] = "prune"
    supports_n_m: ClassVar[bool] = False
    supports_global_scope: ClassVar[bool] = True
    global_scope_reason: ClassVar[str] = ""

    def spec_fields(self) -> tuple[str, ...]:
        return (self.fields + (("scope",) if self.supports_global_scope else ())
                + (("n_m",) if self.supports_n_m else ()))

    def validate_spec(self, spec: Any) -> None:
        if spec.n_m is not None:
            if not self.supports_n_m:
                able = " or ".join(m.name for m in methods(self.kind) if getattr(m, "supports_n_m", False))
                raise SpecError(f"N:M sparsity applies to {able}, not {self.name!r}", "n_m")
            parse_n_m(spec.n_m)

    def name_suffix(self, spec: Any) -> str:
        return spec.n_m.replace(":", "of") if spec.n_m else f"{spec.sparsity:g}"


# -- the registry -----------------------------------------------------------------------------
_REGISTRIES: dict[str, Registry[MethodInfo]] = {}


def _registry(kind: str) -> Registry[MethodInfo]:
    if kind not in _REGISTRIES:
        _REGISTRIES[kind] = Registry(f"{KIND_NOUNS.get(kind, kind)} method", "method",
                                     unhashable_unknown=True)
    return _REGISTRIES[kind]


def register(method: MethodInfo | type[MethodInfo]) -> Any:
    """Add a method (an instance or a class, usable as a decorator) to the registry of its job
    kind; one registered under the name of another (an implementation under its declaration's)
    replaces it."""
    instance = method() if isinstance(method, type) else method
    if not instance.name or not instance.kind:
        raise ValueError("a compression method needs a name and a job kind")
    _registry(instance.kind).register(instance)
    return method


def methods(kind: str = "prune") -> tuple[MethodInfo, ...]:
    """The registered methods of job kind `kind`, in registration order."""
    registry = _REGISTRIES.get(kind)
    return registry.entries() if registry is not None else ()


def method_names(kind: str = "prune") -> tuple[str, ...]:
    return tuple(m.name for m in methods(kind))


def method_fields(kind: str, name: str) -> frozenset[str]:
    """The method-specific spec fields method `name` of `kind` reads (every method-specific
    field of the kind for an unknown name: nothing is hidden for it)."""
    try:
        return frozenset(get_method_info(name, kind).spec_fields())
    except SpecError:
        return method_specific_fields(kind)


def method_specific_fields(kind: str) -> frozenset[str]:
    """The spec fields of `kind` that some of its methods read (the others are common)."""
    return frozenset(f for m in methods(kind) for f in m.spec_fields())


def get_method_info(name: str, kind: str = "prune") -> MethodInfo:
    """The registered method `name` of job kind `kind` (the implementation once
    `engine.compression.methods` is imported, else the declaration); `SpecError` naming the
    known ones (field "method") otherwise."""
    return _registry(kind).lookup(name)
