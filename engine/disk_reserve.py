"""A little disk set aside in the compfair home, so that a job failing on a full disk can
still be recorded as failed: the worker writes the reserve at start and releases it (deletes
the file) when a write fails for lack of room, making space for the failure record."""

from __future__ import annotations

import logging
import os

from engine.failures import failure_reason, is_no_room
from engine.paths import Home

log = logging.getLogger(__name__)

RESERVE_BYTES = 1 << 20   # disk set aside for recording a disk-full failure


def ensure_reserve(home: Home) -> str | None:
    """Set RESERVE_BYTES of disk aside in the home (a zero-filled file, written for real: a
    sparse file would reserve nothing). Returns None, or the reason it could not (no room:
    the disk is full)."""
    path = home.reserve_path
    try:
        if path.exists() and path.stat().st_size >= RESERVE_BYTES:
            return None
        partial = path.with_name(path.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0" * RESERVE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, path)
    except OSError as exc:
        path.with_name(path.name + ".partial").unlink(missing_ok=True)
        if is_no_room(exc):
            return failure_reason(exc)
        log.warning("could not set disk aside for recording failures: %s", exc)
    return None


def release_reserve(home: Home) -> bool:
    """Delete the reserve (room for a failure record); False when there was none."""
    try:
        home.reserve_path.unlink()
    except FileNotFoundError:
        return False
    log.warning("the disk is full: released the %d bytes set aside to record the failure",
                RESERVE_BYTES)
    return True
