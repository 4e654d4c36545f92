"""Fault injection with real processes and a real SQLite store: a worker killed with SIGKILL
during generation (twice) or during pruning, and a writer killed while its transactions are in
flight. After every kill the store passes `PRAGMA integrity_check`, nothing that was stored is
lost or changed, nothing is stored twice, and a restarted worker completes the job.

(Distillation killed mid-training is tests/test_distill.py::test_killed_worker_resumes_from_checkpoint.)"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from engine import job_sweeps, queue, worker_rows
from engine.paths import Home
from engine.specs import EvalSpec, PruneSpec
from engine.store import Store
from engine.worker import Worker

REPO = Path(__file__).resolve().parents[1]


# -- helpers shared by the reliability tests -----------------------------------------------------
def worker_env(home: Home) -> dict[str, str]:
    return {**os.environ, "COMPFAIR_HOME": str(home.root), "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def start_cli_worker(home: Home, *args: str, **popen) -> subprocess.Popen:
    """`python -m engine.cli worker --once` (the real command line) on `home`."""
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.DEVNULL)
    return subprocess.Popen([sys.executable, "-m", "engine.cli", "worker", "--once", *args],
                            cwd=REPO, env=worker_env(home), **popen)


def wait_until(condition: Callable[[], bool], timeout: float, what: str,
               proc: subprocess.Popen | None = None, poll: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the worker exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(poll)


def sigkill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def integrity(home: Home) -> tuple[str, list]:
    """integrity_check and foreign_key_check through a fresh connection (no engine code)."""
    conn = sqlite3.connect(home.db_path)
    try:
        return (conn.execute("PRAGMA integrity_check").fetchone()[0],
                conn.execute("PRAGMA foreign_key_check").fetchall())
    finally:
        conn.close()


def assert_store_ok(home: Home) -> None:
    assert integrity(home) == ("ok", [])


def stored_samples(store: Store, run_id: int) -> dict[str, tuple]:
    """key -> (row id, completion, toxicity, created_at): any rewrite changes the tuple."""
    return {r["key"]: (r["id"], r["completion"], r["toxicity"], r["created_at"])
            for r in store.samples(run_id)}


def count_samples(store: Store, job_id: int) -> int:
    run = store.run_for_job(job_id)
    if run is None:
        return 0
    return store.one("SELECT count(*) AS n FROM samples WHERE run_id = ?", (run["id"],))["n"]


def run_inline(home: Home) -> int:
    return Worker(home, once=True, idle_exit_s=None).run()


# -- SIGKILL during generation -------------------------------------------------------------------
@pytest.mark.slow     # 34 s; one kill and resume stays in the default suite (test_eval_jobs)
def kill_worker_when_stored(home, store, job_id: int, threshold: int) -> None:
    """Start a command-line worker and SIGKILL it once `threshold` samples of the job are stored."""
    proc = start_cli_worker(home)
    try:
        wait_until(lambda: count_samples(store, job_id) >= threshold, 120,
                   f"{threshold} samples stored", proc)
    finally:
        sigkill(proc)


def test_generation_killed_twice_loses_and_duplicates_nothing(home, store, tiny_gpt2):
    """Two SIGKILLs of the command-line worker at different points of one toxicity job; the
    third worker completes it. Every sample stored before a kill is still there, byte for byte
    (same row id, completion, score and timestamp), and the finished run equals an
    uninterrupted run of the same spec."""
    spec = EvalSpec(model=str(tiny_gpt2), suite="toxicity", data="builtin", scorer="profanity",
                    max_prompts=60, samples_per_prompt=4, max_new_tokens=12, batch_size=4,
                    bootstrap_samples=100, seed=5, device="cpu")   # CPU: the same pace everywhere
    total = 60 * 4
    job_id = queue.submit(store, spec, max_attempts=5)
    snapshots: list[dict[str, tuple]] = []
    for threshold in (12, 110):
        kill_worker_when_stored(home, store, job_id, threshold)
        assert queue.job(store, job_id)["status"] == "running"   # as the dead worker left it
        assert_store_ok(home)
        run_id = store.run_for_job(job_id)["id"]
        now = stored_samples(store, run_id)
        assert threshold <= len(now) < total, "the kill should land half-way through the job"
        for earlier in snapshots:
            assert {k: now.get(k) for k in earlier} == earlier
        snapshots.append(now)

    run_inline(home)                    # requeues the dead worker's job and resumes it
    job = queue.job(store, job_id)
    assert job["status"] == "done", job["error"]
    assert job["attempts"] == 3
    final = stored_samples(store, run_id)
    assert len(final) == total == len({v[0] for v in final.values()})
    for earlier in snapshots:
        assert {k: final[k] for k in earlier} == earlier
    assert store.run(run_id)["n_samples"] == total
    messages = [e["message"] for e in store.events(job_id)]
    assert sum("requeued to resume" in m for m in messages) == 2
    assert any(f"resuming: {len(snapshots[-1])} of {total}" in m for m in messages)

    reference = queue.submit(store, spec.replace(label="uninterrupted"))
    run_inline(home)
    ref_run = json.loads(queue.job(store, reference)["result"])["run_id"]
    expected = {r["key"]: (r["completion"], r["toxicity"]) for r in store.samples(ref_run)}
    assert {k: (v[1], v[2]) for k, v in final.items()} == expected
    assert_store_ok(home)


# -- SIGKILL during pruning ----------------------------------------------------------------------
def test_pruning_killed_mid_wanda_resumes_and_registers_one_model(home, store, tiny_gpt2):
    spec = PruneSpec(model=str(tiny_gpt2), method="wanda", sparsity=0.5, calibration_data="builtin",
                     calibration_samples=192, calibration_seq_len=128, device="cpu")
    job_id = queue.submit(store, spec)

    def in_wanda() -> bool:
        message = queue.job(store, job_id)["progress_message"] or ""
        return message.startswith("wanda: block") and not message.endswith(("4/4",))

    proc = start_cli_worker(home)
    try:
        wait_until(in_wanda, 120, "wanda pruning under way", proc, poll=0.005)
    finally:
        sigkill(proc)
    assert queue.job(store, job_id)["status"] == "running"
    assert_store_ok(home)
    base = store.model_by_source(str(tiny_gpt2))
    assert base is not None                                        # the parent got registered
    assert store.one("SELECT count(*) AS n FROM models WHERE job_id = ?", (job_id,))["n"] == 0
    assert not [p for p in home.models_dir.iterdir() if not p.name.endswith(".partial")]

    run_inline(home)
    job = queue.job(store, job_id)
    assert job["status"] == "done", job["error"]
    assert job["attempts"] == 2
    derived = store.query("SELECT * FROM models WHERE job_id = ?", (job_id,))
    assert len(derived) == 1 and derived[0]["parent_id"] == base["id"]
    assert json.loads(derived[0]["sparsity"])["overall"] == 0.5
    assert sorted(p.name for p in home.models_dir.iterdir()) == [Path(derived[0]["path"]).name]
    assert store.one("SELECT count(*) AS n FROM models")["n"] == 2     # nothing registered twice
    assert_store_ok(home)


# -- SIGKILL while writes are in flight ----------------------------------------------------------
WRITER = r"""
import sys
from engine.paths import Home
from engine.store import Store

store = Store(Home.resolve())
run_id, job_id, batch, rows = (int(a) for a in sys.argv[1:5])
payload = "x" * 1500
print("ready", flush=True)
while True:
    # one transaction: `rows` samples of batch `batch` (about 30 pages with the indexes)
    store.add_samples(run_id, [{"key": f"{batch}:{i}", "item_index": batch, "sample_index": i,
                                "completion": payload, "toxicity": batch / 1000} for i in range(rows)])
    store.add_event(job_id, f"batch {batch}")       # a second transaction, after the first
    print(batch, flush=True)                        # acknowledged: both are committed
    batch += 1
"""


def test_writer_killed_mid_transaction_leaves_a_prefix_of_whole_transactions(home, store, tmp_path):
    """A process that does nothing but write is killed at random instants, six times. Each
    time the store is intact, the stored batches are exactly 0..n-1 (each complete, no
    partial transaction), every acknowledged batch is there, and the writer restarts after
    the last batch stored."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    job_id = queue.submit(store, EvalSpec(model="gpt2", suite="toxicity"))
    run_id = store.start_run(job_id, None, "toxicity", {}, None, None, "test", "cpu")
    rows_per_batch = 40
    rng = random.Random(8)
    next_batch, acknowledged_total = 0, 0
    cut_after: set[int] = set()        # batches whose event a kill may have cut off
    for round_ in range(6):
        proc = subprocess.Popen([sys.executable, str(script), str(run_id), str(job_id),
                                 str(next_batch), str(rows_per_batch)], cwd=REPO,
                                env=worker_env(home), stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.35))
        proc.send_signal(signal.SIGKILL)
        acknowledged = [int(line) for line in proc.stdout.read().split()]
        proc.wait(30)
        assert_store_ok(home)

        by_batch = {r["item_index"]: r["n"] for r in store.query(
            "SELECT item_index, count(*) AS n FROM samples WHERE run_id = ? GROUP BY item_index",
            (run_id,))}
        n = len(by_batch)
        assert sorted(by_batch) == list(range(n)), "stored batches must be a prefix"
        assert set(by_batch.values()) == {rows_per_batch}, "a batch was stored in part"
        events = [int(e["message"].split()[1]) for e in store.events(job_id, limit=10_000)]
        assert events == sorted(set(events)) and set(events) <= set(range(n))
        missing = set(range(n)) - set(events)      # an event is its own, later transaction
        assert missing <= cut_after | {n - 1}
        cut_after |= missing
        if acknowledged:
            assert acknowledged[-1] < n, "an acknowledged transaction was lost"
            assert n - 1 <= acknowledged[-1] + 1
        acknowledged_total += len(acknowledged)
        next_batch = n
    assert acknowledged_total >= 6, "the writer should have committed between kills"
    assert len(store.sample_keys(run_id)) == next_batch * rows_per_batch


# -- recovering orphans never takes a job a live worker touched ------------------------------------
def test_recovery_leaves_a_job_that_its_worker_touched_meanwhile(store, monkeypatch):
    """recover_orphans decides from one snapshot, then changes a job only if it is still held
    by the same worker with the same heartbeat: a worker that beats (or a job that is claimed
    again) between the read and the write keeps its job instead of having it requeued under it
    and run twice."""
    job_id = queue.submit(store, EvalSpec(model="gpt2"))
    store.db["workers"].insert({"id": "slow", "pid": 2 ** 22 - 3, "host": os.uname().nodename,
                                "heartbeat_at": time.time() - 1000, "status": "busy"})
    assert queue.claim(store, "slow")["id"] == job_id
    store.conn.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = ?", (time.time() - 1000, job_id))
    store.conn.commit()
    real_alive = worker_rows.worker_alive

    def beat_then_judge(worker, stale_after=worker_rows.STALE_HEARTBEAT_S):
        with store.conn:   # the worker's heartbeat lands after the snapshot was read
            store.conn.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = ?", (time.time(), job_id))
        return real_alive(worker, stale_after)

    monkeypatch.setattr(job_sweeps, "worker_alive", beat_then_judge)
    assert job_sweeps.recover_orphans(store) == []
    assert queue.job(store, job_id)["status"] == "running"
    monkeypatch.setattr(job_sweeps, "worker_alive", real_alive)
    store.conn.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = ?", (time.time() - 1000, job_id))
    store.conn.commit()
    assert job_sweeps.recover_orphans(store) == [job_id]       # without the beat it is requeued
    assert queue.job(store, job_id)["status"] == "queued"
