"""Model paths in the registry relative to the home they live in, so that a copied or moved
home loads its own models, not the original's.

Written (`Store.upsert_model`): a path inside the home is stored relative to it
(`models/gpt2-wanda-50`); any other path stays absolute. Read (`Store.model`, `models`,
`model_by_source`): a relative path is joined to the home's root. A row written before this
(an absolute path into another copy of the home) that does not exist here is looked up under
this home's `models/` or `cache/` folder by the part of the path after that folder."""

from __future__ import annotations

from pathlib import Path

HOME_FOLDERS = ("models", "cache")


def to_stored(path: str | None, root: Path) -> str | None:
    """`path` relative to `root` when inside it, else unchanged."""
    if not path:
        return path
    candidate = Path(path)
    if not candidate.is_absolute():
        return path
    try:
        return candidate.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path


def to_loadable(path: str | None, root: Path) -> str | None:
    """The absolute path to load a stored `path` from, in the home at `root`."""
    if not path:
        return path
    candidate = Path(path)
    if not candidate.is_absolute():
        return str(root / candidate)
    if candidate.exists():
        return path
    parts = candidate.parts
    for i in range(len(parts) - 1, 0, -1):   # the innermost models/ or cache/ folder first
        if parts[i] in HOME_FOLDERS:
            moved = root.joinpath(*parts[i:])
            if moved.exists():
                return str(moved)
    return path
