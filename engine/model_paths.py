"""Model paths in the registry relative to the home they live in, so that a copied or moved
home loads its own models, not the original's.

Written (`Store.upsert_model`): a path inside the home is stored relative to it
(`models/gpt2-wanda-50`); any other path stays absolute. Read (`Store.model`, `models`,
`model_by_source`): a relative path is joined to the home's root. A row written before this
(an absolute path into another copy of the home) that does not exist here is looked up under
this home's `models/` or `cache/` folder by the part of the path after that folder."""

from __future__ import annotations

import re
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


# an absolute path in free text (a job's log line, a spec's model): up to whitespace or a quote
_ABSOLUTE = re.compile(r"(?<![\w.~])/[^\s'\"]*[^\s'\".,;:)]")


def _other_home(prefix: Path) -> bool:
    return (prefix / "compfair.db").exists()


def here(path: str, root: Path) -> str:
    """`path` as this home sees it: a path into another copy of this home (its part from the
    innermost `models/` or `cache/` folder on exists here, and the path's own home is gone or
    is another compfair home) becomes that part under `root`; anything else is unchanged. A
    copied home's job log and Model tab then name the files this home reads."""
    candidate = Path(path)
    if not candidate.is_absolute():
        return path
    parts = candidate.parts
    for i in range(len(parts) - 1, 0, -1):
        if parts[i] not in HOME_FOLDERS or i + 1 >= len(parts):
            continue
        prefix = Path(*parts[:i])
        if prefix == root or prefix == root.resolve() or (candidate.exists() and not _other_home(prefix)):
            return path
        moved = root.joinpath(*parts[i:])
        return str(moved) if moved.exists() else path
    return path


def for_display(text: str | None, root: Path) -> str | None:
    """Every absolute path in `text` resolved against the home at `root` (`here`)."""
    if not text or "/" not in text:
        return text
    return _ABSOLUTE.sub(lambda m: here(m.group(0), root), text)
