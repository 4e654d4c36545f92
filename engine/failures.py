"""Classifying why a job failed: the one-line reason stored with it, and whether the failure
means the machine (a full disk, a store that cannot be written) rather than the job.

Used by the worker (out-of-memory detection comes from `engine.devices`, which imports torch)
and by the disk reserve."""

from __future__ import annotations

import errno
import os
import sqlite3
from typing import Iterator

from engine.context import JobFailed
from engine.devices import is_out_of_memory
from engine.errors import UserError

# errno values meaning "no room to write": a full disk, a file-size limit, a quota
_NO_ROOM_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NO_ROOM_TEXTS = tuple(os.strerror(e).lower() for e in _NO_ROOM_ERRNOS) + (
    "database or disk is full", "no space left", "file too large", "filetoolarge", "storagefull")

# failures whose message is already the one-line reason: the job's own (JobFailed) and bad
# input met only when the job ran (a model that does not load, a data file, a spec)
CLEAN_FAILURES: tuple[type[BaseException], ...] = (JobFailed, UserError)


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """`exc` and the exceptions it was raised from or during (cause/context), once each."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_no_room(exc: BaseException) -> bool:
    """True when a write failed for lack of room: ENOSPC, EFBIG (a file-size limit), a quota,
    SQLite's "database or disk is full", or the same errors reported as text by a library
    (safetensors and torch report their I/O errors as plain exceptions)."""
    for item in _chain(exc):
        if isinstance(item, OSError) and item.errno in _NO_ROOM_ERRNOS:
            return True
        if isinstance(item, sqlite3.DatabaseError) and getattr(item, "sqlite_errorname", "") == "SQLITE_FULL":
            return True
        text = str(item).lower()
        if any(t in text for t in _NO_ROOM_TEXTS):
            return True
    return False


def is_store_write_error(exc: BaseException) -> bool:
    """True when the SQLite store itself could not be written (full, size limit, I/O error)."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name == "SQLITE_FULL" or name.startswith("SQLITE_IOERR") or \
        "disk is full" in str(exc) or "disk i/o error" in str(exc).lower()


def stops_the_worker(exc: BaseException) -> bool:
    """True when the next job would fail the same way (no room on the disk, a store that
    cannot be written): the worker stops instead of failing every queued job."""
    return not isinstance(exc, CLEAN_FAILURES) and (is_no_room(exc) or is_store_write_error(exc))


def _first(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:limit] if text else type(exc).__name__


def failure_reason(exc: BaseException) -> str:
    """The one-line reason stored with a failed job."""
    if isinstance(exc, CLEAN_FAILURES):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if is_out_of_memory(exc):
        return f"out of memory even at batch size 1: {_first(exc)}"
    if is_no_room(exc):
        return (f"disk full or file size limit reached while writing ({_first(exc)}); "
                "free space and retry the job")
    if is_store_write_error(exc):
        return (f"could not write to the store ({_first(exc)}: disk full, file size limit or a "
                "failing disk); free space and retry the job")
    if isinstance(exc, sqlite3.DatabaseError):
        return f"store error: {_first(exc)}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": ")
