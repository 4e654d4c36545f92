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
