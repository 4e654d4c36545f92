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
from tests.test_reliability_errors import one_error_line, run_cli
from tests.test_reliability_faults import REPO, worker_env


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
    from engine.evaluation.scorers import load_scorer
    from engine.errors import ScorerError
    marker = tmp_path / "the-payload-ran"
    checkpoint = _evil_checkpoint(tmp_path, marker)
    with pytest.raises(ScorerError, match="it names io.open") as info:
        load_scorer(f"detoxify:{checkpoint}")
    assert "\n" not in str(info.value) and not marker.exists()


# -- 3. numbers too large for the store, and too large to run ----------------------------------
BIG = str(10**20)           # 99999999999999999999 + 1: beyond SQLite's 64-bit INTEGER
HUGE = str(10**30)
TWO_70 = str(2**70)
ID_RANGE = "[1, 9,223,372,036,854,775,807]"


@pytest.mark.parametrize("argv,expected", [
    (["show", "99999999999999999999"], f"argument id: 99999999999999999999 is out of range: an id must be in {ID_RANGE}"),
    (["show", "--job", BIG], f"argument id: {BIG} is out of range"),
    (["logs", HUGE], f"argument id: {HUGE} is out of range: an id must be in {ID_RANGE}"),
    (["cancel", TWO_70], f"argument ids: {TWO_70} is out of range: an id must be in {ID_RANGE}"),
    (["retry", "1", TWO_70], f"argument ids: {TWO_70} is out of range"),
    (["compare", "1", BIG], f"argument ids: {BIG} is out of range"),
    (["compare", "1", "2", "--baseline", BIG], f"argument --baseline: {BIG} is out of range: a run id"),
    (["export", "--runs", BIG], f"argument --runs: {BIG} is out of range"),
    (["jobs", "--limit", BIG], f"argument --limit: {BIG} is out of range"),
    (["plan", BIG], f"argument run: {BIG} is out of range: a run id"),
    (["submit", "eval", "--no-worker", "--priority", TWO_70],
     f"argument --priority: {TWO_70} is out of range: a priority must be in "
     "[-2,147,483,647, 2,147,483,647]"),
    (["submit", "eval", "--no-worker", "--priority", str(-2**31)], "argument --priority: -2147483648 is out of range"),
    (["submit", "eval", "--no-worker", "--after", BIG], f"argument --after: {BIG} is out of range: a job id"),
    (["submit", "eval", "--no-worker", "--model", f"job:{BIG}", "--data", "builtin"],
     f"model reference 'job:{BIG}': the id must be in {ID_RANGE}"),
    (["submit", "eval", "--no-worker", "--model", f"model:{TWO_70}", "--data", "builtin"],
     f"model reference 'model:{TWO_70}': the id must be in {ID_RANGE}"),
    (["card", f"job:{BIG}"], f"model reference 'job:{BIG}': the id must be in {ID_RANGE}"),
], ids=lambda v: " ".join(v)[:40] if isinstance(v, list) else None)
def test_ids_and_integers_beyond_64_bits_exit_2_naming_value_and_range(argv, expected, store, capsys):
    line = _refused(argv, capsys, store)
    assert expected in line, line
    assert "OverflowError" not in line and "internal error" not in line


@pytest.mark.parametrize("option,value,expected", [
    ("--seed", TWO_70, f"seed must be in [0, 4,294,967,295], got {TWO_70}"),
    ("--seed", "-1", "seed -1 must be >= 0"),
    ("--samples-per-prompt", str(10**12), "samples_per_prompt must be in [1, 10,000], got 1000000000000"),
    ("--max-new-tokens", "5000", "max_new_tokens must be in [1, 4096], got 5000"),
    ("--batch-size", "65537", "batch_size must be in [1, 65,536], got 65537"),
    ("--bootstrap-samples", str(10**7), "bootstrap_samples must be in [100, 1,000,000], got 10000000"),
    ("--max-prompts", str(10**8), "max_prompts must be in [1, 10,000,000], got 100000000"),
    ("--temperature", "1e300", "temperature must be in (0.0, 100.0], got 1e+300"),
    ("--context-length", HUGE, f"context_length must be in [8, 1,048,576], got {HUGE}"),
], ids=lambda v: v if isinstance(v, str) and v.startswith("--") else None)
def test_spec_fields_outside_their_documented_range_are_refused(option, value, expected, store, capsys):
    line = _refused(["submit", "eval", "--no-worker", "--data", "builtin", option, value], capsys, store)
    assert line == f"error: {expected}", line


def test_ranges_hold_for_sweeps_studies_other_kinds_and_the_help(tmp_path, store, capsys):
    line = _refused(["submit", "eval", "--no-worker", "--data", "builtin",
                     "--sweep", f"seed=1,{TWO_70}"], capsys, store)
    assert line == f"error: seed must be in [0, 4,294,967,295], got {TWO_70}"
    line = _refused(["submit", "distill", "--no-worker", "--steps", str(10**9)], capsys, store)
    assert line == "error: steps must be in [1, 10,000,000], got 1000000000"
    line = _refused(["submit", "prune", "--no-worker", "--calibration-samples", BIG], capsys, store)
    assert line == f"error: calibration_samples must be in [1, 100,000], got {BIG}"
    line = _refused(["submit", "quantize", "--no-worker", "--group-size", TWO_70], capsys, store)
    assert line == f"error: group_size must be in [1, 65,536], got {TWO_70}"
    study = tmp_path / "big.toml"
    study.write_text('teacher = "smollm2"\n[[eval]]\nsuite = "toxicity"\ndata = "builtin"\n'
                     "samples_per_prompt = 1000000000000\n")
    code, out, err = run_cli(["study", str(study), "--no-wait"], capsys)
    assert code == 2 and "samples_per_prompt must be in [1, 10,000], got 1000000000000" in \
        err.strip().splitlines()[-1], err
    assert queue.counts(store) == {}
    # the edges are accepted
    code, out, err = run_cli(["submit", "eval", "--no-worker", "--data", "builtin", "--seed",
                              str(2**32 - 1), "--samples-per-prompt", "10000", "--priority",
                              str(2**31 - 1)], capsys)
    assert code == 0, err
    # every numeric field states its range in --help
    from engine.spec_values import FIELD_RANGES
    from engine.specs import SPEC_TYPES
    import dataclasses
    for kind, cls in SPEC_TYPES.items():
        code, out, err = run_cli(["submit", kind, "--help"], capsys)
        text = " ".join(out.split())
        for f in dataclasses.fields(cls):
            if f.name in FIELD_RANGES:
                flag = "--" + f.name.replace("_", "-")
                described = text.split(f"{flag} {f.name.upper()} ")[-1][:120]
                assert f"range {FIELD_RANGES[f.name].text()}" in described, (kind, flag, described)
    code, out, err = run_cli(["submit", "eval", "--help"], capsys)
    assert "higher runs first ([-2,147,483,647, 2,147,483,647])" in " ".join(out.split())


def test_a_huge_bootstrap_samples_setting_is_refused(home, store, capsys):
    from engine.settings import SettingsError, load_settings
    (home.root / "settings.toml").write_text("[statistics]\nbootstrap_samples = 1000000000\n")
    with pytest.raises(SettingsError) as info:
        load_settings(home.root)
    assert str(info.value) == "statistics.bootstrap_samples 1000000000 must be in [100, 1,000,000]"
    code, out, err = run_cli(["compare", "1", "2"], capsys)
    assert code == 2 and one_error_line(err) == f"error: {info.value}", err
    (home.root / "settings.toml").write_text("[statistics]\nbootstrap_samples = 1000000\n")
    assert load_settings(home.root).statistics.bootstrap_samples == 1_000_000


def test_numbers_too_large_through_real_processes(home, tmp_path):
    """As a shell sees them: exit 2 and one line, no traceback, nothing written to cli.log."""
    for argv in (["show", "99999999999999999999"], ["logs", HUGE], ["cancel", TWO_70],
                 ["submit", "eval", "--no-worker", "--priority", TWO_70],
                 ["submit", "eval", "--no-worker", "--data", "builtin", "--seed", TWO_70]):
        done = subprocess.run([sys.executable, "-m", "engine.cli", *argv], cwd=REPO,
                              env=worker_env(home), capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (argv, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: "), done.stderr
        assert "out of range" in done.stderr or "must be in" in done.stderr
    assert not (home.logs_dir / "cli.log").exists()


# -- 4. a CSV field larger than the csv module's limit ------------------------------------------
CROWS_HEADER = "sent_more,sent_less,stereo_antistereo,bias_type\n"


@pytest.mark.parametrize("content,line_no", [
    (CROWS_HEADER + "A short one,Another one,stereo,race\n" + '"' + "x" * 200_000 + '",Other,stereo,race\n', 3),
    ('"' + "y" * 200_000 + '",sent_less,stereo_antistereo,bias_type\nA,B,stereo,race\n', 1),
], ids=["in-a-row", "in-the-header"])
def test_a_csv_with_a_200_kb_field_exits_2_naming_file_line_and_limit(content, line_no, tmp_path,
                                                                      store, home, capsys):
    data = tmp_path / "crows-big.csv"
    data.write_text(content, encoding="utf-8")
    expected = (f"error: {data}, line {line_no}: a field is larger than the CSV field limit "
                "(131,072 characters); a CrowS-Pairs sentence is far shorter")
    argv = ["submit", "eval", "--suite", "crows_pairs", "--data", str(data), "--no-worker"]
    assert _refused(argv, capsys, store) == expected
    # a folder holding it reads the same
    assert _refused(argv[:5] + [str(tmp_path)] + argv[6:], capsys, store) == expected
    done = subprocess.run([sys.executable, "-m", "engine.cli", *argv], cwd=REPO,
                          env=worker_env(home), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip() == expected, done.stderr
    # in a job (queued without the submit check), the same reason
    from engine.errors import DataError
    from engine.evaluation.dataset_readers import read_crows_pairs
    with pytest.raises(DataError) as info:
        read_crows_pairs(data)
    assert f"error: {info.value}" == expected
