"""Issue 31 (sections 0b and 2): inputs refused at submit instead of failing, or doing harm,
later. Each case goes through the real command line (`engine.cli.main`, and a few through
`python -m engine.cli` in a real process): exit code 2, one `error: ...` line naming the value,
nothing queued.

- a model folder whose config.json asks for its own code (`auto_map`, a model_type
  transformers does not implement);
- a `detoxify:PATH` checkpoint whose pickle would run code: loaded with weights_only=True, so
  it is refused and its payload never runs;
- ids and integers beyond SQLite's 64-bit range, and spec fields outside their documented range;
- a CSV field larger than the csv module's limit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine import queue
from engine.cli import main
from tests.test_reliability_faults import REPO, worker_env


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:          # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _refused(argv: list[str], capsys, store=None) -> str:
    code, out, err = run_cli(argv, capsys)
    assert code == 2, (argv, out, err)
    line = one_error_line(err)
    if store is not None:
        assert queue.counts(store) == {}, "something was queued"
    return line


# -- 1. a model folder that asks for custom code ------------------------------------------------
def _custom_model(tiny_gpt2: Path, folder: Path, **changes) -> Path:
    shutil.copytree(tiny_gpt2, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("changes,expected", [
    ({"auto_map": {"AutoConfig": "configuration_custom.CustomConfig",
                   "AutoModelForCausalLM": "modeling_custom.CustomModel"}},
     "asks to run its own code (config.json auto_map: AutoConfig, AutoModelForCausalLM)"),
    ({"model_type": "no-such-architecture-xyz"},
     "has model_type 'no-such-architecture-xyz', which this transformers"),
], ids=["auto_map", "unknown-model_type"])
def test_a_model_folder_asking_for_custom_code_is_refused_at_submit(changes, expected, tiny_gpt2,
                                                                    tmp_path, store, capsys):
    folder = _custom_model(tiny_gpt2, tmp_path / "custom-model", **changes)
    for argv in (["submit", "eval", "--model", str(folder), "--no-worker", "--data", "builtin"],
                 ["submit", "prune", "--model", str(folder), "--no-worker"]):
        line = _refused(argv, capsys, store)
        assert f"model folder {str(folder)!r}" in line and expected in line, line
        assert "trust_remote_code is off" in line
    # the same folder without the request is accepted (the check looks at the config only)
    code, out, err = run_cli(["submit", "eval", "--model", str(tiny_gpt2), "--no-worker",
                              "--data", "builtin"], capsys)
    assert code == 0, err


def test_a_custom_code_folder_in_a_study_is_refused_before_anything_is_queued(tiny_gpt2, tmp_path,
                                                                             store, capsys):
    folder = _custom_model(tiny_gpt2, tmp_path / "custom-model", auto_map={"AutoModel": "m.M"})
    study = tmp_path / "study.toml"
    study.write_text(f'teacher = {json.dumps(str(folder))}\n[[prune]]\nsparsity = 0.5\n'
                     '[[eval]]\nsuite = "toxicity"\ndata = "builtin"\n')
    code, out, err = run_cli(["study", str(study), "--no-wait"], capsys)
    assert code == 2, (out, err)
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "asks to run its own code" in last and str(folder) in last
    assert queue.counts(store) == {}


# -- 2. a detoxify checkpoint whose pickle would run code ---------------------------------------
class _Payload:
    """Unpickled with weights_only=False, this creates the (harmless, empty) marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_checkpoint(folder: Path, marker: Path) -> Path:
    import torch
    path = folder / "shared.ckpt"
    torch.save({"config": {"arch": {"args": {"model_type": "bert-base-uncased",
                                             "model_name": "BertForSequenceClassification",
                                             "tokenizer_name": "BertTokenizer", "num_classes": 6}},
                           "dataset": {"args": {"classes": ["toxic"]}}},
                "state_dict": {}, "payload": _Payload(str(marker))}, path)
    return path


def test_a_detoxify_checkpoint_whose_pickle_runs_code_is_refused_and_never_runs(tmp_path, store,
                                                                                capsys):
    import torch
    marker = tmp_path / "the-payload-ran"
    # the file is a real threat: an unsafe load runs the payload
    proof = tmp_path / "proof"
    (tmp_path / "proof-folder").mkdir()
    torch.load(_evil_checkpoint(tmp_path / "proof-folder", proof), weights_only=False)
    assert proof.exists()
    checkpoint = _evil_checkpoint(tmp_path, marker)
    expected = (f"error: detoxify checkpoint {str(checkpoint)!r} is refused: it holds more than "
                "tensors and plain values (it names io.open)")
    # at submit (the one validation entry), a study file naming it, and `compfair score`
    line = _refused(["submit", "eval", "--suite", "toxicity", "--data", "builtin", "--no-worker",
                     "--scorer", f"detoxify:{checkpoint}"], capsys, store)
    assert line.startswith(expected), line
    study = tmp_path / "shared-study.toml"
    study.write_text('teacher = "smollm2"\n[[eval]]\nsuite = "toxicity"\ndata = "builtin"\n'
                     f'scorer = {json.dumps("detoxify:" + str(checkpoint))}\n')
    code, out, err = run_cli(["study", str(study), "--no-wait"], capsys)
    assert code == 2 and err.strip().splitlines()[-1].startswith(expected), err
    texts = tmp_path / "texts.txt"
    texts.write_text("hello\n")
    line = _refused(["score", str(texts), "--scorer", f"detoxify:{checkpoint}"], capsys)
    assert line.startswith(expected), line
    assert queue.counts(store) == {}
    assert not marker.exists(), "the checkpoint's pickle payload ran"


def test_a_job_given_such_a_checkpoint_fails_in_one_line_without_running_it(tmp_path):
    """In the worker (a job queued before the check, or a file swapped after submit), the
    scorer refuses the same way."""
    from engine.evaluation.scorers import ScorerError, load_scorer
    marker = tmp_path / "the-payload-ran"
    checkpoint = _evil_checkpoint(tmp_path, marker)
    with pytest.raises(ScorerError, match="it names io.open") as info:
        load_scorer(f"detoxify:{checkpoint}")
    assert "\n" not in str(info.value) and not marker.exists()
