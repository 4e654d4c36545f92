"""One worker per device (engine.scale.device_workers) through the real command line:
`compfair worker --devices cpu,cpu` starts two detached workers that share the queue and run
independent jobs at once; `compfair workers` lists both with their device; bad device lists
exit 2 and start nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import queue, worker_rows
from engine.errors import UserError
from engine.scale.device_workers import parse_devices
from engine.specs import EvalSpec

REPO = Path(__file__).resolve().parents[1]


def cli(home, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "engine.cli", "--home", str(home.root), *args],
                          cwd=REPO, capture_output=True, text=True, env=env)


def test_device_lists_parse_to_pinned_devices():
    assert parse_devices("all", n_gpus=3) == ("cuda:0", "cuda:1", "cuda:2")
    assert parse_devices("0, 1,3", n_gpus=4) == ("cuda:0", "cuda:1", "cuda:3")
    assert parse_devices("cpu,cpu", n_gpus=0) == ("cpu", "cpu")
    for bad in ("", "0,0", "4", "gpu", "0,,1", "-1", "all,cpu"):
        with pytest.raises(UserError, match="--devices"):
            parse_devices(bad, n_gpus=4)
    with pytest.raises(UserError, match="no CUDA GPU"):
        parse_devices("all", n_gpus=0)


def test_bad_device_lists_exit_2_and_start_nothing(home, store):
    for bad in ("cpu,,cpu", "gpu", "0,0"):
        proc = cli(home, "worker", "--devices", bad)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and f"--devices {bad!r}" in proc.stderr, proc.stderr
    assert store.query("SELECT id FROM workers") == []


def _wait_exited(pids: list[int], timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and any(worker_rows._pid_alive(p) for p in pids):
        time.sleep(0.2)


def test_two_cpu_workers_share_the_queue_and_are_listed(home, store, tiny_gpt2):
    jobs = [queue.submit(store, EvalSpec(model=str(tiny_gpt2), suite="toxicity", data="builtin",
                                         scorer="profanity", max_prompts=12, samples_per_prompt=2,
                                         max_new_tokens=8, bootstrap_samples=100, seed=seed))
            for seed in range(4)]
    proc = cli(home, "worker", "--devices", "cpu,cpu", "--once")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(" on cpu\n") == 2, proc.stdout
    pids = [w["pid"] for w in store.query("SELECT pid FROM workers")]
    assert len(pids) == 2
    seen_busy: dict[str, dict] = {}
    try:
        deadline = time.time() + 150
        while time.time() < deadline:
            if all(queue.job(store, j)["status"] in ("done", "failed") for j in jobs):
                break
            listed = cli(home, "workers", "--json")
            assert listed.returncode == 0, listed.stderr
            for view in json.loads(listed.stdout):
                if view["job_id"]:
                    seen_busy[view["worker_id"]] = view
            time.sleep(1.0)
        rows = [queue.job(store, j) for j in jobs]
        assert [r["status"] for r in rows] == ["done"] * 4, [r["error"] for r in rows]
        _wait_exited(pids, 60)
    finally:
        for pid in pids:
            if worker_rows._pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    workers = {r["worker_id"] for r in rows}
    assert len(workers) == 2, workers               # the queue spread over both workers
    spans = sorted((r["started_at"], r["finished_at"], r["worker_id"]) for r in rows)
    assert any(a[1] > b[0] and a[2] != b[2] for a, b in zip(spans, spans[1:])), spans   # at once
    assert {w["device"] for w in store.query("SELECT device FROM workers")} == {"cpu"}
    assert seen_busy, "compfair workers never showed a worker running a job"
    for view in seen_busy.values():
        assert view["device"] == "cpu" and view["rss_bytes"] > 10 * 2 ** 20
        assert view["job"].startswith("eval") and 0.0 <= view["progress"] <= 1.0
