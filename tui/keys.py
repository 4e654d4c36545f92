"""Keys that type: a binding whose every key is a printable character (`r`, `?`, `space`) never
fires while a text field has the focus (the field takes the character), so it is also hidden
from the footer there: the footer shows only keys that work where the focus is."""

from __future__ import annotations

from typing import Iterable

from textual.actions import parse
from textual.app import App
from textual.binding import Binding
from textual.keys import key_to_character
from textual.widgets import Input, TextArea

# key names textual does not map to a character but that an Input types all the same
_NAMED_PRINTABLE = frozenset({"slash", "plus", "minus", "full_stop", "comma", "space"})


def is_typed(key: str) -> bool:
    """Whether a text field would take `key` as a typed character."""
    if len(key) == 1 or key in _NAMED_PRINTABLE:
        return True
    char = key_to_character(key)
    return char is not None and len(char) == 1 and char.isprintable()


def typing(app: App) -> bool:
    """Whether a text field has the focus."""
    return isinstance(app.focused, (Input, TextArea))


def _matches(binding: Binding, action: str, parameters: tuple[object, ...]) -> bool:
    try:
        _, name, params = parse(binding.action)
    except Exception:  # noqa: BLE001 - an unparsable action string: not ours to judge
        return False
    return name == action and tuple(params) == tuple(parameters)


def only_typed(bindings: Iterable[Binding | tuple], action: str,
               parameters: tuple[object, ...]) -> bool:
    """Whether every key bound to `action(*parameters)` is a typed character."""
    keys = [key.strip() for b in bindings if isinstance(b, Binding) and _matches(b, action, parameters)
            for key in b.key.split(",")]
    return bool(keys) and all(is_typed(k) for k in keys)


class TypingAware:
    """Mixin for screens: their single-character bindings are off while a text field is
    focused (and so absent from the footer)."""

    BINDINGS: list

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if typing(self.app) and only_typed(self.BINDINGS, action, parameters):  # type: ignore[attr-defined]
            return False
        return True
