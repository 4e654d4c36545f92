"""Ordinary signals on a real `compfair worker` (issue 20.3): Ctrl-C (SIGINT) and SIGTERM put
the running job back in the queue without using an attempt, its run marked like the job; a job
whose cancellation was asked for before the signal ends "cancelled" instead of staying queued
with `cancel_requested` set (which no worker would ever claim)."""

from __future__ import annotations

import signal

import pytest

from engine import queue
from engine.specs import EvalSpec
from tests.test_reliability_faults import (assert_store_ok, count_samples, run_inline,
                                           start_cli_worker, wait_until)


def _slow_eval(tiny_gpt2) -> EvalSpec:
    return EvalSpec(model=str(tiny_gpt2), suite="toxicity", data="builtin", scorer="profanity",
                    max_prompts=20, samples_per_prompt=4, max_new_tokens=12, batch_size=2,
                    bootstrap_samples=200, seed=5, device="cpu")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
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
