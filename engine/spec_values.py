"""How raw settings (JSON, CLI text, TOML) become spec field values: conversion to a field's
declared type, and field aliases (another name for a setting in a suite's own words). Used by
`engine.specs.spec_from_dict`; pure apart from raising SpecError."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

from engine.errors import SpecError


@dataclass(frozen=True)
class FieldAlias:
    """Another name for a setting, in the words of the suite it serves (`task` for an lm-eval
    run's `data`): accepted only with the settings in `requires`, never beside the field."""

    field: str
    requires: tuple[tuple[str, str], ...] = ()

    def resolve(self, name: str, data: dict[str, Any], spec_cls: type) -> None:
        """Move `data[name]` to `data[self.field]` (SpecError when it does not apply; a
        required setting left out has `spec_cls`'s default)."""
        if self.field in data:
            raise SpecError(f"give {name} or {self.field}, not both ({name} {data[name]!r} is "
                            f"stored as {self.field})", name)
        for key, wanted in self.requires:
            given = data.get(key, getattr(spec_cls, key, None))
            if given != wanted:
                raise SpecError(f"{name} {data[name]!r} needs {key} {wanted!r}, got {given!r}", name)
        data[self.field] = data.pop(name)


def coerce_value(name: str, annotation: Any, value: Any) -> Any:
    """Convert a JSON/CLI/TOML value to the field's declared type, or raise SpecError."""
    if value is None:
        return None
    origin = get_origin(annotation)
    args = [a for a in get_args(annotation) if a is not type(None)]
    if origin is Union or (origin is not None and type(None) in get_args(annotation)):
        return coerce_value(name, args[0], value) if args else value
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"{name} must be a list, got {value!r}", name)
        return tuple(coerce_value(name, args[0], v) for v in value)
    try:
        if annotation is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if annotation is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if annotation is float:
            result = float(value)
            if not math.isfinite(result):
                raise ValueError
            return result
        if annotation is str:
            return str(value)
    except (TypeError, ValueError):
        raise SpecError(f"{name} must be {annotation.__name__}, got {value!r}", name) from None
    return value


# -- the documented range of every numeric spec field -------------------------------------------
SQLITE_MAX = 2**63 - 1          # SQLite's largest INTEGER (ids, and anything stored as a number)


@dataclass(frozen=True)
class NumberRange:
    """The values a numeric field accepts: `lo` to `hi`, each end open or closed."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def text(self) -> str:
        """`[1, 10,000]`, `(0, 1]`: the range as the messages and `--help` write it."""
        def num(v: float) -> str:
            return f"{v:,}" if isinstance(v, int) and abs(v) >= 10_000 else str(v)
        return f"{'(' if self.lo_open else '['}{num(self.lo)}, {num(self.hi)}{')' if self.hi_open else ']'}"


# Every numeric field of every spec kind, by name (a name means the same thing in every kind).
# The spec checks each value against it when built (engine.specs), and so does the one
# validation entry (engine.validation.validate); `compfair submit --help` prints them. Fields
# with a narrower rule of their own (stride <= context_length, warmup_steps < steps, a method's
# bits) are checked by it as well.
FIELD_RANGES: dict[str, NumberRange] = {
    # 32 bits: numpy's legacy seeding (lm-eval's numpy_random_seed) takes no more, and a
    # distillation's per-epoch torch seed (seed * 7919 + epoch) stays inside torch's 64 bits
    "seed": NumberRange(0, 2**32 - 1),
    # evaluation
    "samples_per_prompt": NumberRange(1, 10_000),
    "top_p": NumberRange(0.0, 1.0, lo_open=True),
    "temperature": NumberRange(0.0, 100.0, lo_open=True),
    "max_new_tokens": NumberRange(1, 4096),
    "max_prompts": NumberRange(1, 10_000_000),
    "batch_size": NumberRange(1, 65_536),
    "prompts_per_group": NumberRange(1, 10_000_000),
    "context_length": NumberRange(8, 1_048_576),
    "stride": NumberRange(1, 1_048_576),
    "bootstrap_samples": NumberRange(100, 1_000_000),
    "confidence": NumberRange(0.5, 1.0, lo_open=True, hi_open=True),
    # distillation
    "intensity": NumberRange(0.0, 1.0, lo_open=True, hi_open=True),
    "student_layers": NumberRange(0, 4095),
    "alpha_ce": NumberRange(0.0, 1000.0),
    "alpha_clm": NumberRange(0.0, 1000.0),
    "alpha_cos": NumberRange(0.0, 1000.0),
    "steps": NumberRange(1, 10_000_000),
    "grad_accum": NumberRange(1, 65_536),
    "seq_len": NumberRange(8, 8192),
    "learning_rate": NumberRange(0.0, 1.0, lo_open=True, hi_open=True),
    "warmup_steps": NumberRange(0, 10_000_000),
    "weight_decay": NumberRange(0.0, 10.0),
    "checkpoint_every": NumberRange(1, 10_000_000),
    "teacher_samples": NumberRange(1, 1_000_000),
    "processes": NumberRange(1, 64),
    # pruning and quantization
    "sparsity": NumberRange(0.0, 1.0, hi_open=True),
    "calibration_samples": NumberRange(1, 100_000),
    "calibration_seq_len": NumberRange(8, 8192),
    "recovery_steps": NumberRange(0, 10_000_000),
    "recovery_learning_rate": NumberRange(0.0, 1.0, lo_open=True, hi_open=True),
    "bits": NumberRange(1, 16),
    "group_size": NumberRange(1, 65_536),
}


def field_range(name: str) -> NumberRange | None:
    """The documented range of the numeric spec field `name` (None for other fields)."""
    return FIELD_RANGES.get(name)


def check_ranges(spec: Any) -> None:
    """Every numeric field of `spec` (and each number of a tuple field such as
    student_layers) inside its range in FIELD_RANGES; SpecError naming the field, the value
    and the range otherwise. None (a field left to its default behaviour) is not checked."""
    from dataclasses import fields
    for f in fields(spec):
        allowed = FIELD_RANGES.get(f.name)
        value = getattr(spec, f.name)
        if allowed is None or value is None:
            continue
        for item in (value if isinstance(value, tuple) else (value,)):
            if item not in allowed:
                raise SpecError(f"{f.name} must be in {allowed.text()}, got {item!r}", f.name)
