"""Fencing with real processes (issue 20.2): a worker paused (SIGSTOP) mid-job long enough to
be presumed dead loses its job to a second worker; once that one has finished it, the first
is resumed (SIGCONT). It must stop the job at once, write nothing more for it (no event, no
progress, no sample, no second "finished", no model folder or registration), and go on to
exit cleanly; the job's samples and metrics equal an uninterrupted run's.

Model folders are files, outside the store's guards: a prune or quantize worker that stops
itself at its lease check before writing its model folder (or before renaming it into place),
and is resumed after the takeover, must leave the successor's folder untouched and register
nothing.

Both workers are `python -m engine.cli worker` with a short lease ($COMPFAIR_LEASE_TIMEOUT_S)
and heartbeat ($COMPFAIR_HEARTBEAT_S), on tiny models (tests/tinymodels.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from engine import queue
from engine.worker_lock import worker_id_for
from engine.paths import Home
from engine.specs import DistillSpec, EvalSpec, JobSpec, PruneSpec, QuantizeSpec
from engine.store import Store
from tests.test_reliability_faults import (REPO, assert_store_ok, count_samples, run_inline,
                                           wait_until, worker_env)

LEASE_S, HEARTBEAT_S = 2.5, 0.25
queue_ended = ("done", "failed", "cancelled")


def start_worker(home: Home, log: Path) -> subprocess.Popen:
    """A long-running command-line worker (exits after 2 s idle) with a short lease."""
    env = {**worker_env(home), "COMPFAIR_LEASE_TIMEOUT_S": str(LEASE_S),
           "COMPFAIR_HEARTBEAT_S": str(HEARTBEAT_S)}
    return subprocess.Popen([sys.executable, "-m", "engine.cli", "worker", "--idle-exit", "2"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=log.open("w"))


def snapshot(store: Store, home: Home, job_id: int) -> dict:
    """Everything a stale worker could write for the job (rows and files)."""
    run = store.run_for_job(job_id)
    files = {str(p.relative_to(home.root)): (p.stat().st_mtime_ns, p.stat().st_size)
             for folder in (home.models_dir, home.checkpoints_dir) if folder.is_dir()
             for p in sorted(folder.rglob("*")) if p.is_file()}
    return {
        "job": queue.job(store, job_id),
        "events": store.query("SELECT * FROM events WHERE job_id = ? ORDER BY id", (job_id,)),
        "samples": store.query("SELECT * FROM samples WHERE run_id = ? ORDER BY id",
                               (run["id"],)) if run else [],
        "runs": store.query("SELECT * FROM runs ORDER BY id"),
        "metrics": store.query("SELECT * FROM metrics ORDER BY id"),
        "models": store.query("SELECT * FROM models ORDER BY id"),
        "files": files,
    }


# A worker that stops itself (SIGSTOP, as if frozen by the OS) on the Nth lease check before a
# model folder is touched: 1 before writing the folder, 2 before renaming it into place, 3 before
# registering the model (engine.compression.model_writer). The check itself is the real one.
PAUSING_WORKER = r"""
import os, signal, sys
from engine.context import JobContext
from engine.cli import main
pause_at, calls, check = int(sys.argv[1]), [], JobContext.ensure_lease
def ensure_lease(self):
    calls.append(1)
    if len(calls) == pause_at:
        os.kill(os.getpid(), signal.SIGSTOP)
    return check(self)
JobContext.ensure_lease = ensure_lease
sys.exit(main(["worker", "--idle-exit", "2"]))
"""


def start_pausing_worker(pause_at: int) -> Callable[[Home, Path], subprocess.Popen]:
    def start(home: Home, log: Path) -> subprocess.Popen:
        env = {**worker_env(home), "COMPFAIR_LEASE_TIMEOUT_S": str(LEASE_S),
               "COMPFAIR_HEARTBEAT_S": str(HEARTBEAT_S)}
        return subprocess.Popen([sys.executable, "-c", PAUSING_WORKER, str(pause_at)], cwd=REPO,
                                env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    return start


def is_stopped(proc: subprocess.Popen) -> bool:
    """Whether `proc` is stopped by a signal (state T in /proc)."""
    try:
        return Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except (OSError, IndexError):
        return False


def pause_until_taken_over(home: Home, store: Store, job_id: int,
                           paused_when: Callable[[], bool] | None, tmp_path: Path,
                           start_stale=start_worker) -> dict:
    """Run the job on worker 1, SIGSTOP it once `paused_when()` (None: once it stopped itself),
    let worker 2 take the job over and finish it, then SIGCONT worker 1 and let both exit.
    Returns the figures."""
    logs = tmp_path / "stale.log", tmp_path / "successor.log"
    stale = start_stale(home, logs[0])
    if paused_when is None:
        paused_when = lambda: is_stopped(stale)  # noqa: E731
    successor = None
    try:
        wait_until(lambda: paused_when() or queue.job(store, job_id)["status"] in queue_ended,
                   120, "the job under way", stale, poll=0.005)
        stale.send_signal(signal.SIGSTOP)
        paused_at = time.monotonic()
        assert queue.job(store, job_id)["status"] == "running", "paused too late"
        successor = start_worker(home, logs[1])
        stale_id, deadline = worker_id_for(stale.pid), time.monotonic() + 20
        while queue.job(store, job_id)["worker_id"] in (stale_id, None):
            if successor.poll() is not None:
                raise AssertionError(f"the second worker exited ({successor.returncode})")
            if time.monotonic() > deadline:
                # paused inside a write transaction: the store stays locked until it resumes,
                # so let it commit that one and pause it again
                stale.send_signal(signal.SIGCONT)
                time.sleep(0.05)
                stale.send_signal(signal.SIGSTOP)
                deadline = time.monotonic() + 20
            time.sleep(0.05)
        taken_over_s = time.monotonic() - paused_at
        wait_until(lambda: queue.job(store, job_id)["status"] in queue_ended, 120,
                   "the second worker finishing the job", successor)
        before = snapshot(store, home, job_id)
        stale.send_signal(signal.SIGCONT)
        resumed_at = time.monotonic()
        stale_rc = stale.wait(60)
        stale_exit_s = time.monotonic() - resumed_at
        assert successor.wait(60) == 0
    finally:
        for proc in (stale, successor):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait()
    after = snapshot(store, home, job_id)
    stale_log = logs[0].read_text()
    assert stale_rc == 0, stale_log[-2000:]
    assert "no longer holds it" in stale_log, stale_log[-2000:]
    assert after == before, "a write of the stale worker landed"
    job = after["job"]
    assert job["status"] == "done", job["error"]
    assert job["worker_id"] == worker_id_for(successor.pid)
    messages = [e["message"] for e in after["events"]]
    assert messages.count("finished") == 1
    assert any("died while running the job; requeued to resume" in m for m in messages)
    assert_store_ok(home)
    return {"taken_over_s": taken_over_s, "stale_exit_s": stale_exit_s, "job": job,
            "snapshot": after}


def assert_one_model(store: Store, home: Home, job_id: int) -> None:
    derived = store.query("SELECT * FROM models WHERE job_id = ?", (job_id,))
    assert len(derived) == 1
    assert store.one("SELECT count(*) AS n FROM models")["n"] == 2      # the parent + one
    assert [p.name for p in home.models_dir.iterdir()] == [Path(derived[0]["path"]).name]
    assert json.loads(queue.job(store, job_id)["result"])["model_id"] == derived[0]["id"]


def test_paused_eval_worker_writes_nothing_after_takeover(home, store, tiny_gpt2, tmp_path):
    spec = EvalSpec(model=str(tiny_gpt2), suite="toxicity", data="builtin", scorer="profanity",
                    max_prompts=40, samples_per_prompt=4, max_new_tokens=12, batch_size=4,
                    bootstrap_samples=200, seed=3, device="cpu")
    job_id = queue.submit(store, spec)
    figures = pause_until_taken_over(home, store, job_id,
                                     lambda: count_samples(store, job_id) >= 16, tmp_path)
    run_id = json.loads(figures["job"]["result"])["run_id"]
    reference = queue.submit(store, spec.replace(label="uninterrupted"))
    run_inline(home)
    ref_run = json.loads(queue.job(store, reference)["result"])["run_id"]

    def samples(run: int) -> dict:
        return {r["key"]: (r["completion"], r["toxicity"]) for r in store.samples(run)}

    def metrics(run: int) -> list:
        return sorted((r["name"], r["subset"], r["value"], r["ci_low"], r["ci_high"], r["n"])
                      for r in store.query("SELECT * FROM metrics WHERE run_id = ?", (run,)))

    assert len(samples(run_id)) == 160
    assert samples(run_id) == samples(ref_run)
    assert metrics(run_id) == metrics(ref_run) and metrics(run_id)
    assert figures["taken_over_s"] < LEASE_S + 15 and figures["stale_exit_s"] < 20


def _compression_case(home: Home, store: Store, spec: JobSpec, paused_when, tmp_path: Path) -> None:
    job_id = queue.submit(store, spec)
    pause_until_taken_over(home, store, job_id, lambda: paused_when(queue.job(store, job_id)),
                           tmp_path)
    assert_one_model(store, home, job_id)


@pytest.mark.slow
def test_paused_prune_worker_registers_no_second_model(home, store, tiny_gpt2, tmp_path):
    spec = PruneSpec(model=str(tiny_gpt2), method="wanda", sparsity=0.5, calibration_data="builtin",
                     calibration_samples=128, calibration_seq_len=128, device="cpu")
    _compression_case(home, store, spec, lambda row: (row["progress_message"] or "")
                      .startswith("wanda: block"), tmp_path)


@pytest.mark.slow
def test_paused_distill_worker_registers_no_second_model(home, store, tiny_gpt2, tmp_path):
    spec = DistillSpec(teacher=str(tiny_gpt2), steps=40, batch_size=2, seq_len=32,
                       learning_rate=3e-3, warmup_steps=2, checkpoint_every=10, data="builtin",
                       device="cpu")
    _compression_case(home, store, spec, lambda row: (row["progress_message"] or "")
                      .startswith("step 3/"), tmp_path)


@pytest.mark.parametrize("pause_at", [1, pytest.param(2, marks=pytest.mark.slow)],
                         ids=["before-writing-the-folder", "before-the-rename"])
def test_stale_prune_worker_writes_no_model_folder(home, store, tiny_gpt2, tmp_path, pause_at):
    """Paused at the lease check before its model folder is written (or renamed into place),
    taken over and resumed: the stale worker leaves the successor's folder as it is and
    registers nothing."""
    job_id = queue.submit(store, PruneSpec(model=str(tiny_gpt2), method="magnitude", sparsity=0.5,
                                           device="cpu"))
    pause_until_taken_over(home, store, job_id, None, tmp_path, start_pausing_worker(pause_at))
    assert_one_model(store, home, job_id)


@pytest.mark.slow
def test_stale_quantize_worker_writes_no_model_folder(home, store, tiny_gpt2, tmp_path):
    job_id = queue.submit(store, QuantizeSpec(model=str(tiny_gpt2), bits=8, group_size=32, device="cpu"))
    pause_until_taken_over(home, store, job_id, None, tmp_path, start_pausing_worker(1))
    assert_one_model(store, home, job_id)
