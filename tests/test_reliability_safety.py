"""Safety and store health.

Safety: no shell with user values; a model folder that asks for its own code is refused (the
code never runs); checkpoints are unpickled only from paths the user named; model and run names
can never write outside $COMPFAIR_HOME; the store and logs are readable by their owner only.

Health: `compfair doctor --check` finds a job stuck in running whose worker is dead, orphan
rows, runs left running after their job ended and half-written model folders; `--repair` fixes
them (a stuck job is requeued, or failed when out of attempts) without touching a job a live
worker is running; a second `--check` is clean."""

from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import signal
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from engine import queue, worker_lock
from engine.cli import main
from engine.paths import Home, safe_name
from engine.specs import DistillSpec, EvalSpec, PruneSpec
from engine.store import Store
from tests.test_reliability_faults import REPO, assert_store_ok, run_inline

SOURCES = sorted(p for folder in ("engine", "tui") for p in (REPO / folder).rglob("*.py"))


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Call):
            yield node


def _name(call: ast.Call) -> str:
    return ast.unparse(call.func)


# -- no shell, no remote code, no unpickling of files nobody named ---------------------------------
def test_no_shell_no_remote_code_and_only_safe_torch_loads_in_the_source():
    assert len(SOURCES) > 30
    shell, remote, unsafe_loads, loads = [], [], [], 0
    for path in SOURCES:
        for call in _calls(path):
            where = f"{path.relative_to(REPO)}:{call.lineno}"
            keywords = {k.arg: k.value for k in call.keywords}
            if _name(call) in ("os.system", "os.popen", "subprocess.getoutput",
                               "subprocess.getstatusoutput"):
                shell.append(where)
            if "shell" in keywords and not (isinstance(keywords["shell"], ast.Constant)
                                            and keywords["shell"].value is False):
                shell.append(where)
            if "trust_remote_code" in keywords and not (
                    isinstance(keywords["trust_remote_code"], ast.Constant)
                    and keywords["trust_remote_code"].value is False) \
                    and ast.unparse(keywords["trust_remote_code"]) != "trust_remote_code":
                remote.append(where)
            if _name(call) == "torch.load":
                loads += 1
                value = keywords.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    unsafe_loads.append(where)
    assert shell == [], f"shell used at {shell}"
    assert remote == [], f"trust_remote_code set at {remote}"
    assert loads >= 1 and unsafe_loads == [], f"torch.load without weights_only=True at {unsafe_loads}"
    # the one function that passes the flag on defaults to off, and nobody turns it on
    import inspect
    from engine import model_loader as registry
    assert inspect.signature(registry._load_pretrained).parameters["trust_remote_code"].default is False


def test_a_model_folder_that_asks_to_run_its_own_code_is_refused(home, store, tiny_gpt2, tmp_path):
    from engine.model_loader import ModelCache, ModelError
    folder = tmp_path / "custom-code-model"
    shutil.copytree(tiny_gpt2, folder)
    marker = tmp_path / "the-code-ran"
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="customgpt", architectures=["CustomModel"],
                  auto_map={"AutoConfig": "configuration_custom.CustomConfig",
                            "AutoModelForCausalLM": "modeling_custom.CustomModel"})
    (folder / "config.json").write_text(json.dumps(config))
    for module in ("configuration_custom.py", "modeling_custom.py"):
        (folder / module).write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    with pytest.raises(ModelError, match="contains custom code") as info:
        ModelCache(home).load(str(folder), store)
    assert "\n" not in str(info.value)
    assert not marker.exists(), "the model folder's code was executed"


def test_a_detoxify_checkpoint_is_read_weights_only(tmp_path, caplog):
    """A Detoxify checkpoint is tensors plus plain dicts: it loads with weights_only=True (no
    warning about pickles needed any more); one whose pickle would run code is refused
    (tests/test_issue31_inputs.py)."""
    from engine.evaluation.scorers import load_scorer
    from tests.test_scorers import build_detoxify_checkpoint
    checkpoint = build_detoxify_checkpoint(tmp_path)
    caplog.set_level(logging.WARNING)
    scorer, _ = load_scorer(f"detoxify:{checkpoint}")
    assert scorer.score(["hello"]).shape == (1,)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not any("pickle" in m for m in warnings), warnings


# -- path traversal ------------------------------------------------------------------------------
EVIL_NAMES = ["../../escaped", "/etc/compfair-escaped", "..", "a/../../b", "~/escaped",
              "..\\..\\escaped", "x" * 300, "nul\0byte", "名前/../../逃げ", ""]


@pytest.mark.parametrize("name", EVIL_NAMES)
def test_safe_names_stay_inside_their_folder(home, name):
    cleaned = safe_name(name)
    assert cleaned and "/" not in cleaned and "\\" not in cleaned and "\0" not in cleaned
    assert cleaned not in (".", "..") and len(cleaned) <= 120
    target = home.inside(home.models_dir, name)
    assert target.parent == home.models_dir.resolve()


def test_derived_model_names_cannot_write_outside_the_home(home, store, tiny_gpt2, tmp_path):
    """Prune and distil jobs named to escape: every model lands in home/models, nothing is
    created anywhere else, and each is registered under its (cleaned) folder."""
    outside = tmp_path / "outside"
    outside.mkdir()
    before = {p for p in tmp_path.rglob("*") if home.root not in p.parents and p != home.root}
    names = ["../../escaped", str(outside / "abs-escape"), "..", "a/../../b", "~/escaped"]
    jobs = [queue.submit(store, PruneSpec(model=str(tiny_gpt2), method="magnitude", sparsity=0.3,
                                          name=name)) for name in names]
    jobs.append(queue.submit(store, DistillSpec(teacher=str(tiny_gpt2), name="../../../distilled",
                                                steps=2, batch_size=2, seq_len=16, warmup_steps=0,
                                                teacher_samples=8, data="builtin")))
    run_inline(home)
    for job_id in jobs:
        job = queue.job(store, job_id)
        assert job["status"] == "done", job["error"]
        path = Path(json.loads(job["result"])["path"]).resolve()
        assert path.parent == home.models_dir.resolve(), path
        assert store.model(json.loads(job["result"])["model_id"])["path"] == str(path)
    after = {p for p in tmp_path.rglob("*") if home.root not in p.parents and p != home.root}
    assert after == before, f"created outside the home: {sorted(after - before)}"
    assert not list(outside.iterdir())
    assert not (Path.home() / "escaped").exists()


# -- owner-only files ------------------------------------------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _wait_gone(pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_store_logs_and_folders_are_owner_only_even_with_a_permissive_umask(tmp_path, tiny_gpt2,
                                                                             monkeypatch):
    from engine import launcher
    old_umask = os.umask(0)
    try:
        home = Home.resolve(tmp_path / "home")
        monkeypatch.setenv("COMPFAIR_HOME", str(home.root))
        store = Store(home)
        queue.submit(store, PruneSpec(model=str(tiny_gpt2), method="magnitude", sparsity=0.3))
        run_inline(home)
        pid = launcher.spawn_detached(home)         # writes logs/worker.log
        os.kill(pid, signal.SIGTERM)
        _wait_gone(pid)                             # the launcher's own thread reaps it
    finally:
        os.umask(old_umask)
    for folder in (home.root, home.models_dir, home.cache_dir, home.logs_dir,
                   home.checkpoints_dir, home.reports_dir):
        assert _mode(folder) == 0o700, folder
    files = [home.db_path, home.logs_dir / "worker.log", home.reserve_path] + \
        [p for p in home.root.glob("compfair.db-*")]
    for path in files:
        assert path.exists() and _mode(path) == 0o600, (path, oct(_mode(path)))
    store.close()


def test_a_home_owned_by_someone_else_is_used_as_it_is(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to hand a folder to another user")
    shared = tmp_path / "shared-home"
    shared.mkdir(mode=0o775)
    os.chown(shared, 65534, 65534)
    os.chmod(shared, 0o775)
    home = Home.resolve(shared)                      # no chmod of a folder that is not ours
    assert _mode(shared) == 0o775 and _mode(home.models_dir) == 0o700


# -- compfair doctor --check / --repair ------------------------------------------------------------
def _raw(home: Home) -> sqlite3.Connection:
    """A connection without foreign-key enforcement: how orphan rows get in (older versions,
    manual edits, a store copied in part)."""
    return sqlite3.connect(home.db_path, isolation_level=None)


def _doctor(capsys, *args: str) -> tuple[int, list[str]]:
    code = main(["doctor", *args])
    return code, capsys.readouterr().out.strip().splitlines()


def test_doctor_finds_and_repairs_stuck_jobs_orphans_and_stale_runs(home, store, tiny_gpt2, capsys):
    dead_pid = 2 ** 22 - 3                           # beyond pid_max defaults: never alive
    host = os.uname().nodename
    now = time.time()
    live_lock = worker_lock.hold(home, "live-worker")  # what makes it this home's worker
    store.db["workers"].insert_all([
        {"id": "dead-worker", "pid": dead_pid, "host": host, "heartbeat_at": now, "status": "busy"},
        {"id": "live-worker", "pid": os.getpid(), "host": host, "heartbeat_at": now, "status": "busy"},
    ])
    # a job whose worker died (requeued), one out of attempts (failed), one really running
    requeue = queue.submit(store, EvalSpec(model="gpt2", seed=1))
    give_up = queue.submit(store, EvalSpec(model="gpt2", seed=2), max_attempts=1)
    live = queue.submit(store, EvalSpec(model="gpt2", seed=3))
    for job_id, worker in ((requeue, "dead-worker"), (give_up, "dead-worker"), (live, "live-worker")):
        store.conn.execute("UPDATE jobs SET status = 'running', worker_id = ?, attempts = 1, "
                           "heartbeat_at = ? WHERE id = ?", (worker, now, job_id))
    store.conn.commit()
    give_up_run = store.start_run(give_up, None, "toxicity", {}, None, None, "x", "cpu")
    # a run still "running" although its job failed (what an older worker left behind)
    ended = queue.submit(store, EvalSpec(model="gpt2", seed=4))
    ended_run = store.start_run(ended, None, "toxicity", {}, None, None, "x", "cpu")
    store.conn.execute("UPDATE jobs SET status = 'failed', error = 'boom' WHERE id = ?", (ended,))
    store.conn.commit()
    # orphan rows
    raw = _raw(home)
    raw.execute("INSERT INTO samples (run_id, key, item_index, sample_index) VALUES (999, '0:0', 0, 0)")
    raw.execute("INSERT INTO metrics (run_id, name, subset, value) VALUES (999, 'x', '', 1.0)")
    raw.execute("INSERT INTO events (job_id, ts, kind, level, message) VALUES (999, 0, 'log', 'info', 'lost')")
    raw.execute("INSERT INTO job_deps (job_id, depends_on) VALUES (?, 998)", (requeue,))
    raw.close()
    # a model folder whose save was cut short
    (home.models_dir / "half-saved.partial").mkdir()
    (home.models_dir / "half-saved.partial" / "model.safetensors").write_bytes(b"\0" * 1000)
    # an earlier model a killed save had moved aside, its place still empty
    (home.models_dir / "kept.replaced.partial").mkdir()
    (home.models_dir / "kept.replaced.partial" / "config.json").write_text("{}")

    code, lines = _doctor(capsys, "--check")
    assert code == 1
    text = "\n".join(lines)
    for expected in (f"job {requeue} is marked running but its worker dead-worker is gone",
                     f"job {give_up} is marked running but its worker dead-worker is gone",
                     f"run {ended_run} is marked running but its job {ended} has ended",
                     "1 samples without a run", "1 metrics without a run", "1 events without a job",
                     "1 dependencies on missing jobs", "2 half-written model folder(s)"):
        assert f"problem: {expected}" in text, (expected, text)
    assert f"job {live} " not in text
    code, lines = _doctor(capsys, "--check", "--json")
    assert code == 1 and len(json.loads("\n".join(lines))) == 8

    # --repair refuses to delete a .partial while a job runs: it says what remains
    code, lines = _doctor(capsys, "--repair")
    assert code == 1 and any(l.startswith("problem: 2 half-written") for l in lines), lines
    assert sum(l.startswith("repaired: ") for l in lines) == 7, lines
    assert (queue.job(store, requeue)["status"], queue.job(store, give_up)["status"]) == ("queued", "failed")
    assert "gave up after 1 attempts" in queue.job(store, give_up)["error"]
    assert store.run(give_up_run)["status"] == "failed" and store.run(ended_run)["status"] == "failed"
    assert queue.job(store, live)["status"] == "running"   # a live worker's job is left alone

    queue.finish(store, live, "done")                        # nothing running any more
    code, lines = _doctor(capsys, "--repair")
    assert code == 0 and lines[-1] == "store is healthy", lines
    assert not (home.models_dir / "half-saved.partial").exists()
    assert (home.models_dir / "kept" / "config.json").exists()              # put back, not deleted
    assert not (home.models_dir / "kept.replaced.partial").exists()
    code, lines = _doctor(capsys, "--check")
    assert (code, lines) == (0, ["store is healthy"])
    assert_store_ok(home)

    run_inline(home)     # the requeued job is claimable again (its model is not cached: it fails)
    assert queue.job(store, requeue)["status"] == "failed"
    assert queue.job(store, requeue)["attempts"] == 2
    live_lock.release()


def test_doctor_rebuilds_a_damaged_index_and_reports_an_unreadable_store(home, store, capsys, tmp_path):
    for seed in range(30):
        queue.submit(store, EvalSpec(model="gpt2", seed=seed))
    # damage an index: rows the table has but the index does not
    store.close()
    raw = _raw(home)
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    index_root = raw.execute("SELECT rootpage FROM sqlite_master WHERE name = 'idx_jobs_spec_hash'").fetchone()
    raw.close()
    assert index_root is not None
    page_size = 4096
    with open(home.db_path, "r+b") as db:
        db.seek((index_root[0] - 1) * page_size)
        header = bytearray(db.read(12))
        header[3:5] = (0).to_bytes(2, "big")          # the index page now claims no cells
        db.seek((index_root[0] - 1) * page_size)
        db.write(bytes(header))
    code, lines = _doctor(capsys, "--check")
    assert code == 1 and lines[0].startswith("problem: integrity check: "), lines
    code, lines = _doctor(capsys, "--repair")
    assert code == 0 and lines[-1] == "store is healthy", lines
    assert integrity_ok(home)

    broken = tmp_path / "broken-home"
    broken.mkdir()
    (broken / "compfair.db").write_bytes(b"not a database" * 500)
    code = main(["--home", str(broken), "doctor", "--check"])
    out, err = capsys.readouterr()
    assert code == 1 and out.startswith("problem: the store ") and "is not an SQLite database" in out, (out, err)


def integrity_ok(home: Home) -> bool:
    conn = sqlite3.connect(home.db_path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
