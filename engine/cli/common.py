"""What the command modules share: the usage error, opening the store, a job's one-line title."""

from __future__ import annotations

import argparse

from engine.errors import UserError
from engine.paths import Home
from engine.store import Store
from engine.specs import spec_from_dict


def open_store(args: argparse.Namespace, *, write: bool = False) -> Store:
    """The store of `--home` (or the default home). `write`: the command will write to it,
    so a store made by a newer compfair is refused here (engine.migrations.NewerStore, exit 2)
    before any work is done."""
    store = Store(Home.resolve(args.home))
    if write and store.newer is not None:
        store.close()
        raise store.newer
    return store


def spec_title(spec: dict) -> str:
    """What a job does, in a few words, from its spec dict (the spec's own `title`)."""
    try:
        return spec_from_dict(spec).title()
    except Exception:  # noqa: BLE001 - a stored spec this version cannot read: no title
        return ""
