"""Issue 31 section 0: no command the user types destroys data (real `compfair` processes on
real homes).

1. An output path (`export -o`, `export --format lm-eval -o`, `card -o`, `report -o`,
   `score --output`) that is the store, its WAL/SHM, a log in use or a registered model's file
   is refused in one line (exit 2) and nothing is written.
2. A product (prune) never writes over a folder it did not create: a registered base model's
   folder or a user's own folder in `models/` under the product's name stays as it was; the
   product takes a free name (`-2`, `-3`); a job resuming after a kill reuses its own folder.
3. Two `compfair study --no-wait` of one study at once queue each spec once.
4. A store migrated by a newer compfair is refused for writing (exit 2, one line); listings
   still work."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_interop_export import build_store

COMPFAIR = [sys.executable, "-m", "engine.cli"]
ROOT = Path(__file__).resolve().parents[1]


def cli(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "COMPFAIR_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*COMPFAIR, "--home", str(home), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT,
                          stdin=subprocess.DEVNULL)


def digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path -> sha256), the SQLite files included."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- 1. output paths ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory):
    home, base = build_store(tmp_path_factory.mktemp("nodataloss"))
    (home.logs_dir / "worker.log").write_text("a log in use\n")
    return home, base


def _cases(home, base, tmp: Path):
    db = home.db_path
    model = home.models_dir / "tiny-mag"
    weights = next(p for p in model.iterdir() if p.suffix == ".safetensors")
    link = tmp / "link-to-store.csv"
    link.symlink_to(db)
    hard = tmp / "hard-link.db"
    os.link(db, hard)
    return [
        (["export", "-o", str(db)], db, "the compfair store"),
        (["export", "--format", "json", "-o", str(db) + "-wal"], Path(str(db) + "-wal"), "wal"),
        (["export", "-o", str(db) + "-shm"], Path(str(db) + "-shm"), "shm"),
        (["export", "-o", str(link)], db, "the compfair store"),
        (["export", "-o", str(hard)], hard, "the same file"),
        (["export", "-o", str(home.logs_dir / "worker.log")], home.logs_dir / "worker.log", "logs"),
        (["export", "-o", str(weights)], weights, "registered model 'tiny-mag'"),
        (["export", "-o", str(base / "config.json")], base / "config.json", "registered model"),
        (["export", "--format", "lm-eval", "-o", str(home.logs_dir)], home.logs_dir, "logs"),
        (["export", "--format", "lm-eval", "-o", str(model)], model, "registered model 'tiny-mag'"),
        (["card", "tiny-mag", "-o", str(db)], db, "the compfair store"),
        (["card", "tiny-mag", "-o", str(weights)], weights, "registered model 'tiny-mag'"),
        (["card", "tiny-mag", "-o", str(model / "config.json")], model / "config.json", "registered model"),
        (["card", "tiny-mag", "-o", str(base)], base / "README.md", "registered model"),
        (["card", "tiny-mag", "-o", str(home.logs_dir / "cli.log")], home.logs_dir / "cli.log", "logs"),
        (["report", "nostudy", "-o", str(home.logs_dir)], home.logs_dir, "logs"),
        (["report", "nostudy", "-o", str(model)], model, "registered model 'tiny-mag'"),
        (["report", "nostudy", "-o", str(home.root)], home.root, "it holds compfair.db"),
        (["export", "--format", "lm-eval", "-o", str(home.root)], home.root, "it holds"),
        (["score", "--output", str(db), "-"], db, "the compfair store"),
    ]


def test_outputs_never_overwrite_the_store_logs_or_models(built, tmp_path):
    home, base = built
    cases = _cases(home, base, tmp_path)
    before_home, before_base = digest(home.root), digest(base)
    for args, target, why in cases:
        done = cli(home.root, *args)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, (args, done.returncode, done.stdout, done.stderr)
        assert len(lines) == 1 and "refusing to write" in lines[0] and str(target) in lines[0] \
            and why in lines[0], (args, done.stderr)
        assert "wrote" not in done.stdout, args
    assert digest(base) == before_base
    after = digest(home.root)
    # the store's own files may change only by the listing's reads (WAL checkpoints): compare
    # every other file, and the store's content
    skip = {"compfair.db", "compfair.db-wal", "compfair.db-shm"}
    assert {k: v for k, v in after.items() if k not in skip} == \
        {k: v for k, v in before_home.items() if k not in skip}
    conn = sqlite3.connect(home.db_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM models").fetchone()[0] == 2
    finally:
        conn.close()


def test_outputs_elsewhere_still_written(built, tmp_path):
    home, _ = built
    out = tmp_path / "metrics.csv"
    done = cli(home.root, "export", "-o", str(out))
    assert done.returncode == 0 and out.stat().st_size > 0, done.stderr
    card = home.models_dir / "tiny-mag" / "README.md"        # the card's own place: allowed
    done = cli(home.root, "card", "tiny-mag")
    assert done.returncode == 0 and card.is_file(), done.stderr
    done = cli(home.root, "card", "tiny-mag", "-o", str(home.models_dir / "tiny-mag"))
    assert done.returncode == 0, done.stderr


# -- 2. a product never writes over what it did not create ------------------------------------

def _prune(home: Path, model: Path, *extra: str) -> list[int]:
    done = cli(home, "submit", "prune", "--model", str(model), "--method", "magnitude",
               "--sparsity", "0.5", "--device", "cpu", "--no-worker", "--json", *extra)
    assert done.returncode == 0, done.stderr
    import json
    out = json.loads(done.stdout)
    return out.get("job_ids") or [out["job_id"]]


def _run_worker(home: Path) -> None:
    done = cli(home, "worker", "--once", timeout=300)
    assert done.returncode == 0, done.stderr


def _job_model(home: Path, job_id: int) -> dict:
    conn = sqlite3.connect(home / "compfair.db")
    conn.row_factory = sqlite3.Row
    try:
        job = conn.execute("SELECT status, error FROM jobs WHERE id = ?", (job_id,)).fetchone()
        assert job["status"] == "done", job["error"]
        return dict(conn.execute("SELECT * FROM models WHERE job_id = ?", (job_id,)).fetchone())
    finally:
        conn.close()


def test_a_product_never_overwrites_a_base_model_or_a_users_folder(tmp_path, tiny_gpt2):
    import shutil
    home = tmp_path / "home"
    base = home / "models" / "base"
    shutil.copytree(tiny_gpt2, base)                    # a base model kept in models/
    mine = home / "models" / "mine"
    mine.mkdir()
    (mine / "my-notes.txt").write_text("mine, not compfair's\n")
    taken = home / "models" / "mine-2"                  # the next name is the user's too
    taken.mkdir()
    (taken / "config.json").write_text("{}")
    before = {p: digest(p) for p in (base, mine, taken)}

    # the base model's own folder name, and an unregistered folder of the user's
    on_base, on_mine = _prune(home, base, "--sweep", "name=base,mine")
    _run_worker(home)
    assert {p: digest(p) for p in (base, mine, taken)} == before
    assert Path(_job_model(home, on_base)["path"]).name == "base-2"
    assert Path(_job_model(home, on_mine)["path"]).name == "mine-3"
    assert sorted(p.name for p in (home / "models").iterdir()) == \
        ["base", "base-2", "mine", "mine-2", "mine-3"]
    assert (home / "models" / "mine-3" / "config.json").is_file()


def test_a_resumed_job_writes_into_its_own_folder_again(home, store):
    """A job that saved its folder and died before registering it (or was taken over) finds
    the folder it recorded and writes into it again, not into a new `-2`."""
    from engine import queue
    from engine.compression.model_writer import model_folder
    from engine.context import JobContext
    from engine.specs import PruneSpec
    spec = PruneSpec(model="x", name="product")
    job_id = queue.submit(store, spec)
    other = queue.submit(store, spec.replace(sparsity=0.25))
    ctx = JobContext(store=store, job_id=job_id, spec=spec, models=None)
    first = model_folder(ctx, "product")
    assert first == home.models_dir / "product"
    first.mkdir()                                       # saved, then killed before registering
    (first / "config.json").write_text("{}")
    assert model_folder(JobContext(store=store, job_id=job_id, spec=spec, models=None),
                        "product") == first             # the resumed job: its own folder
    assert model_folder(JobContext(store=store, job_id=other, spec=spec, models=None),
                        "product") == home.models_dir / "product-2"    # another job: not its


# -- 3. two submissions of one study at once ---------------------------------------------------

STUDY = """
name = "race{trial}"
teacher = "{teacher}"

[settings]
seed = {trial}

[[prune]]
label = "magnitude"
method = "magnitude"
sparsity = [0.25, 0.5]

[[eval]]
suite = "toxicity"
data = "builtin"
max_prompts = 4
max_new_tokens = 4
scorer = "profanity"

[[eval]]
suite = "perplexity"
data = "builtin"
context_length = 32
stride = 16
"""

SUBMITTER = r"""
import sys, time
from engine.paths import Home
from engine.store import Store
from engine import queue
from engine.study import submit_study
from engine.study_plan import load_study

folder, start, trials = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
store = Store(Home.resolve())
plans = [load_study(f"{folder}/race{i}.toml") for i in range(trials)]
reusable = queue.find_reusable


def slow_find_reusable(store, spec):     # a wider window between the check and the insert
    found = reusable(store, spec)
    time.sleep(0.02)
    return found


queue.find_reusable = slow_find_reusable
for i, plan in enumerate(plans):
    while time.time() < start + i * 0.4:       # both processes start each trial together
        time.sleep(0.001)
    print(i, len(submit_study(store, plan)), flush=True)
"""


def test_two_submissions_of_one_study_at_once_queue_each_spec_once(tmp_path, tiny_gpt2):
    import time
    trials = 12
    home = tmp_path / "home"
    for i in range(trials):
        (tmp_path / f"race{i}.toml").write_text(STUDY.format(trial=i, teacher=tiny_gpt2))
    env = {**os.environ, "COMPFAIR_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    start = time.time() + 8                    # both have imported and validated by then
    procs = [subprocess.Popen([sys.executable, "-c", SUBMITTER, str(tmp_path), str(start), str(trials)],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert all(o[0].split() == [x for i in range(trials) for x in (str(i), "8")] for o in outs), outs
    conn = sqlite3.connect(home / "compfair.db")
    try:
        per_study = dict(conn.execute("SELECT study, count(*) FROM jobs GROUP BY study"))
        duplicates = conn.execute("SELECT spec_hash, count(*) FROM jobs GROUP BY spec_hash "
                                  "HAVING count(*) > 1").fetchall()
    finally:
        conn.close()
    assert per_study == {f"race{i}": 8 for i in range(trials)}       # 2 prunes + 3 models x 2 evals
    assert duplicates == []


# -- 4. a store made by a newer compfair -------------------------------------------------------

def test_a_newer_compfairs_store_is_never_written(tmp_path, tiny_gpt2):
    from engine.migrations import known_up_to
    home = tmp_path / "home"
    study = tmp_path / "race0.toml"
    study.write_text(STUDY.format(trial=0, teacher=tiny_gpt2))
    queued = cli(home, "submit", "eval", "--model", str(tiny_gpt2), "--suite", "toxicity",
                 "--data", "builtin", "--max-prompts", "2", "--no-worker", "--json")
    assert queued.returncode == 0, queued.stderr
    future = known_up_to() + 7
    conn = sqlite3.connect(home / "compfair.db")
    with conn:
        conn.execute("INSERT INTO _migrations (number, name, applied_at) VALUES (?, 'from the "
                     "future', 0)", (future,))
    conn.close()

    def state() -> tuple:
        c = sqlite3.connect(home / "compfair.db")
        try:
            return tuple(c.execute(q).fetchall() for q in (
                "SELECT * FROM jobs", "SELECT * FROM workers", "SELECT * FROM job_deps",
                "SELECT * FROM studies", "SELECT number FROM _migrations ORDER BY number",
                "SELECT count(*) FROM events"))
        finally:
            c.close()

    before = state()
    want = (f"this store was made by a newer compfair (migration {future}; this version knows "
            f"up to {known_up_to()})")
    for args in (["submit", "eval", "--model", str(tiny_gpt2), "--suite", "toxicity",
                  "--data", "builtin", "--max-prompts", "3", "--no-worker"],
                 ["study", str(study), "--no-wait"], ["worker", "--once"],
                 ["doctor", "--repair"], ["cancel", "1"], ["retry", "1"]):
        done = cli(home, *args)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and want in lines[0], (args, done.stderr)
    for args in (["jobs"], ["jobs", "--json"], ["runs"], ["models"], ["show", "1", "--job"]):
        done = cli(home, *args)                          # reading still works
        assert done.returncode == 0 and not done.stderr.strip(), (args, done.stderr)
    done = cli(home, "doctor", "--check")                # the one problem, said as such
    assert done.returncode == 1 and done.stdout.splitlines() == [f"problem: {home / 'compfair.db'}: "
                                                                 f"{want}: upgrade compfair to write "
                                                                 "to it; listings still work"], done.stdout
    assert state() == before

    # through the engine (the TUI's path): refused as bad input; a raw write: refused by SQLite
    from engine import queue
    from engine.errors import NewerStore
    from engine.paths import Home
    from engine.specs import EvalSpec
    from engine.store import Store
    store = Store(Home.resolve(home))
    try:
        with pytest.raises(NewerStore):
            queue.submit(store, EvalSpec(model=str(tiny_gpt2), suite="toxicity", data="builtin"))
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            with store.conn:
                store.conn.execute("UPDATE jobs SET priority = 5")
    finally:
        store.close()
    assert state() == before
