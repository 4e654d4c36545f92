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
