"""The one check before any command writes a file or folder the user named (`export -o`,
`card -o`, `report -o` / `study -o`, `score --output`): the path must not be one of the home's
own files, which an overwrite would destroy.

Refused (a `UserError`: exit 2, one line naming the path and why, nothing written):
- the store (`compfair.db`) and its `-wal`, `-shm` and `-journal` files, the disk reserve and
  `settings.toml`;
- anything inside the home's `logs/` (the worker and CLI logs in use) or `checkpoints/`
  folder, and any log file a worker row names;
- any file or folder of a registered model (the `models` table's paths: a model's folder, or
  its file), or anything inside such a folder, except what the caller allows (a model card
  written into its own model's folder as README.md).

Paths are compared after resolving symbolic links, and an existing target is also compared by
device and inode, so a hard link to the store is refused too. The registry is read through a
read-only connection: checking creates nothing and works on a store this version cannot write."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from engine.errors import ProtectedPath, UserError
from engine.model_paths import to_loadable
from engine.paths import Home, default_home

STORE_SIDECARS = ("-wal", "-shm", "-journal")


@dataclass
class _Protected:
    files: dict[Path, str] = field(default_factory=dict)     # path -> why
    trees: dict[Path, str] = field(default_factory=dict)     # folder -> why (it and inside)


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def _protected(home: Home) -> _Protected:
    out = _Protected()
    db = _resolved(home.db_path)
    out.files[db] = "it is the compfair store"
    for suffix in STORE_SIDECARS:
        out.files[db.with_name(db.name + suffix)] = f"it is the compfair store's {suffix[1:]} file"
    out.files[_resolved(home.reserve_path)] = "it is the home's disk reserve"
    out.files[_resolved(home.root / "settings.toml")] = "it is the home's settings file"
    out.trees[_resolved(home.logs_dir)] = "it is in the home's logs folder (logs in use)"
    out.trees[_resolved(home.checkpoints_dir)] = "it is in the home's checkpoints folder (partial jobs)"
    for kind, value, name, model_id in _store_paths(home):
        path = _resolved(value)
        if kind == "log":
            out.files.setdefault(path, "it is a worker's log file")
        elif path.is_dir():
            out.trees.setdefault(path, f"it is the folder of registered model {name!r} (model:{model_id})")
        else:
            out.files.setdefault(path, f"it is a file of registered model {name!r} (model:{model_id})")
    return out


def _store_paths(home: Home) -> list[tuple[str, str, str, int | None]]:
    """(kind, absolute path, model name, model id) of every model path and worker log the
    store names; read-only, nothing when the store does not exist or cannot be read."""
    if not home.db_path.is_file():
        return []
    found: list[tuple[str, str, str, int | None]] = []
    try:
        conn = sqlite3.connect(f"file:{home.db_path}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        return []
    try:
        for model_id, name, path, source in conn.execute("SELECT id, name, path, source FROM models"):
            for value in (path, source):
                if value and (Path(value).is_absolute() or value.startswith(("models/", "cache/"))):
                    found.append(("model", to_loadable(value, home.root), name, model_id))
        for (log_path,) in conn.execute("SELECT log_path FROM workers WHERE log_path IS NOT NULL"):
            found.append(("log", log_path, "", None))
    except sqlite3.Error:
        pass
    finally:
        conn.close()
    return found


def _why(target: Path, protected: _Protected, allow: set[Path]) -> str | None:
    if target in allow:
        return None
    if target in protected.files:
        return protected.files[target]
    for tree, why in protected.trees.items():
        if target == tree or tree in target.parents:
            return why
    if target.exists():                 # a hard link (or bind mount) to a protected file
        try:
            stat = target.stat()
        except OSError:
            return None
        for path, why in protected.files.items():
            try:
                other = path.stat()
            except OSError:
                continue
            if (other.st_dev, other.st_ino) == (stat.st_dev, stat.st_ino):
                return f"{why} ({path}, the same file)"
    return None


def check_outputs(home: Home, targets: Iterable[str | Path], *, option: str = "-o",
                  allow: Iterable[str | Path] = ()) -> None:
    """Raise ProtectedPath (exit 2, one line) if a path of `targets` (files or folders about
    to be written) is one of the home's own files; `allow` names paths the caller may write
    although they are protected (a model card into its own model's folder)."""
    protected = _protected(home)
    allowed = {_resolved(p) for p in allow}
    for raw in targets:
        target = _resolved(raw)
        why = _why(target, protected, allowed)
        if why is not None:
            raise ProtectedPath(f"{option} {os.fspath(raw)!r}: refusing to write {str(target)!r}: "
                                f"{why}; nothing was written")


def check_folder(home: Home, folder: str | Path, *, option: str = "-o") -> None:
    """ProtectedPath when an output folder (one a command writes files of its own naming
    into: a report, lm-eval results) is a protected path or inside one, or directly holds a
    protected file (the home's root, next to the store): what it writes there cannot then
    meet a file of the home whatever its names."""
    check_output(home, folder, option=option)
    target = _resolved(folder)
    for path, why in _protected(home).files.items():
        if path.parent == target:
            raise ProtectedPath(f"{option} {os.fspath(folder)!r}: refusing to write into "
                                f"{str(target)!r}: it holds {path.name} ({why}); nothing was "
                                "written")


def check_output(home: Home, target: str | Path, *, option: str = "-o",
                 allow: Iterable[str | Path] = ()) -> None:
    """`check_outputs` for one path."""
    check_outputs(home, [target], option=option, allow=allow)


def home_of(args) -> Home:
    """The command's home (`--home` or the default) without creating anything."""
    root = getattr(args, "home", None)
    return Home(_resolved(root) if root else default_home())
