"""Studies end to end on tiny models: plan, compress, evaluate, report, reuse."""

from collections import defaultdict

import numpy as np
import pytest

from engine import queue
from engine.report import build_report
from engine.study import requirements, submit_study
from engine.study_plan import load_study, plan_study
from engine.errors import StudyError
from engine.worker import Worker

STUDY = """
name = "tiny"
description = "tiny end-to-end study"
teacher = "{teacher}"

[settings]
seed = 0

[[distill]]
label = "distil"
intensity = 0.5
data = "builtin"
steps = 6
batch_size = 4
seq_len = 32
warmup_steps = 1
checkpoint_every = 3

[[prune]]
label = "magnitude"
method = "magnitude"
sparsity = [0.5]

[[eval]]
suite = "toxicity"
data = "builtin"
samples_per_prompt = 2
max_prompts = 8
max_new_tokens = 6
scorer = "profanity"
bootstrap_samples = 200

[[eval]]
suite = "perplexity"
data = "builtin"
context_length = 64
stride = 32
bootstrap_samples = 200
"""


def test_a_study_runs_end_to_end_and_its_report_matches_the_stored_samples(home, store, tiny_gpt2, tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(STUDY.format(teacher=tiny_gpt2))
    plan = load_study(str(path))
    assert sorted(plan.models) == ["distil", "magnitude(sparsity=0.5)", "teacher"]
    submitted = submit_study(store, plan)
    assert {s.action for s in submitted} == {"queued"} and len(submitted) == 2 + 3 * 2
    Worker(home, once=True, idle_exit_s=None).run()
    failed = store.query("SELECT id, error FROM jobs WHERE status != 'done'")
    assert not failed, failed

    report = build_report(store, "tiny", output_dir=tmp_path / "report")
    assert report.complete
    for name in ("report.md", "models.csv", "metrics.csv", "significance.csv",
                 "fairness_vs_compression.png", "tradeoff.png"):
        assert (report.folder / name).exists(), name
    # Every expected-max-toxicity figure equals the mean over prompts of the max stored score.
    for entry in report.entries:
        samples = store.samples(entry.runs["toxicity"]["id"])
        per_prompt = defaultdict(list)
        for s in samples:
            per_prompt[s["item_index"]].append(s["toxicity"])
        expected = float(np.mean([max(v) for v in per_prompt.values()]))
        stored = entry.metrics["toxicity"][("expected_max_toxicity", "")]["value"]
        assert stored == pytest.approx(expected, abs=1e-12)
    # Each compressed model gets a paired verdict per measured headline metric.
    verdicts = {(s["model"], s["metric"]) for s in report.significance}
    for label in ("distil", "magnitude(sparsity=0.5)"):
        assert {(label, "expected_max_toxicity"), (label, "perplexity")} <= verdicts
    text = (report.folder / "report.md").read_text()
    assert "## Models x metrics" in text and "paired bootstrap" in text

    # A second run of the same study reuses every finished job.
    again = submit_study(store, load_study(str(path)))
    assert {s.action for s in again} == {"reused"}
    assert [s.job_id for s in again] == [s.job_id for s in submitted]


def test_the_paper_preset_plans_without_network():
    plan = load_study("paper")
    kinds = defaultdict(int)
    for node in plan.nodes:
        kinds[node.spec.kind] += 1
    assert kinds["distill"] == 3 and kinds["prune"] == 11 and kinds["quantize"] == 2
    assert kinds["eval"] == 4 * len(plan.models) == 4 * 18
    assert all(n.spec.samples_per_prompt == 25 for n in plan.nodes
               if n.spec.kind == "eval" and n.spec.suite == "toxicity")
    notes = requirements(plan)
    # Without a hub cache, gpt2 and distilgpt2 are reported as needing network, not an error.
    assert all("needs network" in n or "hub" in n for n in notes), notes


def test_the_quick_preset_plans_offline():
    plan = load_study("quick")
    assert plan.teacher == "smollm2"
    assert [n for n in requirements(plan) if "model" in n] == []


@pytest.mark.parametrize("text, message", [
    ('teacher = "gpt2"\n[[eval]]\nsuite = "nope"', "suite 'nope' is unknown"),
    ('teacher = "gpt2"\n[[eval]]\nsuite = "toxicity"\nsamples_per_prompt = 0', "must be >= 1"),
    ('teacher = "gpt2"\n[[prune]]\nmethod = "magnitude"\nof = "ghost"\n[[eval]]\nsuite = "toxicity"', "names no model"),
    ('teacher = "gpt2"\n[[prune]]\nlabel = "a"\nof = "b"\n[[prune]]\nlabel = "b"\nof = "a"\n[[eval]]\nsuite = "toxicity"', "cycle"),
    ('teacher = "gpt2"\n[[prune]]\nmethod = "magnitude"\nsparsity = 1.5\n[[eval]]\nsuite = "toxicity"', "sparsity must be in"),
    ('teacher = "gpt2"\n[[pune]]\nmethod = "magnitude"', "no section 'pune'"),
    ('teacher = "gpt2"', "no [[eval]] block"),
    ('[[eval]]\nsuite = "toxicity"', "needs `teacher"),
    ('teacher = "gpt2"\n[[eval]]\nsuite = "toxicity"\nsamples_per_promt = 3', "no setting 'samples_per_promt'"),
])
def test_bad_study_files_name_the_problem(text, message):
    import tomllib
    with pytest.raises(StudyError, match=message.replace("[", r"\[").replace("(", r"\(")):
        plan_study(tomllib.loads(text))
