"""The bad-input catalogue: malformed, empty, wrongly encoded or missing data files, unknown or
broken models, out-of-range parameters, unknown suites, domains, groups and scorers, study files
with cycles or typos, and command-line slips. Each goes through the real command line and must
give exit code 2 and exactly one line, `error: ...`, naming the bad value, with no traceback and
nothing queued. Inputs that a job meets only when it runs fail that job with the same one-line
reason when it is queued through the API (which does not pre-check)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine import queue
from tests.test_reliability_errors import run_cli
from engine.specs import DistillSpec, EvalSpec, PruneSpec
from tests.test_reliability_faults import REPO, run_inline, worker_env

GOOD_RTP = '{"prompt": {"text": "The doctor said", "toxicity": 0.1}}\n'


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bad(tmp_path_factory, tiny_gpt2) -> dict[str, Path]:
    """Every bad file of the catalogue, by name."""
    d = tmp_path_factory.mktemp("bad-inputs")
    files = {
        "rtp_malformed": _write(d / "malformed.jsonl", GOOD_RTP + '{"prompt": \n'),
        "rtp_empty": _write(d / "empty.jsonl", ""),
        "rtp_utf16": _write(d / "utf16.jsonl", GOOD_RTP.encode("utf-16")),
        "rtp_no_prompt": _write(d / "no-prompt.jsonl", '{"text": "no prompt object"}\n'),
        "rtp_bad_toxicity": _write(d / "bad-tox.jsonl", '{"prompt": {"text": "x", "toxicity": 7}}\n'),
        "bold_malformed": _write(d / "bold-bad" / "gender_prompt.json", '{"American_actors": {'),
        "bold_shape": _write(d / "bold-shape" / "race_prompt.json", '["not", "a", "mapping"]'),
        "crows_columns": _write(d / "crows-columns.csv", "sent_more,bias_type\nA,race\n"),
        "crows_latin1": _write(d / "crows-latin1.csv",
                               "sent_more,sent_less,stereo_antistereo,bias_type\n"
                               "Caf\xe9 people,Other people,stereo,race\n".encode("latin-1")),
        "crows_empty": _write(d / "crows-empty.csv", ""),
        "text_empty": _write(d / "empty.txt", "  \n\n"),
        "text_latin1": _write(d / "latin1.txt", "na\xefve caf\xe9 text\n".encode("latin-1")),
        "distill_malformed": _write(d / "distill.jsonl", '{"text": "fine"}\nnot json\n'),
        "distill_empty": _write(d / "distill-empty.txt", "\n\n"),
        "study_cycle": _write(d / "cycle.toml", 'teacher = "gpt2"\n[[prune]]\nlabel = "a"\nof = "b"\n'
                              '[[prune]]\nlabel = "b"\nof = "a"\n[[eval]]\nsuite = "toxicity"\n'),
        "study_section_typo": _write(d / "typo.toml", 'teacher = "gpt2"\n[[pune]]\nmethod = "magnitude"\n'
                                     '[[eval]]\nsuite = "toxicity"\n'),
        "study_key_typo": _write(d / "key-typo.toml", 'teacher = "gpt2"\n[[eval]]\nsuite = "toxicity"\n'
                                 'samples_per_promt = 3\n'),
        "study_not_toml": _write(d / "broken.toml", 'teacher = "gpt2\n[[eval]\n'),
        "study_uncached_teacher": _write(d / "uncached.toml", 'teacher = "nobody-here/no-such-teacher"\n'
                                         '[[eval]]\nsuite = "toxicity"\n'),
        "study_utf16": _write(d / "utf16.toml", 'teacher = "gpt2"\n'.encode("utf-16")),
        "study_bad_value": _write(d / "value.toml", 'teacher = "gpt2"\n[[prune]]\nsparsity = 1.5\n'
                                  '[[eval]]\nsuite = "toxicity"\n'),
        "model_no_config": d / "no-config",
        "model_bad_config": d / "bad-config",
        "model_truncated": d / "truncated",
        "fake_gguf": _write(d / "fake.gguf", b"not a gguf file at all"),
        "text_as_model": _write(d / "weights.txt", "hello"),
        "a_file": _write(d / "a-file", "not a folder"),
    }
    files["model_no_config"].mkdir()
    _write(files["model_no_config"] / "model.safetensors", b"")
    shutil.copytree(tiny_gpt2, files["model_bad_config"])
    _write(files["model_bad_config"] / "config.json", '{"model_type": "gpt2",')
    shutil.copytree(tiny_gpt2, files["model_truncated"])
    weights = files["model_truncated"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return files


def _eval(model: str, *extra: str) -> list[str]:
    return ["submit", "eval", "--model", model, "--no-worker", *extra]


# (case id, argv from (bad files, the good tiny model), what the one line must contain)
CATALOGUE = [
    # -- evaluation data ----------------------------------------------------------------------
    ("jsonl-malformed", lambda b, m: _eval(m, "--data", str(b["rtp_malformed"])),
     lambda b: f"{b['rtp_malformed']}, line 2: not valid JSON"),
    ("jsonl-empty", lambda b, m: _eval(m, "--data", str(b["rtp_empty"])),
     lambda b: f"no prompts in {b['rtp_empty']}"),
    ("jsonl-utf16", lambda b, m: _eval(m, "--data", str(b["rtp_utf16"])),
     lambda b: f"{b['rtp_utf16']}, line 1: not UTF-8 text"),
    ("jsonl-missing-field", lambda b, m: _eval(m, "--data", str(b["rtp_no_prompt"])),
     lambda b: "missing field 'prompt'"),
    ("jsonl-toxicity-out-of-range", lambda b, m: _eval(m, "--data", str(b["rtp_bad_toxicity"])),
     lambda b: "'prompt.toxicity' must be a number in [0, 1], got 7"),
    ("json-malformed-bold", lambda b, m: _eval(m, "--suite", "bold", "--data", str(b["bold_malformed"].parent)),
     lambda b: f"{b['bold_malformed']}, line 1: not valid JSON"),
    ("json-wrong-shape-bold", lambda b, m: _eval(m, "--suite", "bold", "--data", str(b["bold_shape"].parent)),
     lambda b: "expected {group: {entity: [prompts]}}, got list"),
    ("csv-missing-column", lambda b, m: _eval(m, "--suite", "crows_pairs", "--data", str(b["crows_columns"])),
     lambda b: "missing column 'sent_less'"),
    ("csv-latin1", lambda b, m: _eval(m, "--suite", "crows_pairs", "--data", str(b["crows_latin1"])),
     lambda b: f"{b['crows_latin1']}: not UTF-8 text"),
    ("csv-empty", lambda b, m: _eval(m, "--suite", "crows_pairs", "--data", str(b["crows_empty"])),
     lambda b: "missing column 'sent_more'"),
    ("text-empty", lambda b, m: _eval(m, "--suite", "perplexity", "--data", str(b["text_empty"])),
     lambda b: "is empty"),
    ("text-latin1", lambda b, m: _eval(m, "--suite", "perplexity", "--data", str(b["text_latin1"])),
     lambda b: "not UTF-8 text"),
    ("data-missing", lambda b, m: _eval(m, "--data", "/no/such/prompts.jsonl"),
     lambda b: "data path '/no/such/prompts.jsonl' does not exist"),
    ("scorer-hf-no-folder", lambda b, m: _eval(m, "--data", "builtin", "--scorer", "hf:/no/such/classifier"),
     lambda b: "hf scorer folder '/no/such/classifier' does not exist"),
    ("scorer-hf-bad-id", lambda b, m: _eval(m, "--data", "builtin", "--scorer", "hf:not a/repo id"),
     lambda b: "hf scorer 'not a/repo id' is neither an existing folder nor a hub id"),
    ("scorer-hf-uncached", lambda b, m: _eval(m, "--data", "builtin", "--scorer", "hf:nobody-here/no-classifier"),
     lambda b: "hf scorer 'nobody-here/no-classifier' is not in the local Hugging Face cache"),
    ("new-tokens-past-positions", lambda b, m: _eval(m, "--data", "builtin", "--max-new-tokens", "256"),
     lambda b: "max_new_tokens must be below the model's 256 positions (at least one is the "
               "prompt's), got 256"),
    ("distill-data-malformed", lambda b, m: ["submit", "distill", "--teacher", m, "--data",
                                            str(b["distill_malformed"]), "--no-worker"],
     lambda b: "line 2 is not valid JSON"),
    ("distill-data-empty", lambda b, m: ["submit", "distill", "--teacher", m, "--data",
                                        str(b["distill_empty"]), "--no-worker"],
     lambda b: "holds no text"),
    ("prune-calibration-latin1", lambda b, m: ["submit", "prune", "--model", m, "--method", "wanda",
                                              "--calibration-data", str(b["text_latin1"]), "--no-worker"],
     lambda b: f"data file {str(b['text_latin1'])!r} is not UTF-8 text"),
    # -- models ---------------------------------------------------------------------------------
    ("model-unknown-hub-id", lambda b, m: _eval("nobody-here/no-such-model", "--data", "builtin"),
     lambda b: "model 'nobody-here/no-such-model' is not in the local Hugging Face cache"),
    ("model-missing-folder", lambda b, m: _eval("./no/such/model", "--data", "builtin"),
     lambda b: "no/such/model' does not exist"),
    ("model-no-config", lambda b, m: _eval(str(b["model_no_config"]), "--data", "builtin"),
     lambda b: "has no config.json"),
    ("model-bad-config", lambda b, m: _eval(str(b["model_bad_config"]), "--data", "builtin"),
     lambda b: "config.json' is not valid JSON"),
    ("model-truncated-safetensors", lambda b, m: _eval(str(b["model_truncated"]), "--data", "builtin"),
     lambda b: "model.safetensors is truncated"),
    ("model-fake-gguf", lambda b, m: _eval(str(b["fake_gguf"]), "--data", "builtin"),
     lambda b: "is not a GGUF file"),
    ("model-text-file", lambda b, m: _eval(str(b["text_as_model"]), "--data", "builtin"),
     lambda b: "is not a .gguf file"),
    ("model-bad-registry-ref", lambda b, m: _eval("model:abc", "--data", "builtin"),
     lambda b: "model reference 'model:abc': expected model:<number>"),
    ("model-missing-job", lambda b, m: _eval("job:999", "--data", "builtin"),
     lambda b: "job 999 (a dependency) does not exist"),
    ("teacher-missing", lambda b, m: ["submit", "distill", "--teacher", "/no/teacher", "--no-worker"],
     lambda b: "'/no/teacher' does not exist"),
    # -- parameters -----------------------------------------------------------------------------
    ("top-p-out-of-range", lambda b, m: _eval(m, "--top-p", "1.5"),
     lambda b: "top_p must be in (0, 1], got 1.5"),
    ("k-zero", lambda b, m: _eval(m, "--samples-per-prompt", "0"),
     lambda b: "samples_per_prompt (k) must be >= 1, got 0"),
    ("k-not-a-number", lambda b, m: _eval(m, "--samples-per-prompt", "many"),
     lambda b: "samples_per_prompt must be int, got 'many'"),
    ("temperature-nan", lambda b, m: _eval(m, "--temperature", "nan"),
     lambda b: "temperature must be float, got 'nan'"),
    ("device-unknown", lambda b, m: _eval(m, "--device", "tpu"),
     lambda b: "device 'tpu' is not one of"),
    ("sparsity-one", lambda b, m: ["submit", "prune", "--model", m, "--sparsity", "1.0", "--no-worker"],
     lambda b: "sparsity must be in [0, 1), got 1.0"),
    ("n-m-syntax", lambda b, m: ["submit", "prune", "--model", m, "--n-m", "2-4", "--no-worker"],
     lambda b: "N:M pattern '2-4' is not of the form N:M"),
    ("intensity-out-of-range", lambda b, m: ["submit", "distill", "--teacher", m, "--intensity", "1.5",
                                            "--no-worker"],
     lambda b: "intensity (student depth fraction) must be in (0, 1), got 1.5"),
    ("sweep-bad-value", lambda b, m: _eval(m, "--sweep", "top_p=0.5,2"),
     lambda b: "top_p must be in (0, 1], got 2.0"),
    ("sweep-syntax", lambda b, m: _eval(m, "--sweep", "top_p"),
     lambda b: "--sweep 'top_p' must look like NAME=V1,V2,..."),
    # -- suites, domains, groups, scorers ---------------------------------------------------------
    ("suite-unknown", lambda b, m: _eval(m, "--suite", "sentiment"),
     lambda b: "suite 'sentiment' is unknown"),
    ("domain-unknown", lambda b, m: _eval(m, "--suite", "bold", "--domains", "martian"),
     lambda b: "BOLD domain 'martian' is unknown"),
    ("group-unknown", lambda b, m: _eval(m, "--suite", "bold", "--data", "builtin", "--groups", "Martians"),
     lambda b: "BOLD group 'Martians' is unknown"),
    ("scorer-unknown", lambda b, m: _eval(m, "--data", "builtin", "--scorer", "perspective"),
     lambda b: "toxicity scorer 'perspective' is unknown"),
    ("scorer-missing-checkpoint", lambda b, m: _eval(m, "--data", "builtin", "--scorer", "detoxify:/no/ckpt"),
     lambda b: "detoxify variant or checkpoint '/no/ckpt' is neither"),
    # -- study files ----------------------------------------------------------------------------
    ("study-cycle", lambda b, m: ["study", str(b["study_cycle"]), "--dry-run"],
     lambda b: "study has a cycle: prune:a -> prune:b -> prune:a"),
    ("study-section-typo", lambda b, m: ["study", str(b["study_section_typo"]), "--dry-run"],
     lambda b: "study has no section 'pune'"),
    ("study-key-typo", lambda b, m: ["study", str(b["study_key_typo"]), "--dry-run"],
     lambda b: "eval job has no setting 'samples_per_promt'"),
    ("study-value", lambda b, m: ["study", str(b["study_bad_value"]), "--dry-run"],
     lambda b: "prune[0]: sparsity must be in [0, 1), got 1.5"),
    ("study-not-toml", lambda b, m: ["study", str(b["study_not_toml"]), "--dry-run"],
     lambda b: "is not valid TOML"),
    ("study-utf16", lambda b, m: ["study", str(b["study_utf16"]), "--dry-run"],
     lambda b: "is not valid TOML"),
    ("study-missing-file", lambda b, m: ["study", "/no/such/study.toml"],
     lambda b: "study file '/no/such/study.toml' does not exist"),
    ("study-unknown-preset", lambda b, m: ["study", "quik"],
     lambda b: "study 'quik' is neither a preset"),
    ("report-unknown-study", lambda b, m: ["report", "never-ran"],
     lambda b: "study 'never-ran' has not been run here"),
    # -- the command line itself ---------------------------------------------------------------
    ("id-not-a-number", lambda b, m: ["show", "abc"],
     lambda b: "argument id: invalid int value: 'abc'"),
    ("command-unknown", lambda b, m: ["frobnicate"],
     lambda b: "invalid choice: 'frobnicate'"),
    ("kind-unknown", lambda b, m: ["submit", "finetune"],
     lambda b: "invalid choice: 'finetune'"),
    ("option-typo", lambda b, m: _eval(m, "--topp", "0.5"),
     lambda b: "unrecognized arguments: --topp 0.5"),
    ("run-missing", lambda b, m: ["show", "999"], lambda b: "run 999 does not exist"),
    ("job-missing", lambda b, m: ["show", "--job", "999"], lambda b: "job 999 does not exist"),
    ("cancel-missing", lambda b, m: ["cancel", "999"], lambda b: "job 999 does not exist"),
    ("retry-missing", lambda b, m: ["retry", "999"], lambda b: "job 999 does not exist"),
    ("logs-missing", lambda b, m: ["logs", "999"], lambda b: "job 999 does not exist"),
    ("compare-missing", lambda b, m: ["compare", "998", "999"], lambda b: "run 998 does not exist"),
    ("home-is-a-file", lambda b, m: ["--home", str(b["a_file"]), "jobs"],
     lambda b: "exists and is not a folder"),
]


@pytest.mark.parametrize("case,argv,expected", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_bad_input_exits_2_with_one_line_naming_the_value(case, argv, expected, bad, tiny_gpt2,
                                                          store, capsys):
    code, out, err = run_cli(argv(bad, str(tiny_gpt2)), capsys)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected(bad) in lines[0], lines[0]
    assert "Traceback" not in err + out
    assert not out.strip() or case.startswith("study"), out   # nothing printed as a result
    assert queue.counts(store) == {}                           # and nothing queued


def test_a_study_whose_teacher_is_not_cached_is_refused_offline(bad, store, capsys):
    """Offline, an uncached hub teacher is refused before anything is queued (the study's
    requirement notes come first, then the one error line)."""
    code, out, err = run_cli(["study", str(bad["study_uncached_teacher"]), "--inline"], capsys)
    assert code == 2, (out, err)
    assert err.strip().splitlines()[-1].startswith(
        "error: model 'nobody-here/no-such-teacher' is not in the local Hugging Face cache and "
        "HF_HUB_OFFLINE=1 forbids downloading it")
    assert "Traceback" not in err and queue.counts(store) == {}


def test_catalogue_through_real_processes(bad, tiny_gpt2, home, tmp_path):
    """A few cases through `python -m engine.cli` itself: exit status and stderr as a shell sees
    them; and a store that is not a database at all (exit 1: a run-time failure, not input)."""
    cases = [
        _eval(str(tiny_gpt2), "--data", str(bad["rtp_malformed"])),
        _eval(str(bad["model_truncated"]), "--data", "builtin"),
        ["show", "abc"],
        ["study", str(bad["study_cycle"]), "--dry-run"],
    ]
    for argv in cases:
        done = subprocess.run([sys.executable, "-m", "engine.cli", *argv], cwd=REPO,
                              env=worker_env(home), capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (argv, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: "), done.stderr
    corrupt = tmp_path / "corrupt-home"
    corrupt.mkdir()
    (corrupt / "compfair.db").write_bytes(b"this is not an SQLite database" * 100)
    done = subprocess.run([sys.executable, "-m", "engine.cli", "--home", str(corrupt), "jobs"], cwd=REPO,
                          env=worker_env(home), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: the store {corrupt / 'compfair.db'} is not an SQLite database (file is not a "
        "database); restore it from a backup or move it away (a new empty store is created in "
        "its place)"]


# Queued through the API (no pre-check), the same inputs fail their job with the same reason.
JOB_TIME = [
    ("jsonl-malformed", lambda b, m: EvalSpec(model=m, data=str(b["rtp_malformed"]))),
    ("jsonl-utf16", lambda b, m: EvalSpec(model=m, data=str(b["rtp_utf16"]))),
    ("csv-missing-column", lambda b, m: EvalSpec(model=m, suite="crows_pairs", data=str(b["crows_columns"]))),
    ("group-unknown", lambda b, m: EvalSpec(model=m, suite="bold", data="builtin", groups=("Martians",))),
    ("new-tokens-past-positions", lambda b, m: EvalSpec(model=m, data="builtin", max_new_tokens=256)),
    ("scorer-hf-no-folder", lambda b, m: EvalSpec(model=m, data="builtin", scorer="hf:/no/such/classifier")),
    ("model-truncated-safetensors", lambda b, m: EvalSpec(model=str(b["model_truncated"]), data="builtin")),
    ("model-unknown-hub-id", lambda b, m: EvalSpec(model="nobody-here/no-such-model", data="builtin")),
    ("distill-data-malformed", lambda b, m: DistillSpec(teacher=m, data=str(b["distill_malformed"]))),
    ("prune-calibration-latin1", lambda b, m: PruneSpec(model=m, method="wanda",
                                                        calibration_data=str(b["text_latin1"]))),
]


def test_the_same_inputs_fail_their_jobs_with_the_reason(bad, tiny_gpt2, home, store, capsys):
    by_case = {case: (argv, expected) for case, argv, expected in CATALOGUE}
    jobs = {case: queue.submit(store, make(bad, str(tiny_gpt2))) for case, make in JOB_TIME}
    run_inline(home)
    for case, job_id in jobs.items():
        job = queue.job(store, job_id)
        assert job["status"] == "failed", case
        assert "\n" not in job["error"]
        argv, expected = by_case[case]
        assert expected(bad) in job["error"], (case, job["error"])
        if case != "model-unknown-hub-id":   # submit says "not in the local cache" more plainly
            code, _, err = run_cli(argv(bad, str(tiny_gpt2)), capsys)
            assert err.strip() == f"error: {job['error']}", case
    assert queue.counts(store) == {"failed": len(JOB_TIME)}
