"""Starting workers: find live ones and launch a detached worker when none is alive.

Kept free of torch so that the CLI and the TUI start fast."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from engine import worker_rows
from engine.paths import Home
from engine.store import Store
from engine.worker_lock import serves_home, spawn_locked, worker_id_for
from engine.job_status import ACTIVE, sql_list

# what a launched worker runs after the interpreter (tests swap in a short-lived command)
WORKER_ARGS: tuple[str, ...] = ("-m", "engine.cli", "worker")


def alive_workers(store: Store) -> list[dict]:
    """Workers of this home that are alive: a fresh heartbeat, and on this host a pid that
    exists and holds this home's worker lock (engine.worker_lock: a row copied with the home
    names a live process that works for another home)."""
    return [w for w in store.query("SELECT * FROM workers WHERE status != 'stopped'")
            if worker_rows.worker_alive(w) and serves_home(store.home, w)]


def ensure_worker(store: Store) -> int | None:
    """Start a detached worker if none is alive and there is work; returns its pid or None."""
    if alive_workers(store):
        return None
    if not store.one(f"SELECT id FROM jobs WHERE status IN {sql_list(ACTIVE)} LIMIT 1"):
        return None
    return spawn_detached(store.home)


def spawn_detached(home: Home) -> int:
    """A worker in its own session (survives the terminal and SSH hang-up), logging to a file,
    holding this home's worker lock from its start (engine.worker_lock). The launching process
    (the app, a CLI command) reaps it when it exits (`reap_when_done`): a worker's idle exit
    never leaves a `<defunct>` child behind a long-lived app."""
    log_path = home.logs_dir / "worker.log"
    env = {**os.environ, "COMPFAIR_HOME": str(home.root)}
    with open(log_path, "ab") as out:
        os.chmod(log_path, 0o600)
        proc = spawn_locked(home, [sys.executable, *WORKER_ARGS], env=env,
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=str(Path(__file__).resolve().parent.parent))
    # Record it at once, so a second caller in the next instant does not start another.
    with store_for(home) as store:
        worker_rows.register_worker(store, worker_id_for(proc.pid), proc.pid, status="starting",
                                    log_path=str(log_path))
    reap_when_done(proc)
    return proc.pid


def reap_when_done(proc: subprocess.Popen) -> threading.Thread:
    """Wait for `proc` on a daemon thread, so that its exit status is collected as soon as it
    exits (no zombie) while the caller goes on; the thread never keeps the caller alive."""
    thread = threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True)
    thread.start()
    return thread


class store_for:
    """`with store_for(home) as store:` a short-lived Store that is closed afterwards."""

    def __init__(self, home: Home):
        self.store = Store(home)

    def __enter__(self) -> Store:
        return self.store

    def __exit__(self, *exc) -> None:
        self.store.close()
