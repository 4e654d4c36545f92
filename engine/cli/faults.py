"""What the command line says when the machine, not compfair, is in the way: a damaged,
read-only or full store, a path that cannot be written (read-only folder, a folder given as a
file, a full disk such as /dev/full), or input nested too deeply to parse.

`describe(exc, db_path)` turns such an exception into (one line naming the path and the cause,
exit code): 2 when the user's own input is at fault (a folder where a file was asked for, a path
that does not exist, a file nested too deeply), 1 when the environment is (permissions,
read-only mounts, full disks, damaged files). Anything else returns None: a fault of compfair,
reported as an internal error with the traceback in the log."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from engine.store_faults import store_fault
from engine.migrations import newer_store_at

# errno -> (what is wrong with the path, exit code)
_OS_FAULTS: dict[int, tuple[str, int]] = {
    errno.ENOSPC: ("no space left on the device", 1),
    errno.EDQUOT: ("disk quota exceeded", 1),
    errno.EROFS: ("is on a read-only file system", 1),
    errno.EACCES: ("permission denied", 1),
    errno.EPERM: ("operation not permitted", 1),
    errno.EIO: ("input/output error on the disk", 1),
    errno.EISDIR: ("is a folder, not a file", 2),
    errno.ENOTDIR: ("a part of the path is not a folder", 2),
    errno.ENOENT: ("does not exist", 2),
    errno.ENAMETOOLONG: ("the name is too long", 2),
    errno.EEXIST: ("already exists", 2),
}


def describe(exc: BaseException, db_path: Path | None) -> tuple[str, int] | None:
    """(one line, exit code) for an environment or input fault; None for anything else."""
    if isinstance(exc, sqlite3.Error) and db_path is not None:
        if getattr(exc, "sqlite_errorname", "") == "SQLITE_READONLY":
            newer = newer_store_at(db_path)       # a write refused by a newer compfair's store
            if newer is not None:
                return f"{db_path}: {newer}", 2
        line = store_fault(exc, db_path)
        return (line, 1) if line else None
    if isinstance(exc, RecursionError):
        return ("input nested too deeply to read (a data or JSON file with thousands of nested "
                "brackets?); flatten it", 2)
    if isinstance(exc, OSError) and exc.errno in _OS_FAULTS:
        return _os_line(exc), _OS_FAULTS[exc.errno][1]
    return None


def _os_line(exc: OSError) -> str:
    what, _ = _OS_FAULTS[exc.errno]
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    if not paths:
        return f"{what} ({exc.strerror or os.strerror(exc.errno)})"
    where = " -> ".join(repr(os.fsdecode(p)) for p in paths)
    if what.startswith(("is ", "does ", "already ")):
        return f"{where} {what}"
    return f"cannot write {where}: {what}" if exc.errno in (errno.ENOSPC, errno.EDQUOT) \
        else f"{where}: {what}"
