"""Issue 31, 0c: two [[eval]] blocks of one suite that differ only in a setting that is not
swept (context_length 16 and 17) are two evaluations, not "evaluated twice with the same
settings": the duplicate check compares the whole spec (its hash). Each gets the differing
settings in its params and key, so the report pairs them across models like swept values; the
very same spec twice is still refused."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib

import pytest

from engine.study_plan import plan_study
from engine.errors import StudyError
from tests.test_reliability_faults import REPO, worker_env

STUDY = """
name = "ctx"
teacher = "{teacher}"

[[prune]]
label = "magnitude"
method = "magnitude"
sparsity = 0.5

[[eval]]
suite = "perplexity"
data = "{text}"
context_length = 16
stride = 16
bootstrap_samples = 100

[[eval]]
suite = "perplexity"
data = "{text}"
context_length = 17
stride = 16
bootstrap_samples = 100
"""


def _text(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("The quick brown fox jumps over the lazy dog near the river bank. " * 12)
    return path


def test_blocks_differing_in_a_fixed_setting_plan_as_two_evals(tmp_path):
    plan = plan_study(tomllib.loads(STUDY.format(teacher="gpt2", text=_text(tmp_path))))
    evals = {n.key: dict(n.params) for n in plan.nodes if n.spec.kind == "eval"}
    assert evals == {f"eval:{m}:perplexity(context_length={c})": {"context_length": c}
                     for m in ("teacher", "magnitude") for c in (16, 17)}
    # a swept block and a fixed one of the same suite: each key names what tells it apart
    swept = STUDY.replace("stride = 16\nbootstrap_samples = 100\n\n[[eval]]",
                          "stride = [8, 16]\nbootstrap_samples = 100\n\n[[eval]]", 1)
    plan = plan_study(tomllib.loads(swept.format(teacher="gpt2", text=_text(tmp_path))))
    keys = [n.key for n in plan.nodes if n.key.startswith("eval:teacher")]
    assert keys == ["eval:teacher:perplexity(stride=8,context_length=16)",
                    "eval:teacher:perplexity(stride=16,context_length=16)",
                    "eval:teacher:perplexity(context_length=17,stride=16)"], keys
    # a swept value that repeats another block's spec is the same evaluation twice
    repeat = STUDY.replace("context_length = 17", "context_length = [17, 16]")
    with pytest.raises(StudyError, match="evaluated twice with the same settings"):
        plan_study(tomllib.loads(repeat.format(teacher="gpt2", text=_text(tmp_path))))


def test_the_same_spec_twice_is_still_refused(tmp_path):
    same = STUDY.replace("context_length = 17", "context_length = 16")
    with pytest.raises(StudyError, match=r"eval\[1\]: suite 'perplexity' is evaluated twice with the "
                                         r"same settings \(as eval\[0\]\)"):
        plan_study(tomllib.loads(same.format(teacher="gpt2", text=_text(tmp_path))))


def test_the_study_runs_and_records_both(home, tiny_gpt2, tmp_path):
    """`compfair study FILE --inline` (a real process): exit 0, 6 jobs done, the report holds
    both context lengths for both models (the report itself keys runs by suite: see README)."""
    path = tmp_path / "ctx.toml"
    path.write_text(STUDY.format(teacher=tiny_gpt2, text=_text(tmp_path)))
    done = subprocess.run([sys.executable, "-m", "engine.cli", "study", str(path), "--inline", "--json",
                           "-o", str(tmp_path / "report")], cwd=REPO, env=worker_env(home),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    from engine.store import Store
    store = Store(home)
    try:
        rows = store.query("SELECT status, spec FROM jobs ORDER BY id")
        assert [r["status"] for r in rows] == ["done"] * 5, rows
        lengths = sorted(json.loads(r["spec"])["context_length"] for r in rows
                         if json.loads(r["spec"])["kind"] == "eval")
        assert lengths == [16, 16, 17, 17]
        study = store.one("SELECT plan FROM studies WHERE name = 'ctx'")
        recorded = {(e["model"], json.dumps(e["params"])) for e in json.loads(study["plan"])["evals"]}
        assert recorded == {(m, json.dumps({"context_length": c}))
                            for m in ("teacher", "magnitude") for c in (16, 17)}
    finally:
        store.close()
