"""Issue 31, 0b: what compfair creates in a home is owner-only whatever the umask.

Real processes under `umask 000` (the worst case: every file would otherwise be 0666, every
folder 0777): the command line's crash log (`logs/cli.log`) is 0600, and a derived model saved
by a real worker is 0700 for its folders and 0600 for its files."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap

from engine import queue
from engine.specs import PruneSpec
from tests.test_reliability_faults import REPO, worker_env


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _umask_zero() -> None:          # runs in the child, before exec
    os.umask(0)


def test_cli_log_is_owner_only_under_umask_zero(home):
    """An internal error of the command line writes its traceback to logs/cli.log: 0600, and
    an existing looser log is tightened."""
    script = textwrap.dedent("""
        import argparse, sys
        from engine.cli import _log_traceback
        args = argparse.Namespace(home=sys.argv[1], verbose=False, command="show")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            print(_log_traceback(args))
    """)
    for attempt in (1, 2):
        done = subprocess.run([sys.executable, "-c", script, str(home.root)], cwd=REPO,
                              env=worker_env(home), capture_output=True, text=True, timeout=60,
                              preexec_fn=_umask_zero)
        assert done.returncode == 0, done.stderr
        log = home.logs_dir / "cli.log"
        assert done.stdout.strip() == str(log)
        assert _mode(log) == 0o600, oct(_mode(log))
        assert "RuntimeError: boom" in log.read_text()
        os.chmod(log, 0o666)               # a log made by an older compfair: tightened next time
    assert _mode(home.logs_dir) == 0o700


def test_derived_model_is_owner_only_under_umask_zero(home, store, tiny_gpt2):
    """A prune job run by `compfair worker --once` under umask 000: the model folder and
    every folder under it 0700, every file 0600."""
    job_id = queue.submit(store, PruneSpec(model=str(tiny_gpt2), method="magnitude", sparsity=0.5))
    done = subprocess.run([sys.executable, "-m", "engine.cli", "worker", "--once"], cwd=REPO,
                          env=worker_env(home), capture_output=True, text=True, timeout=180,
                          preexec_fn=_umask_zero)
    job = queue.job(store, job_id)
    assert job["status"] == "done", (job["error"], done.stderr[-2000:])
    folder = home.models_dir / os.path.basename(json.loads(job["result"])["path"])
    assert folder.is_dir() and folder.parent == home.models_dir
    modes = {str(p.relative_to(home.root)): _mode(p) for p in [folder, *folder.rglob("*")]}
    assert any(os.path.isfile(home.root / p) for p in modes)
    loose = {p: oct(m) for p, m in modes.items()
             if m != (0o700 if os.path.isdir(home.root / p) else 0o600)}
    assert not loose, loose
    assert _mode(home.models_dir) == 0o700 and _mode(home.root) == 0o700
