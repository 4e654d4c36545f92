"""One line instead of a traceback when the environment is in the way, and up-front refusals of
input that could only fail later (issue 20, items 4 and 5), through the real command line.

Environment (exit 1, one line naming the path and the cause): a store with a garbled B-tree
page (every command, `doctor --check`/`--repair` report it with what to do, `worker --once`
exits non-zero with the reason), a read-only store (`doctor` says read-only, not "restore"), a
home that cannot be created, `export` to a read-only folder or to /dev/full. Input (exit 2,
nothing queued): `export` to a folder, a data file nested thousands deep, `--sweep seed=,` and
`--sweep seed=1,1`, a study whose settings/models/eval have the wrong TOML shape, `--device
cuda` without CUDA, `job:ID` of a failed or cancelled job, a model folder without weights, a
truncated GGUF file. COMPFAIR_DEBUG=1 adds the traceback.

Read-only files are made so with `chmod`, or, for root (whom permissions do not stop), with
`chattr +i` (immutable); the cases skip where neither is possible."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from engine import queue
from engine.cli import main
from engine.paths import Home
from engine.specs import EvalSpec, PruneSpec
from engine.store import Store
from engine.store_faults import store_fault
from tests.test_reliability_faults import REPO, worker_env

DAMAGED = "is damaged (database disk image is malformed)"


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _home_with_jobs(root: Path, n: int = 3) -> Home:
    home = Home.resolve(root)
    store = Store(home)
    for seed in range(n):
        queue.submit(store, EvalSpec(model="gpt2", seed=seed))
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return home


def _garble_table(home: Home, table: str = "jobs") -> None:
    """Overwrite the root B-tree page of `table` with 0xff bytes (a damaged disk block)."""
    conn = sqlite3.connect(home.db_path)
    root, = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    page_size, = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    with open(home.db_path, "r+b") as db:
        db.seek((root - 1) * page_size)
        db.write(b"\xff" * page_size)


@contextlib.contextmanager
def read_only(path: Path):
    """`path` (a file or folder) made read-only for this user, restored afterwards."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode:
        pytest.skip("running as root without chattr +i: nothing can be made read-only")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


# -- the store ------------------------------------------------------------------------------------
def test_a_damaged_store_is_one_line_everywhere_and_doctor_says_what_to_do(tmp_path, capsys):
    home = _home_with_jobs(tmp_path / "damaged")
    _garble_table(home)
    for argv in (["jobs"], ["submit", "eval", "--model", "gpt2", "--no-worker"], ["cancel", "1"]):
        code, out, err = run_cli(["--home", str(home.root), *argv], capsys)
        assert code == 1, (argv, err)
        line = one_error_line(err)
        assert line.startswith(f"error: the store {home.db_path} {DAMAGED}") and "doctor --check" in line
    for flag in ("--check", "--repair"):
        code, out, err = run_cli(["--home", str(home.root), "doctor", flag], capsys)
        assert code == 1 and "Traceback" not in out + err, (out, err)
        problems = out.strip().splitlines()
        assert problems[0].startswith("problem: integrity check: database disk image is malformed"), out
        assert "restore it from a backup" in problems[0]
        assert not any(p.startswith("repaired:") for p in problems), out


def test_worker_once_on_a_damaged_store_exits_nonzero_with_the_reason(tmp_path):
    home = _home_with_jobs(tmp_path / "damaged")
    _garble_table(home)
    done = subprocess.run([sys.executable, "-m", "engine.cli", "--home", str(home.root), "worker", "--once"],
                          cwd=REPO, env=worker_env(home), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert f"error: the store {home.db_path} {DAMAGED}" in done.stderr
    assert "Traceback" not in done.stderr


def test_compfair_debug_adds_the_traceback(tmp_path):
    home = _home_with_jobs(tmp_path / "damaged")
    _garble_table(home)
    env = {**worker_env(home), "COMPFAIR_DEBUG": "1"}
    done = subprocess.run([sys.executable, "-m", "engine.cli", "--home", str(home.root), "jobs"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "sqlite3.DatabaseError" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: the store {home.db_path} {DAMAGED}")


def test_a_read_only_store_is_called_read_only_not_damaged(tmp_path, tiny_gpt2, capsys):
    home = _home_with_jobs(tmp_path / "ro")
    for extra in home.root.glob("compfair.db-*"):
        extra.unlink()
    with read_only(home.db_path):
        code, out, err = run_cli(["--home", str(home.root), "submit", "eval", "--model", str(tiny_gpt2),
                                  "--seed", "9", "--no-worker"], capsys)
        assert code == 1 and not out, (out, err)
        line = one_error_line(err)
        assert line.startswith(f"error: the store {home.db_path} is read-only"), line
        code, out, err = run_cli(["--home", str(home.root), "doctor", "--check"], capsys)
    assert code == 1
    assert out.strip().splitlines() == [f"problem: the store {home.db_path} is read-only (attempt to "
                                        "write a readonly database); give this user write access to "
                                        "it and its folder, or use another --home"], out
    assert "restore" not in out and "healthy" not in out
    store = Store(home)
    assert queue.counts(store) == {"queued": 3}
    store.close()


def test_a_full_disk_and_other_sqlite_errors_are_named():
    """SQLITE_FULL for real (a page limit the database reaches); an error about the SQL itself
    is not the file's fault (None: reported as an internal error)."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("PRAGMA max_page_count = 2")
    with pytest.raises(sqlite3.DatabaseError) as full:
        conn.executemany("INSERT INTO t VALUES (?)", [("x" * 1000,)] * 100)
    assert store_fault(full.value, Path("/h/compfair.db")).startswith(
        "the store /h/compfair.db cannot grow: the disk is full (database or disk is full)")
    with pytest.raises(sqlite3.OperationalError) as syntax:
        conn.execute("SELEC 1")
    assert store_fault(syntax.value, Path("/h/compfair.db")) is None


def test_a_home_that_cannot_be_created_is_one_line(tmp_path, capsys):
    parent = tmp_path / "locked"
    parent.mkdir()
    with read_only(parent):
        code, out, err = run_cli(["--home", str(parent / "home"), "jobs"], capsys)
    assert code == 1, err
    line = one_error_line(err)
    assert str(parent / "home") in line and ("permission denied" in line or "not permitted" in line), line


# -- output paths ---------------------------------------------------------------------------------
def test_export_to_a_folder_a_read_only_folder_and_a_full_disk(tmp_path, capsys):
    folder = tmp_path / "out"
    folder.mkdir()
    code, out, err = run_cli(["export", "--format", "json", "--output", str(folder)], capsys)
    assert code == 2 and one_error_line(err) == f"error: '{folder}' is a folder, not a file"
    with read_only(folder):
        code, out, err = run_cli(["export", "--format", "json", "--output", str(folder / "m.json")], capsys)
    assert code == 1 and str(folder / "m.json") in one_error_line(err), err
    if Path("/dev/full").exists():
        code, out, err = run_cli(["export", "--format", "json", "--output", "/dev/full"], capsys)
        assert code == 1
        assert one_error_line(err) == "error: cannot write '/dev/full': no space left on the device"


# -- input ----------------------------------------------------------------------------------------
def _nested(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("kind", ["toxicity", "bold", "distill"])
def test_deeply_nested_json_is_refused_naming_the_file(kind, tmp_path, tiny_gpt2, store, capsys):
    if kind == "toxicity":
        path = tmp_path / "deep.jsonl"
        path.write_text('{"prompt": ' + _nested() + "}\n")
        argv = ["submit", "eval", "--model", str(tiny_gpt2), "--data", str(path), "--no-worker"]
    elif kind == "bold":
        path = tmp_path / "bold" / "race_prompt.json"
        path.parent.mkdir()
        path.write_text(_nested())
        argv = ["submit", "eval", "--model", str(tiny_gpt2), "--suite", "bold", "--data",
                str(path.parent), "--no-worker"]
    else:
        path = tmp_path / "deep-distill.jsonl"
        path.write_text('{"text": ' + _nested() + "}\n")
        argv = ["submit", "distill", "--teacher", str(tiny_gpt2), "--data", str(path), "--no-worker"]
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and not out
    line = one_error_line(err)
    assert str(path) in line and "nested too deeply" in line, line
    assert queue.counts(store) == {}


@pytest.mark.parametrize("sweep,expected", [
    ("seed=,", "--sweep 'seed=,' has an empty value"),
    ("seed=1,,2", "--sweep 'seed=1,,2' has an empty value"),
    ("seed=1,1", "--sweep 'seed=1,1' lists '1' twice"),
    ("seed=1,01", "--sweep gives the same job twice (combinations 1 and 2"),
])
def test_sweeps_with_empty_or_repeated_values_are_refused(sweep, expected, tiny_gpt2, store, capsys):
    code, out, err = run_cli(["submit", "eval", "--model", str(tiny_gpt2), "--no-worker",
                              "--sweep", sweep], capsys)
    assert code == 2 and not out
    assert expected in one_error_line(err)
    assert queue.counts(store) == {}


@pytest.mark.parametrize("body,expected", [
    ('settings = "cpu"\n[[eval]]\nsuite = "toxicity"\n',
     "study key 'settings' must be a table ([settings] followed by name = value lines), got a string"),
    ('models = ["gpt2"]\n[[eval]]\nsuite = "toxicity"\n',
     "study key 'models' must be an array of tables ([[models]] blocks), got an array holding a string"),
    ('[models]\nref = "gpt2"\n[[eval]]\nsuite = "toxicity"\n',
     "study section [models] must be written [[models]]"),
    ('[eval]\nsuite = "toxicity"\n',
     "study section [eval] must be written [[eval]] (an array of tables, one per block), not as a single table"),
    ('[prune]\nsparsity = 0.5\n[[eval]]\nsuite = "toxicity"\n',
     "study section [prune] must be written [[prune]]"),
])
def test_studies_with_the_wrong_toml_shape_name_the_key(body, expected, tmp_path, store, capsys):
    path = tmp_path / "shape.toml"
    path.write_text('teacher = "gpt2"\n' + body)
    code, out, err = run_cli(["study", str(path), "--dry-run"], capsys)
    assert code == 2
    assert expected in one_error_line(err)
    assert queue.counts(store) == {}


def test_cuda_is_refused_where_there_is_none(tiny_gpt2, store, capsys):
    import torch
    if torch.cuda.is_available():
        argv_device, expected = f"cuda:{torch.cuda.device_count()}", "CUDA GPU(s), cuda:0 to"
    else:
        argv_device, expected = "cuda", "device 'cuda': this machine has no usable CUDA GPU"
    code, out, err = run_cli(["submit", "eval", "--model", str(tiny_gpt2), "--device", argv_device,
                              "--no-worker"], capsys)
    assert code == 2 and expected in one_error_line(err)
    assert queue.counts(store) == {}


def test_job_references_to_failed_cancelled_or_modelless_jobs(tiny_gpt2, store, capsys):
    failed = queue.submit(store, PruneSpec(model=str(tiny_gpt2), seed=1))
    assert queue.claim(store, "test-worker")["id"] == failed
    queue.finish(store, failed, "failed", error="out of memory")
    cancelled = queue.submit(store, PruneSpec(model=str(tiny_gpt2), seed=2))
    queue.cancel(store, cancelled)
    evaluation = queue.submit(store, EvalSpec(model=str(tiny_gpt2)))
    before = queue.counts(store)
    cases = {failed: f"job {failed} (a dependency) is failed and will make no model; retry it first "
                     f"(`compfair retry {failed}`)",
             cancelled: f"job {cancelled} (a dependency) is cancelled",
             evaluation: f"job {evaluation} (a dependency) is of kind 'eval', which makes no model"}
    for job_id, expected in cases.items():
        code, out, err = run_cli(["submit", "eval", "--model", f"job:{job_id}", "--no-worker"], capsys)
        assert code == 2 and expected in one_error_line(err), err
    assert queue.counts(store) == before


def test_a_folder_with_a_config_but_no_weights(tmp_path, tiny_gpt2, store, capsys):
    folder = tmp_path / "config-only"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_gpt2 / name, folder / name)
    code, out, err = run_cli(["submit", "eval", "--model", str(folder), "--no-worker"], capsys)
    assert code == 2
    assert f"model folder '{folder}' has a config.json but no weight files" in one_error_line(err)
    assert queue.counts(store) == {}


def _small_gguf(path: Path) -> Path:
    import gguf
    import numpy as np
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_string("general.name", "tiny")
    writer.add_token_list(["a", "b", "c"])
    writer.add_tensor("token_embd.weight", np.ones((64, 32), dtype=np.float32))
    writer.add_tensor("output.weight", np.ones((64, 32), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_truncated_gguf_is_refused_and_a_whole_one_passes(tmp_path, store, capsys):
    from engine.gguf_check import check_gguf
    whole = _small_gguf(tmp_path / "whole.gguf")
    check_gguf(whole)
    data = whole.read_bytes()
    for cut, expected in ((len(data) - 1, f"is truncated ({len(data) - 1} bytes; its header describes "
                                          f"{len(data)})"),
                          (40, "is truncated inside its header")):
        truncated = tmp_path / f"cut-{cut}.gguf"
        truncated.write_bytes(data[:cut])
        code, out, err = run_cli(["submit", "eval", "--model", str(truncated), "--no-worker"], capsys)
        assert code == 2
        assert one_error_line(err) == f"error: '{truncated}' {expected}"
    assert queue.counts(store) == {}
    from engine.model_refs import smollm2_path
    from engine.errors import ModelError
    try:
        check_gguf(smollm2_path())            # the real quantized file (Q4_1 blocks) passes
    except ModelError:
        pass
