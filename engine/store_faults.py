"""What is wrong with the store file, in words a user can act on: `store_fault` turns an SQLite
error into one line naming the file and the cause (damaged, not a database, read-only, full disk,
cannot be opened) with what to do, or None when the error is not about the file (a fault of
compfair). Used by the command line (`engine.cli.faults`) and `compfair doctor`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

# SQLite result codes (the primary ones, `sqlite_errorname` without extended suffixes) that say
# what is wrong with the machine or the file rather than with compfair, and what to do about it.
_FAULT_TEXT = {
    "SQLITE_CORRUPT": "is damaged ({cause}); `compfair doctor --check` shows what is wrong; restore "
                      "it from a backup or move it away (a new empty store is created in its place)",
    "SQLITE_NOTADB": "is not an SQLite database ({cause}); restore it from a backup or move it away "
                     "(a new empty store is created in its place)",
    "SQLITE_READONLY": "is read-only ({cause}); give this user write access to it and its folder, "
                       "or use another --home",
    "SQLITE_FULL": "cannot grow: the disk is full ({cause}); free some space and run the command again",
    "SQLITE_CANTOPEN": "cannot be opened ({cause}); check that its folder exists and is writable",
    "SQLITE_IOERR": "cannot be read or written ({cause}); check the disk",
    "SQLITE_PERM": "cannot be written ({cause}); check the permissions of it and its folder",
}
_FAULT_MESSAGES = {"database disk image is malformed": "SQLITE_CORRUPT",
                   "file is not a database": "SQLITE_NOTADB",
                   "readonly database": "SQLITE_READONLY",
                   "database or disk is full": "SQLITE_FULL",
                   "unable to open database file": "SQLITE_CANTOPEN",
                   "disk i/o error": "SQLITE_IOERR"}


def store_fault(exc: sqlite3.Error, db_path: Path) -> str | None:
    """One line saying what is wrong with the store file at `db_path` when `exc` is a damaged,
    read-only, full or unopenable database; None for any other SQLite error (a fault of
    compfair, not of the file)."""
    name = (getattr(exc, "sqlite_errorname", None) or "").split("_")
    code = "_".join(name[:2]) if len(name) >= 2 else ""
    if code not in _FAULT_TEXT:
        text = str(exc).lower()
        code = next((c for m, c in _FAULT_MESSAGES.items() if m in text), "")
    if code not in _FAULT_TEXT:
        return None
    return f"the store {db_path} " + _FAULT_TEXT[code].format(cause=str(exc).strip() or code)
