"""What the command modules share: the usage error, opening the store, a job's one-line title."""

from __future__ import annotations

import argparse

from engine.errors import UserError
from engine.paths import Home
from engine.store import Store


class UsageError(UserError):
    """A command-line slip (a malformed option value, an id that names nothing): exit code 2."""


def open_store(args: argparse.Namespace) -> Store:
    """The store of `--home` (or the default home)."""
    return Store(Home.resolve(args.home))


def spec_title(spec: dict) -> str:
    """What a job does, in a few words, from its spec dict (for listings)."""
    if spec.get("kind") == "eval":
        return f"{spec['model']} on {spec['suite']}"
    if spec.get("kind") == "distill":
        student = spec.get("student") or f"{spec['intensity']:.0%} depth"
        return f"{spec['teacher']} -> {student}" + ("" if spec.get("distill", True) else " (CE baseline)")
    if spec.get("kind") == "prune":
        amount = spec.get("n_m") or f"{spec['sparsity']:.0%}"
        return f"{spec['model']} {spec['method']} {amount}"
    return ""
