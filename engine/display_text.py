"""Text from the store, a model's config or a data file, made safe to show on a terminal: no
control characters (an escape sequence in a job label could retitle the user's terminal or
erase the screen). Pure functions; the terminal app reads its store through them
(`Store(home, display=True)`)."""

from __future__ import annotations

import re
from typing import Any

# C0 controls except tab and newline, DEL, and C1 controls (0x80-0x9f: 0x9b is a one-byte CSI)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
REPLACEMENT = "\ufffd"


def printable(text: str) -> str:
    """`text` with every control character but tab and newline replaced by U+FFFD (so an
    escape sequence shows as visible text, never acts)."""
    return _CONTROL.sub(REPLACEMENT, text) if _CONTROL.search(text) else text


def printable_tree(value: Any) -> Any:
    """`printable` applied to every string in a JSON-like value (dicts, lists, keys too)."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, list):
        return [printable_tree(v) for v in value]
    if isinstance(value, dict):
        return {printable_tree(k) if isinstance(k, str) else k: printable_tree(v) for k, v in value.items()}
    return value


# a control character written as a JSON escape (json.dumps writes ESC as \u001b): it would come
# back as a real ESC once the JSON is decoded
_JSON_CONTROL = re.compile(r"\\u00(?:0[0-8b-fB-F]|1[0-9a-fA-F]|7[fF]|[89][0-9a-fA-F])")


def text_factory(raw: bytes) -> str:
    """A sqlite3 text_factory: TEXT values decoded and made printable, control characters
    written as JSON escapes (the specs, settings and summaries stored as JSON) included."""
    text = printable(raw.decode("utf-8", "replace"))
    return _JSON_CONTROL.sub(r"\\ufffd", text) if "\\u00" in text else text
