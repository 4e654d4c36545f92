"""Where compfair keeps its state: everything lives under one home folder."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from engine.errors import UserError

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")

OWNER_FOLDER_MODE = 0o700     # what compfair creates in a home: readable by its owner only,
OWNER_FILE_MODE = 0o600       # whatever the umask (README: the store and logs are owner-only)


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


def _tighten(path: Path, mode: int) -> None:
    """chmod `path` to `mode` when it is ours and looser (a folder shared with someone else,
    or one we do not own, is left as it is)."""
    st = os.lstat(path)
    if st.st_uid == os.geteuid() and (st.st_mode & 0o777) != mode:
        os.chmod(path, mode)


def owner_only_file(path: Path) -> Path:
    """Create `path` (an empty file) readable and writable by its owner only (0600, whatever
    the umask), or tighten an existing one of ours; for logs opened in append mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, OWNER_FILE_MODE)
    os.close(fd)
    _tighten(path, OWNER_FILE_MODE)
    return path


def owner_only_tree(root: Path) -> None:
    """Make a folder compfair wrote (a derived model) owner-only: 0700 for it and every folder
    under it, 0600 for every file, whatever the umask it was written under. Links are not
    followed."""
    root = Path(root)
    if root.is_symlink():
        return
    if not root.is_dir():
        _tighten(root, OWNER_FILE_MODE)
        return
    _tighten(root, OWNER_FOLDER_MODE)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            path = Path(folder, name)
            if not path.is_symlink():
                _tighten(path, OWNER_FOLDER_MODE)
        for name in files:
            path = Path(folder, name)
            if not path.is_symlink():
                _tighten(path, OWNER_FILE_MODE)
