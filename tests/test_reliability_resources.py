"""Running out of room and out of memory.

Disk full: a worker process runs under a file-size limit (RLIMIT_FSIZE; a write past it fails
with EFBIG, the same failure path as ENOSPC on a full disk), so a write fails half-way through
a job: either the store's own write-ahead log or a derived model being saved. The job fails with
a one-line reason, the store passes its integrity check, runs finished earlier still open, the
samples stored before the failure are intact, and once there is room again a retry completes the
job from where it stopped. Where this process may mount a small tmpfs (root on Linux), the same
is shown with a real ENOSPC.

Out of memory: a real tiny model whose forward pass raises `torch.OutOfMemoryError` above a
batch size (how a GPU fails; a CPU cannot be made to run out on cue) is put under a real eval
job: the batch is halved until it fits and the job's samples are those of an unconstrained run;
when even one row does not fit, the job fails with the out-of-memory reason."""

from __future__ import annotations

import functools
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import api, queue
from engine.paths import Home
from engine.specs import EvalSpec, PruneSpec
from engine.store import Store
from tests.test_reliability_faults import (REPO, assert_store_ok, run_inline, stored_samples,
                                           worker_env)


def _limit_file_size(limit: int):
    def apply() -> None:                     # runs in the child, before exec
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def run_limited_worker(home: Home, limit: int, timeout: float = 120) -> tuple[int, str]:
    """`compfair worker --once` under a file-size limit; returns (exit code, its log). The log
    goes through a pipe: a pipe is not a file, so the limit does not cut it."""
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "worker", "--once"], cwd=REPO,
                            env=worker_env(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=_limit_file_size(limit))
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def checkpoint(home: Home) -> int:
    """Move the write-ahead log into the database file; returns the database's size."""
    conn = sqlite3.connect(home.db_path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()
    return home.db_path.stat().st_size


def finished_perplexity_run(home: Home, store: Store, model: Path) -> int:
    job_id = queue.submit(store, EvalSpec(model=str(model), suite="perplexity", data="builtin",
                                          context_length=64, stride=64, bootstrap_samples=100))
    run_inline(home)
    job = queue.job(store, job_id)
    assert job["status"] == "done", job["error"]
    return json.loads(job["result"])["run_id"]


def assert_run_opens(store: Store, run_id: int, metrics_before: list[dict]) -> None:
    detail = api.run_detail(store, run_id)
    assert detail["run"]["status"] == "done"
    assert detail["metrics"] == metrics_before and detail["metrics"]


DISK_FULL_REASONS = ("disk full or file size limit", "could not write to the store")


def many_batches_spec(model) -> EvalSpec:
    """A toxicity job of 240 samples in batches of 4: long enough to run out of room midway."""
    return EvalSpec(model=str(model), suite="toxicity", data="builtin", scorer="profanity",
                    max_prompts=60, samples_per_prompt=4, max_new_tokens=8, batch_size=4,
                    bootstrap_samples=100)


# -- disk full: the store itself ---------------------------------------------------------------
def test_store_full_mid_job_fails_it_cleanly_and_a_retry_completes_it(home, store, tiny_gpt2):
    earlier = finished_perplexity_run(home, store, tiny_gpt2)
    earlier_metrics = store.metrics(earlier)
    spec = many_batches_spec(tiny_gpt2)
    job_id = queue.submit(store, spec)
    size = checkpoint(home)
    # Room for the job to start and store some batches (its log grows from an empty file), not
    # for all 240 samples with their progress events and heartbeats.
    code, log = run_limited_worker(home, limit=size + 160_000)

    job = queue.job(store, job_id)
    assert job["status"] == "failed", (job["status"], job["error"], log[-2000:])
    assert any(reason in job["error"] for reason in DISK_FULL_REASONS), job["error"]
    assert "\n" not in job["error"] and "free space and retry" in job["error"]
    assert code == 1 and "error: worker stopped: " in log, log[-2000:]   # not on to the next job
    assert_store_ok(home)
    assert_run_opens(store, earlier, earlier_metrics)
    run_id = store.run_for_job(job_id)["id"]
    assert store.run(run_id)["status"] == "failed"       # not left "running"
    kept = stored_samples(store, run_id)
    assert 0 < len(kept) < 240, "the limit should stop the job half-way"
    assert all(completion is not None and toxicity is not None
               for _, completion, toxicity, _ in kept.values())

    api.retry(store, job_id, start_worker=False)         # room again: it resumes
    run_inline(home)
    job = queue.job(store, job_id)
    assert job["status"] == "done", job["error"]
    final = stored_samples(store, run_id)
    assert len(final) == 240 and {k: final[k] for k in kept} == kept
    assert_store_ok(home)


# -- disk full: a derived model being saved ------------------------------------------------------
def test_model_save_past_the_limit_fails_the_job_and_registers_nothing(home, store, tmp_path):
    from tests.tinymodels import build_gpt2
    model = build_gpt2(tmp_path / "wide-gpt2", n_layer=4, n_embd=256, n_head=4)   # ~13 MB
    earlier = finished_perplexity_run(home, store, model)
    earlier_metrics = store.metrics(earlier)
    job_id = queue.submit(store, PruneSpec(model=str(model), method="magnitude", sparsity=0.5))
    weights = (model / "model.safetensors").stat().st_size
    checkpoint(home)
    code, log = run_limited_worker(home, limit=weights // 3)

    job = queue.job(store, job_id)
    assert job["status"] == "failed", (job["status"], job["error"], log[-2000:])
    assert job["error"].startswith("disk full or file size limit reached while writing"), job["error"]
    assert "\n" not in job["error"]
    assert code == 1 and "error: worker stopped: disk full" in log, log[-2000:]
    assert store.one("SELECT count(*) AS n FROM models WHERE job_id = ?", (job_id,))["n"] == 0
    assert not [p for p in home.models_dir.iterdir() if not p.name.endswith(".partial")]
    assert_store_ok(home)
    assert_run_opens(store, earlier, earlier_metrics)

    api.retry(store, job_id, start_worker=False)
    run_inline(home)
    assert queue.job(store, job_id)["status"] == "done"
    assert [p.name for p in home.models_dir.iterdir()] == [Path(json.loads(
        queue.job(store, job_id)["result"])["path"]).name]


def test_a_failed_model_save_leaves_no_partial_folder(home, store, tmp_path):
    from tests.tinymodels import build_gpt2
    model = build_gpt2(tmp_path / "wide-gpt2", n_layer=2, n_embd=256, n_head=4)
    job_id = queue.submit(store, PruneSpec(model=str(model), method="magnitude", sparsity=0.5))
    checkpoint(home)
    run_limited_worker(home, limit=(model / "model.safetensors").stat().st_size // 3)
    assert queue.job(store, job_id)["status"] == "failed"
    assert list(home.models_dir.iterdir()) == []


class _Saver:
    """Stands in for a model or tokenizer: save_pretrained writes `content`, or fails half-way."""

    def __init__(self, content: bytes, fail: bool = False) -> None:
        self.content, self.fail = content, fail

    def save_pretrained(self, folder: Path) -> None:
        (folder / "weights.bin").write_bytes(self.content[:2])
        if self.fail:
            raise OSError(27, "File too large")
        (folder / "weights.bin").write_bytes(self.content)


def test_a_failed_save_keeps_the_earlier_model_and_removes_its_partial(tmp_path):
    from engine.compression.model_writer import save_model
    target = tmp_path / "pruned"
    save_model(_Saver(b"first"), _Saver(b"first"), target)
    for failing in ((_Saver(b"second", fail=True), _Saver(b"second")),
                    (_Saver(b"second"), _Saver(b"second", fail=True))):
        with pytest.raises(OSError):
            save_model(*failing, target)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned"]
        assert (target / "weights.bin").read_bytes() == b"first"
    save_model(_Saver(b"second"), _Saver(b"second"), target)          # a good save replaces it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned"]
    assert (target / "weights.bin").read_bytes() == b"second"


def test_leftovers_of_a_killed_save_do_not_break_the_next_one(tmp_path):
    from engine.compression.model_writer import save_model
    target = tmp_path / "pruned"
    (tmp_path / "pruned.partial").mkdir()                             # killed while writing
    (tmp_path / "pruned.partial" / "weights.bin").write_bytes(b"half")
    save_model(_Saver(b"first"), _Saver(b"first"), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned"]
    assert (target / "weights.bin").read_bytes() == b"first"

    (tmp_path / "pruned.partial").write_bytes(b"junk")                # even a plain file
    os.replace(target, tmp_path / "pruned.replaced.partial")          # killed mid-swap
    with pytest.raises(OSError):
        save_model(_Saver(b"second", fail=True), _Saver(b"second"), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned"]   # the earlier model is back
    assert (target / "weights.bin").read_bytes() == b"first"


# -- disk full for real: a small tmpfs (root only) -----------------------------------------------
@pytest.fixture
def small_tmpfs(tmp_path):
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_really_full_disk_enospc(small_tmpfs, tiny_gpt2, monkeypatch):
    """The home on a 4 MB tmpfs, nearly filled by another file: SQLite gets ENOSPC
    ("database or disk is full"), the job fails with the disk-full reason, and after the filler
    is deleted a retry completes the job with every earlier sample kept."""
    home = Home.resolve(small_tmpfs / "home")
    monkeypatch.setenv("COMPFAIR_HOME", str(home.root))
    store = Store(home)
    try:
        earlier = finished_perplexity_run(home, store, tiny_gpt2)
        earlier_metrics = store.metrics(earlier)
        spec = many_batches_spec(tiny_gpt2)
        job_id = queue.submit(store, spec)
        checkpoint(home)
        free = shutil.disk_usage(small_tmpfs).free
        filler = small_tmpfs / "filler"
        filler.write_bytes(b"\0" * max(0, free - 160_000))
        proc = subprocess.run([sys.executable, "-m", "engine.cli", "worker", "--once"], cwd=REPO,
                              env=worker_env(home), capture_output=True, text=True, timeout=120)
        job = queue.job(store, job_id)
        assert job["status"] == "failed", (job["error"], proc.stderr[-2000:])
        assert job["error"].startswith("disk full or file size limit reached while writing"), job["error"]
        assert_store_ok(home)
        assert_run_opens(store, earlier, earlier_metrics)
        kept = stored_samples(store, store.run_for_job(job_id)["id"])
        assert 0 < len(kept) < 240

        filler.unlink()
        api.retry(store, job_id, start_worker=False)
        run_inline(home)
        assert queue.job(store, job_id)["status"] == "done"
        final = stored_samples(store, store.run_for_job(job_id)["id"])
        assert len(final) == 240 and {k: final[k] for k in kept} == kept
        assert_store_ok(home)
    finally:
        store.close()


# -- out of memory in generation -----------------------------------------------------------------
@pytest.fixture
def memory_limit(monkeypatch):
    """Models loaded by the registry run out of memory above `limit["rows"]` rows per forward
    pass; `limit["calls"]` records the batch sizes tried."""
    from engine import model_loader as registry

    limit: dict = {"rows": None, "calls": []}
    real_load = registry._load_pretrained

    def load_with_small_memory(*args, **kwargs):
        model, tokenizer = real_load(*args, **kwargs)
        real_forward = model.forward

        @functools.wraps(real_forward)        # keeps the signature the sampler inspects
        def forward(*f_args, **f_kwargs):
            ids = f_kwargs.get("input_ids", f_args[0] if f_args else None)
            limit["calls"].append(ids.shape[0])
            if limit["rows"] is not None and ids.shape[0] > limit["rows"]:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return real_forward(*f_args, **f_kwargs)

        model.forward = forward
        return model, tokenizer

    monkeypatch.setattr(registry, "_load_pretrained", load_with_small_memory)
    return limit


OOM_SPEC = dict(suite="toxicity", data="builtin", scorer="profanity", max_prompts=12,
                samples_per_prompt=4, max_new_tokens=8, batch_size=16, bootstrap_samples=100, seed=2)


def test_out_of_memory_in_generation_halves_the_batch_and_completes(home, store, tiny_gpt2,
                                                                   memory_limit, caplog):
    reference = queue.submit(store, EvalSpec(model=str(tiny_gpt2), label="roomy", **OOM_SPEC))
    run_inline(home)
    memory_limit["rows"] = 3           # prompts of 16 rows: 16 -> 8 -> 4 -> 2 rows fit
    memory_limit["calls"].clear()
    tight = queue.submit(store, EvalSpec(model=str(tiny_gpt2), label="tight", **OOM_SPEC))
    run_inline(home)

    job = queue.job(store, tight)
    assert job["status"] == "done", job["error"]
    run = store.run(json.loads(job["result"])["run_id"])
    summary = json.loads(run["summary"])
    assert summary["final_batch_rows"] == 2
    assert max(memory_limit["calls"]) > 3                 # it did run out, then fitted
    assert any("out of memory at 16 rows; continuing at 8" in r.getMessage() for r in caplog.records)
    ref_run = json.loads(queue.job(store, reference)["result"])["run_id"]
    expected = {r["key"]: r["completion"] for r in store.samples(ref_run)}
    got = {r["key"]: r["completion"] for r in store.samples(run["id"])}
    assert len(got) == 48 and got == expected             # same samples, same count
    assert store.metrics(run["id"]) and [m["value"] for m in store.metrics(run["id"])] == \
        [m["value"] for m in store.metrics(ref_run)]


def test_out_of_memory_at_one_row_fails_the_job_with_the_reason(home, store, tiny_gpt2, memory_limit):
    memory_limit["rows"] = 0           # not even one row fits
    job_id = queue.submit(store, EvalSpec(model=str(tiny_gpt2), **OOM_SPEC))
    run_inline(home)
    job = queue.job(store, job_id)
    assert job["status"] == "failed"
    assert job["error"].startswith("out of memory even at batch size 1: CUDA out of memory")
    assert "\n" not in job["error"]
    assert 1 in memory_limit["calls"]                    # it got down to one row before failing
    assert store.run_for_job(job_id)["status"] == "failed"
