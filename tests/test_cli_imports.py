"""Import hygiene of the quick commands: `compfair submit`, `jobs`, `runs`, `show`, `cancel`,
`retry` (and `study --dry-run`) are run often on a shared box and must stay quick, so they never
import torch or transformers (seconds of start-up). Model references are checked with
engine.model_refs, which imports neither; loading lives in engine.model_loader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers")


def test_quick_commands_never_import_torch_or_transformers(tmp_path):
    folder = tmp_path / "local-model"          # a Hugging Face folder as far as resolving goes
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (folder / "model.safetensors").write_bytes((2).to_bytes(8, "little") + b"{}")  # no tensors
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    home = tmp_path / "home"
    commands = [
        ["submit", "eval", "--model", str(folder), "--suite", "toxicity", "--data", "builtin",
         "--max-prompts", "2", "--no-worker"],                                  # job 1
        ["submit", "eval", "--model", str(gguf), "--suite", "toxicity", "--data", "builtin",
         "--max-prompts", "2", "--no-worker", "--json"],                        # job 2
        ["submit", "prune", "--model", str(folder), "--method", "wanda",
         "--calibration-data", "builtin", "--no-worker"],                       # job 3
        ["submit", "distill", "--teacher", "job:3", "--data", "builtin", "--no-worker"],
        # Both outcomes are fine here (installed or not); only the imports matter.
        ["submit", "eval", "--model", "smollm2", "--data", "builtin", "--max-prompts", "2",
         "--no-worker"],
        ["submit", "eval", "--model", "some-owner/not-cached", "--no-worker"],  # exit 2 offline
        ["jobs"], ["jobs", "--json"], ["runs"], ["show", "1", "--job"],
        ["show", "1"],                                                          # no run 1: exit 2
        ["cancel", "1"], ["retry", "1", "--no-worker"], ["models"],
        ["study", "quick", "--dry-run"],
    ]
    code = ("import json, sys\n"
            "from engine.cli import main\n"
            f"codes = [main(['--home', {str(home)!r}, *argv]) for argv in {commands!r}]\n"
            f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))\n"
            "print(json.dumps({'codes': codes, 'heavy': heavy}))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=180, env=env)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    # The local references resolve and queue; the uncached hub id and the missing run exit 2.
    assert outcome["codes"][:4] == [0, 0, 0, 0], result.stderr
    assert outcome["codes"][4] in (0, 2) and outcome["codes"][5] == 2, result.stderr
    assert outcome["codes"][6:] == [0, 0, 0, 0, 2, 0, 0, 0, 0], result.stderr
    assert outcome["heavy"] == [], f"the quick commands imported {outcome['heavy']}"
    # nothing was told to start a worker: none may be left running after the test
    assert not (home / "logs" / "worker.log").exists()


def test_the_store_does_not_import_pandas():
    """sqlite-utils would import pandas (half a second on every command) if let."""
    code = "import sys, engine.store, engine.api; print(sorted(m for m in ('pandas', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
