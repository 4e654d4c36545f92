"""Classifying why a job failed: the one-line reason stored with it, and whether the failure
means the machine (a full disk, a store that cannot be written) rather than the job.

Used by the worker (out-of-memory detection comes from `engine.devices`, which imports torch)
and by the disk reserve."""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Iterator

from engine.errors import JobFailed, UserError, first_line
from engine.devices import is_out_of_memory

# errno values meaning "no room to write": a full disk, a file-size limit, a quota
_NO_ROOM_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NO_ROOM_TEXTS = tuple(os.strerror(e).lower() for e in _NO_ROOM_ERRNOS) + (
    "database or disk is full", "no space left", "file too large", "filetoolarge", "storagefull")

# numpy's tofile (GGUF tensors) reports a short write without an errno: "294912 requested and
# 80800 written". fwrite stops short for lack of room (a full disk, a file-size limit).
_SHORT_WRITE = re.compile(r"^(\d+) requested and (\d+) written$")
# names of locals that hold the file being written, in library code (safetensors' save_file)
_PATH_LOCALS = ("filename", "file_path", "save_path", "path", "target")

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
        if isinstance(item, OSError) and item.errno is None and _SHORT_WRITE.match(str(item).strip()):
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


def failure_reason(exc: BaseException) -> str:
    """The one-line reason stored with a failed job."""
    if isinstance(exc, CLEAN_FAILURES):
        return first_line(exc)
    if is_out_of_memory(exc):
        return f"out of memory even at batch size 1: {first_line(exc, 200)}"
    if is_no_room(exc):
        return no_room_reason(exc)
    if is_store_write_error(exc):
        return (f"could not write to the store ({first_line(exc, 200)}: disk full, file size limit or a "
                "failing disk); free space and retry the job")
    if isinstance(exc, sqlite3.DatabaseError):
        return f"store error: {first_line(exc, 200)}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def no_room_reason(exc: BaseException) -> str:
    """The reason for a write that failed for lack of room: which file (when the error or the
    code that was writing names it), how much the failing write and the file needed, and the
    room left on its file system (or the process's file-size limit, when that was reached)."""
    path = written_path(exc)
    facts: list[str] = []
    short = next((m for m in (_SHORT_WRITE.match(str(e).strip()) for e in _chain(exc)) if m), None)
    missing = 0
    if short:
        requested, written = int(short[1]), int(short[2])
        missing = requested - written
        facts.append(f"a write of {requested:,} bytes stored only {written:,}: "
                     f"{missing:,} more bytes were needed")
    size = _size(path, exc)
    expected = _expected_size(exc)
    if size is not None:
        facts.append(f"the file had {size:,} bytes"
                     + (f" of the {expected:,} it needs" if expected and expected > size else ""))
    elif expected:
        facts.append(f"the file needs {expected:,} bytes")
    limit = _file_size_limit()
    if limit is not None and size is not None and size + missing >= limit:
        facts.append(f"the file size limit of this process is {limit:,} bytes")
    free = _free(path)
    if free is not None:
        facts.append(f"{free:,} bytes free on its file system")
    where = f" {path}" if path else ""
    cause = first_line(exc, 200)
    detail = "; ".join(facts + ([cause] if not short else []))
    return (f"disk full or file size limit reached while writing{where}"
            + (f" ({detail})" if detail else "") + "; free space and retry the job")


def written_path(exc: BaseException) -> str | None:
    """The file a failed write was writing: the error's own filename, else a file open for
    writing (or a path held under a usual name) in the innermost frame of the traceback that
    has one (numpy and safetensors report their write errors without a path)."""
    for item in _chain(exc):
        if isinstance(item, OSError) and item.filename:
            return os.fsdecode(item.filename)
        if isinstance(item, sqlite3.Error):
            return None               # the store: its locals name no file being written
    for item in _chain(exc):
        for frame_locals in reversed(_frames(item)):
            named = None
            for name, value in frame_locals.items():
                if isinstance(value, io.IOBase) and _writing(value):
                    return os.fsdecode(value.name)
                if named is None and name in _PATH_LOCALS and isinstance(value, (str, os.PathLike)):
                    named = os.fspath(value)
            if named:
                return os.fsdecode(named)
    return None


def _frames(exc: BaseException) -> list[dict[str, Any]]:
    """The locals of each frame of `exc`'s traceback, outermost first."""
    out = []
    tb = exc.__traceback__
    while tb is not None:
        out.append(tb.tb_frame.f_locals)
        tb = tb.tb_next
    return out


def _writing(handle: io.IOBase) -> bool:
    name, mode = getattr(handle, "name", None), str(getattr(handle, "mode", ""))
    return isinstance(name, (str, bytes)) and any(c in mode for c in "wax+")


def _expected_size(exc: BaseException) -> int | None:
    """The size the file being written would have had, where the writer knows it (a GGUF
    writer: the sum of its tensors' bytes)."""
    for item in _chain(exc):
        for frame_locals in reversed(_frames(item)):
            writer = frame_locals.get("self")
            tensors = getattr(writer, "tensors", None)
            if isinstance(tensors, list) and tensors and all(isinstance(t, dict) for t in tensors):
                try:
                    return sum(int(ti.nbytes) for t in tensors for ti in t.values())
                except (AttributeError, TypeError, ValueError):
                    return None
    return None


def _size(path: str | None, exc: BaseException) -> int | None:
    """How far the file had been written: the position of its open handle in the traceback
    (the file itself may be gone: a failed save removes its partial folder), else its size."""
    for item in _chain(exc):
        for frame_locals in reversed(_frames(item)):
            for value in frame_locals.values():
                if isinstance(value, io.IOBase) and _writing(value) and os.fsdecode(value.name) == path:
                    try:
                        return value.tell() if not value.closed else None
                    except (OSError, ValueError):
                        return None
    try:
        return os.path.getsize(path) if path else None
    except OSError:
        return None


def _free(path: str | None) -> int | None:
    """Bytes free (to this user) on the file system of `path` (its nearest existing folder)."""
    if not path:
        return None
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder if folder.is_dir() else folder.parent).free
    except OSError:
        return None


def _file_size_limit() -> int | None:
    try:
        import resource
    except ImportError:           # not on this platform
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft
