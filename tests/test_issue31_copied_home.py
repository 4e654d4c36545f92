"""Issue 31.1: a home copied while its worker runs gets a worker of its own.

A worker holds an exclusive lock on `<home>/.workers/<id>.lock` while alive
(engine.worker_lock); a copy of the home carries the lock file but not the lock, so the copied
`workers` row, whose pid is alive, is known for a worker of another home: `doctor --check`
reports it, `compfair submit` in the copy starts a worker, and the copy's job gets done. Real
processes throughout: the launcher's detached workers, the real command line, shutil.copytree."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from engine import queue, worker_lock
from engine.paths import Home
from engine.store import Store
from tests.test_reliability_faults import REPO, assert_store_ok, wait_until, worker_env


def cli(home: Home, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=REPO,
                          env=worker_env(home), capture_output=True, text=True, timeout=timeout)


def submit_perplexity(home: Home, model, seed: int) -> int:
    done = cli(home, "submit", "eval", "--model", str(model), "--suite", "perplexity",
               "--data", "builtin", "--context-length", "64", "--stride", "64",
               "--max-prompts", "8", "--bootstrap-samples", "100", "--device", "cpu",
               "--seed", str(seed), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return int(json.loads(done.stdout)["job_id"])


def job_status(home: Home, job_id: int) -> str:
    with _closing(Store(home)) as store:
        return queue.job(store, job_id)["status"]


class _closing:
    def __init__(self, store):
        self.store = store

    def __enter__(self):
        return self.store

    def __exit__(self, *exc):
        self.store.close()


def worker_rows(home: Home) -> list[dict]:
    with _closing(Store(home)) as store:
        return store.query("SELECT * FROM workers")


def gone(pid: int) -> bool:
    """The process exited (reaped here when it is a child of this test process)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def stop_pids(pids: set[int]) -> None:
    """SIGTERM, then SIGKILL, the worker processes this test started (their pids only)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 20
    for pid in pids:
        while time.monotonic() < deadline:
            if gone(pid):
                break
            time.sleep(0.05)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_home_copied_while_its_worker_runs_starts_its_own_worker(home, tiny_gpt2, tmp_path):
    started: set[int] = set()
    copy = Home.resolve(tmp_path / "copy")
    shutil.rmtree(copy.root)
    try:
        # home A: its detached worker, started as `compfair submit` starts one, idle
        from engine.launcher import spawn_detached
        pid_a = spawn_detached(home)
        started.add(pid_a)
        wait_until(lambda: worker_rows(home)[0]["status"] == "idle", 60, "A's worker idle")
        assert worker_lock.lock_path(home, worker_rows(home)[0]["id"]).exists()

        # copy A to B with A's worker alive: B's workers row names a live pid of another home
        shutil.copytree(home.root, copy.root)
        (row,) = worker_rows(copy)
        assert row["pid"] == pid_a and row["status"] == "idle"
        os.kill(pid_a, 0)

        # doctor in B names the row; in A the same worker is healthy
        check = cli(copy, "doctor", "--check")
        assert check.returncode == 1, check.stdout
        assert f"worker {row['id']} (pid {pid_a})" in check.stdout
        assert "does not hold this home's worker lock" in check.stdout
        from engine.doctor import check_store
        from engine.launcher import alive_workers
        with _closing(Store(home)) as store:
            assert check_store(store) == []
        with _closing(Store(copy)) as store:
            assert alive_workers(store) == []                   # `compfair workers` lists none

        # submit in B through the real command line: a worker of B is started and runs it
        second = submit_perplexity(copy, tiny_gpt2, seed=2)
        rows_b = worker_rows(copy)
        started |= {w["pid"] for w in rows_b}
        assert len(rows_b) == 2, rows_b                           # B's own worker was launched
        wait_until(lambda: job_status(copy, second) == "done", 120, "B's job done")
        (own_b,) = [w for w in worker_rows(copy) if w["pid"] != pid_a]
        assert own_b["status"] in ("idle", "busy", "starting")
        # B's worker marked the foreign row stopped; doctor in B is healthy again
        assert [w["status"] for w in worker_rows(copy) if w["pid"] == pid_a] == ["stopped"]
        check = cli(copy, "doctor", "--check")
        assert check.returncode == 0 and "store is healthy" in check.stdout, check.stdout
        # A is untouched: its worker still serves it, its row is not stopped
        assert [w["status"] for w in worker_rows(home)] == ["idle"]
        with _closing(Store(home)) as store:
            assert [w["pid"] for w in alive_workers(store)] == [pid_a]
        with _closing(Store(copy)) as store:
            assert [w["pid"] for w in alive_workers(store)] == [own_b["pid"]]
        assert_store_ok(home)
        assert_store_ok(copy)
    finally:
        stop_pids(started)


def test_several_workers_of_one_home_are_each_recognised(home, tmp_path):
    """`--devices cpu,cpu`: two launched workers, each with its own lock; both alive in the home,
    neither in a copy; a SIGTERMed one removes its lock file."""
    started: set[int] = set()
    try:
        done = cli(home, "worker", "--devices", "cpu,cpu", "--idle-exit", "60")
        assert done.returncode == 0, done.stdout + done.stderr
        started |= {w["pid"] for w in worker_rows(home)}
        assert len(started) == 2
        from engine.launcher import alive_workers
        with _closing(Store(home)) as store:
            # alive from their first instant (the launcher locked the files before starting them)
            assert sorted(w["pid"] for w in alive_workers(store)) == sorted(started)
            wait_until(lambda: all(w["status"] == "idle" for w in worker_rows(home)), 60,
                       "both workers idle")
            assert sorted(w["pid"] for w in alive_workers(store)) == sorted(started)
        copy = tmp_path / "copy"
        shutil.copytree(home.root, copy)
        with _closing(Store(Home.resolve(copy))) as store:
            assert alive_workers(store) == []
            assert len(worker_lock.foreign_workers(store)) == 2
        first = min(started)
        lock_file = worker_lock.lock_path(home, f"{os.uname().nodename}-{first}")
        assert lock_file.exists()
        stop_pids({first})
        assert not lock_file.exists()
        with _closing(Store(home)) as store:
            assert [w["pid"] for w in alive_workers(store)] == [max(started)]
            assert worker_lock.foreign_workers(store) == []
    finally:
        stop_pids(started)
