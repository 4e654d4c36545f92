"""Distillation jobs on tiny real GPT-2 and Llama models: KL to the teacher goes down, the
model round-trips through the registry with its lineage, a killed or cancelled job resumes from
its checkpoint, and bad input fails with a one-line reason before any training."""

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
import torch

from engine import queue
from engine.model_loader import ModelCache
from engine.specs import DistillSpec
from engine.worker import Worker
from tests.tinymodels import corpus

REPO = Path(__file__).resolve().parents[1]




def pretrain(source: Path, target: Path, steps: int = 40, seed: int = 0) -> Path:
    """A copy of a tiny random model trained briefly on the tiny corpus, so it has a peaked
    next-token distribution worth distilling (a random teacher is nearly uniform)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    ids = tokenizer(" ".join(corpus()), return_tensors="pt")["input_ids"][0]
    blocks = ids[: len(ids) // 32 * 32].view(-1, 32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        batch = blocks[torch.randint(0, blocks.shape[0], (8,))]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def teachers(tiny_gpt2, tiny_llama, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("teachers")
    return {"gpt2": pretrain(tiny_gpt2, folder / "gpt2-teacher"),
            "llama": pretrain(tiny_llama, folder / "llama-teacher")}


def run_queue(home) -> None:
    Worker(home, once=True, idle_exit_s=None).run()


def cancel_once_under_way(store, home, job_id: int, progress: float, timeout: float = 60) -> None:
    """Run the queue in a thread, cancel `job_id` once it is running past `progress`, and wait
    for the worker to stop."""
    worker = threading.Thread(target=run_queue, args=(home,))
    worker.start()
    deadline = time.time() + timeout
    while time.time() < deadline:
        row = queue.job(store, job_id)
        if row["status"] == "running" and (row["progress"] or 0) > progress:
            break
        time.sleep(0.05)
    queue.cancel(store, job_id)
    worker.join(timeout=timeout)


def finished(store, job_id: int) -> tuple[dict, dict]:
    row = queue.job(store, job_id)
    return row, json.loads(row["result"] or "{}")


def small_spec(teacher: Path, **changes) -> DistillSpec:
    settings = dict(teacher=str(teacher), steps=50, batch_size=8, seq_len=32, teacher_samples=48,
                    learning_rate=3e-3, warmup_steps=5, checkpoint_every=25, data="teacher")
    settings.update(changes)
    return DistillSpec(**settings)


@pytest.mark.parametrize("arch,data,alpha_cos", [("gpt2", "teacher", 0.0),
                                                  ("llama", "corpus-file", 1.0)])
def test_distillation_lowers_kl_and_registers_the_student(arch, data, alpha_cos, teachers, home,
                                                          store, tmp_path):
    if data == "corpus-file":   # a local JSONL file: the other offline data path
        data = tmp_path / "corpus.jsonl"
        data.write_text("\n".join(json.dumps({"text": t}) for t in corpus(300, seed=1)))
    # The toy corpus is random words, so the teacher's next-token distribution is broad; 50
    # steps of hard-label CE on a few thousand tokens overfit them and pull the student *away*
    # from the teacher. The soft-target (KL) and hidden-state terms are what this test is about.
    job_id = queue.submit(store, small_spec(teachers[arch], data=str(data), alpha_clm=0.0,
                                            alpha_ce=1.0, alpha_cos=alpha_cos))
    run_queue(home)
    row, result = finished(store, job_id)
    assert row["status"] == "done", row["error"]
    assert result["kl_after"] < 0.7 * result["kl_before"], result
    # the student keeps the teacher's 2 blocks of highest Block Influence on its training text
    assert result["student_layers"] == 2 and result["layer_choice"] == "block_influence"
    influence = result["block_influence"]
    assert result["kept_layers"] == sorted(sorted(range(4), key=lambda i: -influence[i])[:2])

    model_row = store.model(result["model_id"])
    teacher_row = store.model(result["teacher_model_id"])
    assert model_row["parent_id"] == teacher_row["id"]
    assert model_row["method"] == "distill" and model_row["job_id"] == job_id
    assert model_row["n_layers"] == 2 and model_row["n_params"] < teacher_row["n_params"]
    assert model_row["latency_ms"] > 0 and model_row["size_bytes"] > 0
    params = json.loads(model_row["method_params"])
    assert params["temperature"] == 2.0 and params["alpha_ce"] == 1.0 and params["steps"] == 50
    assert ("loss_cos" in str(store.events(job_id))) == (alpha_cos > 0)
    assert json.loads(model_row["extra"])["kl_to_teacher"] == pytest.approx(result["kl_after"])

    loaded = ModelCache(home).load(model_row["path"], store)
    assert loaded.model_id == model_row["id"]
    assert loaded.model.config.num_hidden_layers == 2
    out = loaded.model.generate(**loaded.tokenizer("the doctor", return_tensors="pt"),
                                max_new_tokens=5, do_sample=False,
                                pad_token_id=loaded.tokenizer.pad_token_id)
    assert out.shape[1] > 2
    assert not (home.checkpoints_dir / f"job-{job_id}" / "state.pt").exists()


def test_ce_baseline_and_explicit_layers(teachers, home, store):
    job_id = queue.submit(store, small_spec(teachers["gpt2"], distill=False, steps=4, warmup_steps=0,
                                            gradient_checkpointing=True,
                                            student_layers=(1, 2, 3)))
    run_queue(home)
    row, result = finished(store, job_id)
    assert row["status"] == "done", row["error"]
    model_row = store.model(result["model_id"])
    assert model_row["method"] == "ce-baseline" and model_row["n_layers"] == 3
    assert result["kept_layers"] == [1, 2, 3] and set(result["final_losses"]) == {"loss", "ce"}


def _wait_for(path: Path, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"worker exited early with {proc.returncode}")
        if time.time() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


def test_killed_worker_resumes_from_checkpoint(teachers, home, store):
    spec = small_spec(teachers["gpt2"], steps=60, batch_size=2, checkpoint_every=10)
    job_id = queue.submit(store, spec)
    state = home.checkpoints_dir / f"job-{job_id}" / "state.pt"
    env = {**os.environ, "COMPFAIR_HOME": str(home.root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "worker", "--once"], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(state, timeout=60, proc=proc)
    finally:
        proc.send_signal(signal.SIGKILL)   # no chance to save anything more
        proc.wait()
    assert queue.job(store, job_id)["status"] == "running"

    run_queue(home)   # finds the dead worker's job, requeues it and resumes it
    row, result = finished(store, job_id)
    assert row["status"] == "done", row["error"]
    assert result["resumed_from_step"] >= 10 and result["resumed_from_step"] % 10 == 0
    assert result["steps"] == 60
    events = [e["message"] for e in store.events(job_id)]
    assert any("resuming from the checkpoint" in m for m in events)


def test_cancel_saves_a_checkpoint_and_retry_resumes(teachers, home, store):
    spec = small_spec(teachers["llama"], steps=200, batch_size=2, checkpoint_every=1000,
                      data="builtin")
    job_id = queue.submit(store, spec)
    cancel_once_under_way(store, home, job_id, 0.03)
    row = queue.job(store, job_id)
    assert row["status"] == "cancelled"
    saved = torch.load(home.checkpoints_dir / f"job-{job_id}" / "state.pt", weights_only=True)
    assert 0 < saved["step"] < 200   # saved at cancel, not at a checkpoint_every boundary

    queue.retry(store, job_id)
    run_queue(home)
    row, result = finished(store, job_id)
    assert row["status"] == "done", row["error"]
    assert result["resumed_from_step"] == saved["step"]


def _other_tokenizer_model(folder: Path) -> Path:
    """A tiny GPT-2 whose tokenizer was trained on different text."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([f"sample number {i} of another language" for i in range(200)],
                            vocab_size=300, special_tokens=["<|endoftext|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>")
    folder.mkdir(parents=True)
    tokenizer.save_pretrained(folder)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1,
                               n_head=2)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("changes,reason", [
    (dict(student_layers=(0, 7)), "student_layers (0, 7) name layer 7, but teacher"),
    (dict(student_layers=(0, 1, 2, 3)), "keep all 4 layers"),
    (dict(data="/no/such/file.jsonl"), "data file '/no/such/file.jsonl' does not exist"),
    (dict(seq_len=1024), "seq_len 1024 is longer than"),
    ("other-tokenizer", "use different tokenizers"),
    ("bad-jsonl", "line 2 is not valid JSON"),
])
def test_bad_input_fails_with_one_line_reason(changes, reason, tiny_gpt2, home, store, tmp_path):
    if changes == "other-tokenizer":
        changes = dict(student=str(_other_tokenizer_model(tmp_path / "other")))
    elif changes == "bad-jsonl":
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"text": "fine"}\nnot json\n')
        changes = dict(data=str(bad))
    job_id = queue.submit(store, small_spec(tiny_gpt2, **changes))
    run_queue(home)
    row = queue.job(store, job_id)
    assert row["status"] == "failed"
    assert reason in row["error"] and "\n" not in row["error"]
    assert not any(e["message"].startswith("checkpoint") for e in store.events(job_id))
