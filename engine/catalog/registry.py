"""Layer 3 (catalog): `Registry[T]`, the one registry type of compfair's named things.

A registry maps a name to a registered object (a suite, a compression method): `register`
(an instance or a class, usable as a decorator; a class is instantiated), `unregister`, `get`
(raising `SpecError` that names the unknown value and the known ones), `names`, `items`, and an
optional plugin hook run once before the first lookup (extra entries from third-party
modules). Registering again under a name replaces the entry in place (its position is kept):
this is how an implementation (layer 5) takes over its declaration (layer 3).

Imports nothing from engine but `engine.errors`."""

from __future__ import annotations

from typing import Any, Callable, Generic, Iterator, TypeVar

from engine.errors import SpecError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind. `what` is how an error message names a value ("suite",
    "pruning method"), `field` the spec field a `SpecError` is about, `check` validates an
    entry when registered (raising ValueError), `plugins` runs before every lookup (it loads
    once), `unhashable_unknown`: a name that cannot be a key (a list) is unknown too, not a
    TypeError."""

    def __init__(self, what: str, field: str, *, check: Callable[[Any], None] | None = None,
                 plugins: Callable[[], None] | None = None, unhashable_unknown: bool = False) -> None:
        self.what = what
        self._lookup_errors: tuple[type[Exception], ...] = (KeyError, TypeError) if unhashable_unknown else (KeyError,)
        self.field = field
        self._check = check
        self._plugins = plugins
        self._entries: dict[str, T] = {}

    def register(self, entry: Any) -> Any:
        """Add `entry` (an instance, or a class to instantiate; usable as a decorator) under its
        `name`; returns what it was given."""
        instance = entry() if isinstance(entry, type) else entry
        if self._check is not None:
            self._check(instance)
        self._entries[instance.name] = instance
        return entry

    def unregister(self, name: str) -> None:
        """Remove entry `name` (a plugin's, or a test's, when it is done); no error if absent."""
        self._entries.pop(name, None)

    def load_plugins(self) -> None:
        if self._plugins is not None:
            self._plugins()

    def get(self, name: str) -> T:
        """The entry `name`; `SpecError` naming the known ones (for `field`) otherwise."""
        self.load_plugins()
        try:
            return self._entries[name]
        except self._lookup_errors:
            raise SpecError(f"{self.what} {name!r} is unknown; choose from {', '.join(self.names())}",
                            self.field) from None

    def items(self) -> tuple[T, ...]:
        """Every entry, in registration order."""
        self.load_plugins()
        return tuple(self._entries.values())

    def names(self) -> tuple[str, ...]:
        return tuple(entry.name for entry in self.items())  # type: ignore[attr-defined]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[T]:
        return iter(self.items())
