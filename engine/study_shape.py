"""The shape of a parsed study file, checked before its contents: which keys are strings,
which a table and which arrays of tables, so that `[eval]` written for `[[eval]]` or
`settings = "cpu"` is one line naming the key and what is accepted (not a Python error from
deep inside planning)."""

from __future__ import annotations

from typing import Any, Sequence

STRING_KEYS = ("name", "description", "teacher")


def shape_problem(data: dict[str, Any], block_keys: Sequence[str]) -> str | None:
    """What is wrong with the shape of `data`, in one line, or None. `settings` must be a table
    ([settings]); each of `block_keys` an array of tables ([[key]] blocks); the STRING_KEYS
    strings."""
    for key in STRING_KEYS:
        if key in data and not isinstance(data[key], str):
            return f"study key {key!r} must be a string, got {toml_kind(data[key])}"
    if "settings" in data and not isinstance(data["settings"], dict):
        return (f"study key 'settings' must be a table ([settings] followed by name = value "
                f"lines), got {toml_kind(data['settings'])}")
    for key in block_keys:
        value = data.get(key, [])
        if isinstance(value, dict):
            return (f"study section [{key}] must be written [[{key}]] (an array of tables, one "
                    "per block), not as a single table")
        if not isinstance(value, list) or not all(isinstance(b, dict) for b in value):
            return f"study key {key!r} must be an array of tables ([[{key}]] blocks), got {toml_kind(value)}"
    return None


def toml_kind(value: Any) -> str:
    """What a TOML value is, in the file format's own words."""
    if isinstance(value, list):
        kinds = sorted({toml_kind(v) for v in value})
        return "an array holding " + " and ".join(kinds) if kinds else "an empty array"
    return {dict: "a table", str: "a string", bool: "a boolean", int: "an integer",
            float: "a float"}.get(type(value), f"a {type(value).__name__}")
