"""Issue 31.4: a job whose worker dies in every attempt (SIGKILL, as the out-of-memory killer
does) ends failed with a reason that says so, says what is kept and that `compfair retry ID`
resumes from it, and (generation, distillation) suggests a smaller --batch-size; `compfair
retry` then completes it keeping every stored sample. A death counts as an attempt
(engine.crash_loop says why)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine import job_sweeps, queue, worker_rows
from engine.specs import DistillSpec, EvalSpec
from tests.test_reliability_faults import (REPO, assert_store_ok, kill_worker_when_stored, run_inline,
                                           sigkill, start_cli_worker, stored_samples, worker_env)


@pytest.mark.slow       # ~40 s: four worker starts on CPU
def test_three_sigkills_end_failed_saying_what_is_kept_and_retry_completes(home, store, tiny_gpt2):
    spec = EvalSpec(model=str(tiny_gpt2), suite="toxicity", data="builtin", scorer="profanity",
                    max_prompts=30, samples_per_prompt=4, max_new_tokens=12, batch_size=4,
                    bootstrap_samples=100, seed=7, device="cpu")
    total = 30 * 4
    job_id = queue.submit(store, spec)                  # max_attempts 3, as `compfair submit`
    snapshots = []
    for threshold in (8, 40, 72):
        kill_worker_when_stored(home, store, job_id, threshold)
        snapshots.append(stored_samples(store, store.run_for_job(job_id)["id"]))
    kept = snapshots[-1]
    assert len(kept) < total
    assert queue.job(store, job_id)["attempts"] == 3

    # the next worker finds the dead one's job out of attempts: failed, with the reason
    proc = start_cli_worker(home)
    assert proc.wait(120) == 0
    job = queue.job(store, job_id)
    assert job["status"] == "failed"
    error = job["error"]
    assert "died while running the job; gave up after 3 attempts" in error
    assert "out-of-memory" in error
    assert f"Kept: {len(kept)} of {total} samples stored; `compfair retry {job_id}` resumes from them" in error
    assert "a smaller --batch-size than 4" in error
    assert stored_samples(store, store.run_for_job(job_id)["id"]) == kept   # nothing lost
    shown = subprocess.run([sys.executable, "-m", "engine.cli", "show", "--job", str(job_id)], cwd=REPO,
                           env=worker_env(home), capture_output=True, text=True, timeout=60)
    assert f"compfair retry {job_id}" in shown.stdout, shown.stdout
    logs = subprocess.run([sys.executable, "-m", "engine.cli", "logs", str(job_id)], cwd=REPO,
                          env=worker_env(home), capture_output=True, text=True, timeout=60)
    assert f"compfair retry {job_id}` resumes" in logs.stdout, logs.stdout

    # `compfair retry` resumes from the stored samples and completes the job
    retried = subprocess.run([sys.executable, "-m", "engine.cli", "retry", str(job_id), "--no-worker"],
                             cwd=REPO, env=worker_env(home), capture_output=True, text=True, timeout=60)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    run_inline(home)
    job = queue.job(store, job_id)
    assert job["status"] == "done" and job["attempts"] == 1, job["error"]
    final = stored_samples(store, store.run_for_job(job_id)["id"])
    assert len(final) == total
    for earlier in snapshots:
        assert {k: final[k] for k in earlier} == earlier      # every stored sample kept as it was
    assert any(f"resuming: {len(kept)} of {total}" in e["message"] for e in store.events(job_id))
    assert_store_ok(home)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _die_three_times(store, job_id: int) -> dict:
    """Claim the job three times by workers whose processes are gone (as after SIGKILLs)."""
    for attempt in range(3):
        worker = f"dead-{attempt}"
        worker_rows.register_worker(store, worker, _dead_pid(), status="busy", log_path="")
        assert queue.claim(store, worker)["id"] == job_id
        job_sweeps.recover_orphans(store)
    return queue.job(store, job_id)


def test_distillation_reason_names_its_checkpoint_and_the_batch(home, store, tiny_gpt2):
    job_id = queue.submit(store, DistillSpec(teacher=str(tiny_gpt2), steps=40, batch_size=8,
                                             data="builtin"))
    (home.checkpoints_dir / f"job-{job_id}").mkdir()
    store.add_event(job_id, "checkpoint saved at step 20")
    job = _die_three_times(store, job_id)
    assert job["status"] == "failed"
    assert f"Kept: the checkpoint at step 20 of 40; `compfair retry {job_id}` resumes from it" in job["error"]
    assert "smaller --batch-size than 8 and a larger --grad-accum" in job["error"]


def test_a_job_with_nothing_stored_says_so_without_a_batch_hint(home, store, tiny_gpt2):
    job_id = queue.submit(store, EvalSpec(model=str(tiny_gpt2), suite="perplexity", data="builtin"))
    job = _die_three_times(store, job_id)
    assert job["status"] == "failed"
    assert job["error"].endswith(f"Nothing was stored yet; `compfair retry {job_id}` runs it again.")
    assert "--batch-size" not in job["error"]


def test_two_deaths_requeue_the_third_fails(home, store, tiny_gpt2):
    """A death counts as an attempt: requeued after the first two, failed after the third."""
    job_id = queue.submit(store, EvalSpec(model=str(tiny_gpt2), suite="perplexity", data="builtin"))
    for attempt in range(3):
        worker = f"dead-{attempt}"
        worker_rows.register_worker(store, worker, _dead_pid(), status="busy", log_path="")
        queue.claim(store, worker)
        job_sweeps.recover_orphans(store)
        assert queue.job(store, job_id)["status"] == ("queued" if attempt < 2 else "failed")
