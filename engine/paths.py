"""Where compfair keeps its state: everything lives under one home folder."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from engine.errors import UserError

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def default_home() -> Path:
    """`$COMPFAIR_HOME` if set, otherwise the per-user data directory."""
    env = os.environ.get("COMPFAIR_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return Path(platformdirs.user_data_dir("compfair")).resolve()


def safe_name(name: str) -> str:
    """A file-name-safe version of a user-supplied name (no separators, no '..')."""
    cleaned = _SAFE_NAME.sub("_", name).strip("._")
    return cleaned[:120] or "unnamed"


@dataclass(frozen=True)
class Home:
    """The layout of a compfair home folder."""

    root: Path

    @classmethod
    def resolve(cls, root: str | Path | None = None) -> "Home":
        home = cls(Path(root).expanduser().resolve() if root else default_home())
        home.ensure()
        return home

    @property
    def db_path(self) -> Path:
        return self.root / "compfair.db"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def reserve_path(self) -> Path:
        """A few zero-filled blocks set aside so that, when the disk fills, a worker can free
        them and still record why its job failed (see engine.worker)."""
        return self.root / ".disk-reserve"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    def ensure(self) -> None:
        """Create the layout, readable by the owner only (0700). An existing folder is
        tightened to 0700 when it belongs to this user; one owned by someone else (a shared
        home) is used as it is instead of failing on chmod."""
        for folder in (self.root, self.models_dir, self.cache_dir, self.logs_dir,
                       self.checkpoints_dir, self.reports_dir):
            try:
                folder.mkdir(parents=True, mode=0o700)
            except FileExistsError:
                if not folder.is_dir():
                    raise UserError(f"compfair home {str(folder)!r} exists and is not a folder") from None
            if folder.stat().st_uid == os.geteuid() and folder.stat().st_mode & 0o077:
                os.chmod(folder, 0o700)

    def inside(self, base: Path, name: str) -> Path:
        """`base/name` with `name` sanitised; guaranteed to stay inside `base`."""
        target = (base / safe_name(name)).resolve()
        if base.resolve() not in target.parents:
            raise ValueError(f"name {name!r} would leave {base}")
        return target
