"""A worker proves that it serves *this* home: while alive it holds an exclusive advisory lock
(`fcntl.flock`) on its own file in the home, `<home>/.workers/<worker id>.lock`.

Why: a worker row names a pid and a host, and a pid that exists is not proof that the process
works for this home. A home copied (a backup restored, an experiment branched) while its
worker runs holds a `workers` row naming that worker, whose pid is alive, but it works for the
original home: nothing would ever run the copy's jobs. A lock is not copied with the file that
carries it, so in the copy nobody holds the lock file and the row is seen for what it is.

One file per worker row, so the N workers of one home (`--devices`, several `compfair
worker`s) are each recognised. The launcher creates and locks the file *before* it starts the
worker and hands the locked descriptor to the child (flock locks belong to the open file, which
the child inherits), so a row registered as "starting" is backed by the lock from its first
instant; a worker started by hand (`compfair worker`) takes its own. A worker that exits
normally removes its file; one that was killed leaves an unlocked file, which is as good as no
file (the kernel drops the lock with the process) and is removed by `doctor --repair`.

Rows of workers on other hosts cannot be checked this way (a lock on a network file system is
not reliable); they are judged by their heartbeat alone, as before. Kept free of torch."""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import time
import uuid
from pathlib import Path

from engine import worker_rows
from engine.paths import Home

log = logging.getLogger(__name__)

LOCK_FD_ENV = "COMPFAIR_WORKER_LOCK_FD"     # the inherited descriptor of a launched worker
DIR_NAME = ".workers"
PENDING_PREFIX = "pending-"
PENDING_GRACE_S = 60.0     # a pending file older than this, unlocked, is a launcher's leftover


def locks_dir(home: Home) -> Path:
    return home.root / DIR_NAME


def lock_path(home: Home, worker_id: str) -> Path:
    return locks_dir(home) / f"{worker_id}.lock"


def _open_locked(path: Path) -> int:
    """Create (or open) `path`, lock it exclusively (waiting for a checker's brief shared lock)
    and return the descriptor. Retries when the file was removed between open and lock (a
    `doctor --repair` sweeping unlocked files), so the lock is always on the file the path
    names."""
    path.parent.mkdir(mode=0o700, exist_ok=True)
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise OSError(f"could not lock {path}: it keeps being removed")


def _is_locked(path: Path) -> bool:
    """Whether some open file (any process, this one included) holds a lock on `path`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)          # closing drops our shared lock, if we got it
    return False


# -- the worker's side ---------------------------------------------------------------------------
class WorkerLock:
    """The lock a running worker holds on its file (`hold`); `release` at exit."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            self.path.unlink(missing_ok=True)    # still ours: removed while we hold it
        except OSError as exc:
            log.warning("could not remove %s: %s", self.path, exc)
        os.close(self.fd)
        self.fd = -1


def hold(home: Home, worker_id: str) -> WorkerLock:
    """The lock of worker `worker_id` (this process): the descriptor the launcher handed down
    ($COMPFAIR_WORKER_LOCK_FD) when it is the lock of this very file, else a new one. The
    descriptor is not inherited by the job's own child processes."""
    path = lock_path(home, worker_id)
    inherited = os.environ.pop(LOCK_FD_ENV, None)
    if inherited and inherited.isdigit():
        fd = int(inherited)
        deadline = time.monotonic() + 10.0     # the launcher renames it right after the start
        while True:
            try:
                if os.path.exists(path) and os.fstat(fd).st_ino == os.stat(path).st_ino:
                    os.set_inheritable(fd, False)
                    return WorkerLock(path, fd)
            except OSError:
                break                  # not a descriptor (any more)
            if time.monotonic() > deadline:
                os.close(fd)
                break
            time.sleep(0.02)
        log.warning("the lock descriptor handed down (%s) is not %s; taking the lock anew",
                    inherited, path)
    return WorkerLock(path, _open_locked(path))


def worker_id_for(pid: int) -> str:
    """The id of the worker process `pid` on this host (its `workers` row and lock file)."""
    return f"{os.uname().nodename}-{pid}"


# -- the launcher's side -------------------------------------------------------------------------
def spawn_locked(home: Home, argv: list[str], *, env: dict[str, str], **popen) -> subprocess.Popen:
    """Start `argv` (a worker of `home`) holding its lock from the first instant: a pending file
    is locked here, the child inherits the locked descriptor (told by $COMPFAIR_WORKER_LOCK_FD),
    and the file is renamed to the worker's name once its pid is known (the lock follows the
    file). Call before registering the worker's row."""
    pending = locks_dir(home) / f"{PENDING_PREFIX}{uuid.uuid4().hex}.lock"
    fd = _open_locked(pending)
    try:
        proc = subprocess.Popen(argv, env={**env, LOCK_FD_ENV: str(fd)}, pass_fds=(fd,), **popen)
        try:
            os.replace(pending, lock_path(home, worker_id_for(proc.pid)))
        except OSError as exc:      # the worker takes a lock of its own when it starts
            log.warning("could not name the lock of worker pid %d: %s", proc.pid, exc)
            pending.unlink(missing_ok=True)
        return proc
    finally:
        os.close(fd)                # the child's copy keeps the lock


# -- checks --------------------------------------------------------------------------------------
def is_local(row: dict) -> bool:
    return row.get("host") == os.uname().nodename and bool(row.get("pid"))


def serves_home(home: Home, row: dict) -> bool:
    """Whether the worker of `row` works for `home`: for a worker on this host, whether its
    lock file in `home` is locked; a worker on another host cannot be checked (True)."""
    if not is_local(row):
        return True
    return _is_locked(lock_path(home, row["id"]))


def foreign_workers(store) -> list[dict]:
    """Rows that a pid/heartbeat check finds alive but whose process does not hold this home's
    lock: a worker of another home (this one was copied, moved or restored while it ran), or of a
    compfair from before the lock. Nothing of this home runs on them."""
    rows = store.query("SELECT * FROM workers WHERE status != 'stopped'")
    return [w for w in rows if worker_rows.worker_alive(w) and not serves_home(store.home, w)]


def describe_foreign(home: Home, row: dict) -> str:
    return (f"worker {row['id']} (pid {row['pid']}) is recorded as a worker of this home and its "
            f"process is alive, but it does not hold this home's worker lock "
            f"({lock_path(home, row['id'])}): it works for another home (this one was copied, "
            "moved or restored while that worker ran) and runs none of this home's jobs")


def stop_foreign(store) -> list[str]:
    """Mark each foreign worker row stopped (engine.worker_rows.stop_worker), so that its jobs marked
    running are recovered like those of a dead worker and a worker of this home is started.
    Returns the ids."""
    stopped = []
    for row in foreign_workers(store):
        worker_rows.stop_worker(store, row["id"])
        log.warning("%s; marked stopped", describe_foreign(store.home, row))
        stopped.append(row["id"])
    return stopped


def sweep(home: Home) -> list[Path]:
    """Remove lock files nobody holds (left by killed workers; a pending one only once it is
    PENDING_GRACE_S old). Returns the paths removed."""
    folder = locks_dir(home)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.glob("*.lock")):
        if path.name.startswith(PENDING_PREFIX):
            try:
                if time.time() - path.stat().st_mtime < PENDING_GRACE_S:
                    continue
            except FileNotFoundError:
                continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:                          # nobody holds it; a worker that opens it now retries
            if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
                path.unlink()
                removed.append(path)
        finally:
            os.close(fd)
    return removed
