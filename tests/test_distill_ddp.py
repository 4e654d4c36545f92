"""Data-parallel distillation (`processes` 2: two training processes, DDP over gloo on CPU)
through the real job path: queued, run by a worker, one student registered with the number of
processes in its lineage, loadable and generating; its losses match a single-process job with
the same global batch; a cancelled DDP job resumes from rank 0's checkpoint; a bad `--processes`
is refused at submit time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine import queue
from engine.cli import main
from engine.model_loader import ModelCache
from engine.specs import DistillSpec
from engine.worker import Worker
from tests.test_distill import cancel_once_under_way

# Both runs see the same global batches and compute the same mean gradient; DDP only changes the
# order of the floating-point sums (two half-batch means, averaged by the all-reduce, instead of
# one mean). The Llama student has no dropout, so nothing random differs. AdamW amplifies those
# ~1e-7 relative gradient differences a little (it divides by sqrt(v), so near-zero gradients
# whose sign flips move by up to the learning rate): measured here after 8 steps, the final
# losses and KL differ by at most 4e-7 relative. 1e-4 leaves 250x room for other CPUs and
# thread counts while staying ~1000x tighter than what one training step changes (~1e-1).
REL_TOL = 1e-4


@pytest.fixture(scope="module")
def teacher(tiny_llama):
    """The random tiny Llama itself: the test is about equal losses, not a good student (a
    pretrained teacher, as in test_distill.py, would cost ~10 s more here)."""
    return tiny_llama


def spec(teacher, **changes) -> DistillSpec:
    settings = dict(teacher=str(teacher), steps=8, batch_size=8, seq_len=32, data="builtin",
                    student_layers=(0, 3), learning_rate=3e-3, warmup_steps=2,
                    checkpoint_every=4, device="cpu")
    settings.update(changes)
    return DistillSpec(**settings)


def run_queue(home) -> None:
    Worker(home, once=True, idle_exit_s=None).run()


def result(store, job_id: int) -> dict:
    row = queue.job(store, job_id)
    assert row["status"] == "done", row["error"]
    return json.loads(row["result"])


def test_two_process_ddp_registers_one_student_matching_one_process(teacher, home, store):
    single = queue.submit(store, spec(teacher))
    ddp = queue.submit(store, spec(teacher, processes=2))
    started = time.time()
    run_queue(home)
    one, two = result(store, single), result(store, ddp)
    print(f"\n1 process {one['train_wall_s']} s, 2 processes {two['train_wall_s']} s "
          f"(both jobs {time.time() - started:.1f} s)")

    assert two["steps"] == 8 and two["train_processes"] == 2 and two["ddp_backend"] == "gloo"
    assert "train_processes" not in one
    for key in ("loss", "ce", "kl"):
        assert two["final_losses"][key] == pytest.approx(one["final_losses"][key], rel=REL_TOL)
    assert two["kl_after"] == pytest.approx(one["kl_after"], rel=REL_TOL)

    students = [m for m in store.models() if m["job_id"] == ddp]
    assert len(students) == 1                              # registered once, by the job
    row = students[0]
    assert row["id"] == two["model_id"] and row["method"] == "distill" and row["n_layers"] == 2
    assert json.loads(row["extra"])["train_processes"] == 2
    assert json.loads(row["method_params"])["processes"] == 2
    single_row = store.model(one["model_id"])
    assert "processes" not in json.loads(single_row["method_params"])   # unchanged rows
    events = [e["message"] for e in store.events(ddp)]
    assert any("training in 2 processes" in m for m in events)
    assert sum("checkpoint saved at step" in m for m in events) == 2   # step 4, and the final one

    loaded = ModelCache(home).load(row["path"], store)
    out = loaded.model.generate(**loaded.tokenizer("the doctor", return_tensors="pt"),
                                max_new_tokens=5, do_sample=False,
                                pad_token_id=loaded.tokenizer.pad_token_id)
    assert out.shape[1] > 2
    assert not (home.checkpoints_dir / f"job-{ddp}").exists()


@pytest.mark.slow
def test_cancelled_ddp_job_resumes_from_rank_zero_checkpoint(teacher, home, store):
    job_id = queue.submit(store, spec(teacher, processes=2, steps=60, checkpoint_every=1000))
    cancel_once_under_way(store, home, job_id, 0.05, timeout=120)
    assert queue.job(store, job_id)["status"] == "cancelled"
    import torch
    saved = torch.load(home.checkpoints_dir / f"job-{job_id}" / "state.pt", weights_only=True)
    assert 0 < saved["step"] < 60

    queue.retry(store, job_id)
    run_queue(home)
    done = result(store, job_id)
    assert done["resumed_from_step"] == saved["step"] and done["steps"] == 60
    assert len([m for m in store.models() if m["job_id"] == job_id]) == 1


@pytest.mark.parametrize("argv,expected", [
    (["--processes", "3"], "processes 3 must divide the effective batch"),
    (["--processes", "0"], "processes must be an integer in [1, 64], got 0"),
    (["--processes", "2", "--device", "mps"], "processes 2 needs device auto, cpu or cuda"),
])
def test_bad_processes_is_refused_at_submit(argv, expected, store, capsys):
    code = main(["submit", "distill", "--no-worker", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().count("\n") == 0 and expected in err, err
    assert queue.counts(store) == {}


@pytest.mark.slow
def test_a_failing_training_process_fails_the_job_with_its_reason(teacher, home, store):
    """A training process that cannot start (here: no training blocks in the checkpoint folder,
    which the job normally writes first) fails the whole job with one line, without hanging."""
    from engine.compression.distill_ddp import train_data_parallel
    from engine.context import JobContext
    from engine.errors import JobFailed
    from engine.model_loader import ModelCache as Cache
    import torch

    job_id = queue.submit(store, spec(teacher, processes=2))
    ctx = JobContext(store, job_id, queue.job_spec(queue.job(store, job_id)), Cache(home))
    loaded = ctx.load_model(str(teacher))
    started = time.time()
    with pytest.raises(JobFailed) as failure:
        train_data_parallel(ctx, loaded.model, loaded.model, ctx.spec, torch.device("cpu"), {})
    message = str(failure.value)
    assert message.startswith("training process ") and "no training data" in message, message
    assert "\n" not in message and time.time() - started < 120


@pytest.mark.slow
def test_sigterm_to_the_worker_saves_requeues_and_resumes(teacher, home, store):
    """The worker's SIGTERM reaches the job's process only; it tells rank 0 to save and stop,
    the job goes back to the queue, and the next worker resumes it in 2 processes again."""
    job_id = queue.submit(store, spec(teacher, processes=2, steps=60, checkpoint_every=1000))
    env = {**os.environ, "COMPFAIR_HOME": str(home.root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "worker", "--once"],
                            cwd=Path(__file__).resolve().parents[1], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and (queue.job(store, job_id)["progress"] or 0) <= 0.05:
            assert proc.poll() is None, "the worker exited early"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert queue.job(store, job_id)["status"] == "queued"
    import torch
    saved = torch.load(home.checkpoints_dir / f"job-{job_id}" / "state.pt", weights_only=True)
    assert 0 < saved["step"] < 60

    run_queue(home)
    done = result(store, job_id)
    assert done["resumed_from_step"] == saved["step"] and done["train_processes"] == 2


@pytest.mark.slow
def test_training_processes_of_a_killed_worker_exit_writing_nothing(teacher, home, store):
    """SIGKILL the worker mid-DDP: its training processes notice (rank 0 sees its parent gone
    while waiting for its answer; the others lose rank 0) and exit, so none of them writes a
    checkpoint after another worker takes the job over."""
    job_id = queue.submit(store, spec(teacher, processes=2, steps=2000, checkpoint_every=1000))
    env = {**os.environ, "COMPFAIR_HOME": str(home.root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "worker", "--once"],
                            cwd=Path(__file__).resolve().parents[1], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and (queue.job(store, job_id)["progress"] or 0) <= 0.001:
        time.sleep(0.05)
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                              text=True).stdout.split()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(children) >= 2, children          # the two ranks (and a resource tracker)
    deadline = time.time() + 60
    alive = children
    while alive and time.time() < deadline:
        alive = [c for c in alive if Path(f"/proc/{c}").exists()
                 and Path(f"/proc/{c}/stat").read_text().split()[2] != "Z"]
        time.sleep(0.2)
    for pid in alive:                            # do not leave them behind if the test fails
        os.kill(int(pid), signal.SIGKILL)
    assert not alive, f"training processes {alive} outlived their worker by 60 s"
    assert not (home.checkpoints_dir / f"job-{job_id}" / "state.pt").exists()
