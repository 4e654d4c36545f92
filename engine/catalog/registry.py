"""Layer 3 (catalog): `Registry[T]`, the one registry type of compfair's named things.

A registry maps a name to a registered object: the suites and compression methods (here,
instances named by their `name`), the job kinds' spec types (`engine.specs`), the job kinds'
runners (`engine.worker`) and the export formats that write folders (`engine.cli.interop`).
It is a read-only `Mapping` (`reg[name]`, `in`, `reg.get(name)` -> None when unknown) with
`register` (usable as a decorator), `unregister`, `lookup` (raising `SpecError` that names the
unknown value and the known ones), `entries`, `names`, and an optional plugin hook run before
lookups (extra entries from third-party modules). Registering again under a name replaces the entry in place (its position is kept):
this is how an implementation (layer 5) takes over its declaration (layer 3).

Imports nothing from engine but `engine.errors`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Iterator, TypeVar

from engine.errors import SpecError

T = TypeVar("T")


def _entry_name(entry: Any) -> str:
    return entry.name


class Registry(Mapping[str, T]):
    """Named entries of one kind. `what` is how an error message names a value ("suite",
    "pruning method"), `field` the spec field a `SpecError` is about, `key` gives an entry's
    name (default: its `name`), `instantiate`: a class given to `register` is instantiated
    (suites, methods) rather than kept (spec types), `check` validates an entry when
    registered (raising ValueError), `plugins` runs before every lookup (it loads once),
    `unhashable_unknown`: a name that cannot be a key (a list) is unknown too, not a
    TypeError."""

    def __init__(self, what: str, field: str, *, key: Callable[[Any], str] = _entry_name,
                 instantiate: bool = True, check: Callable[[Any], None] | None = None,
                 plugins: Callable[[], None] | None = None, unhashable_unknown: bool = False) -> None:
        self.what = what
        self.field = field
        self._key = key
        self._instantiate = instantiate
        self._lookup_errors: tuple[type[Exception], ...] = (KeyError, TypeError) if unhashable_unknown else (KeyError,)
        self._check = check
        self._plugins = plugins
        self._entries: dict[str, T] = {}

    def register(self, entry: Any, name: str | None = None) -> Any:
        """Add `entry` under `name` (default: its key, e.g. its `name`); usable as a decorator.
        A class is instantiated first when the registry holds instances. Returns what it was
        given."""
        instance = entry() if self._instantiate and isinstance(entry, type) else entry
        if self._check is not None:
            self._check(instance)
        self._entries[name if name is not None else self._key(instance)] = instance
        return entry

    def unregister(self, name: str) -> None:
        """Remove entry `name` (a plugin's, or a test's, when it is done); no error if absent."""
        self._entries.pop(name, None)

    def load_plugins(self) -> None:
        if self._plugins is not None:
            self._plugins()

    def lookup(self, name: str) -> T:
        """The entry `name`; `SpecError` naming the known ones (for `field`) otherwise."""
        self.load_plugins()
        try:
            return self._entries[name]
        except self._lookup_errors:
            raise SpecError(f"{self.what} {name!r} is unknown; choose from {', '.join(self.names())}",
                            self.field) from None

    def entries(self) -> tuple[T, ...]:
        """Every entry, in registration order."""
        self.load_plugins()
        return tuple(self._entries.values())

    def names(self) -> tuple[str, ...]:
        self.load_plugins()
        return tuple(self._entries)

    # -- Mapping: name -> entry, in registration order ------------------------------------------
    def __getitem__(self, name: str) -> T:
        self.load_plugins()
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        self.load_plugins()
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        self.load_plugins()
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._entries
        except TypeError:             # an unhashable value names nothing
            return False
