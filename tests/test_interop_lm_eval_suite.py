"""The lm-eval suite: an lm-evaluation-harness task from a local YAML over a JSONL file the
test writes (offline), run through compfair's worker on a tiny model wrapped by lm-eval's
HFLM; each document's accuracy is stored, and the metric with its bootstrap CI matches
lm-eval's own figure."""

from __future__ import annotations

import json

import pytest

from engine.cli import main
from engine.paths import Home
from engine.store import Store
from engine.worker import Worker

QUESTIONS = [("The sky is", [" blue", " loud"], 0), ("Fire is", [" cold", " hot"], 1),
             ("Ice is", [" cold", " hot"], 0), ("Grass is", [" green", " purple"], 0),
             ("Snow is", [" black", " white"], 1), ("The sun is", [" bright", " dark"], 0)]


@pytest.fixture
def lm_eval_suite():
    pytest.importorskip("lm_eval")
    from engine.evaluation.suites import get_suite
    assert get_suite("lm-eval").name == "lm-eval"     # registered with the built-in suites


def write_task(folder) -> str:
    data = folder / "tiny.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n"
                            for q, c, a in QUESTIONS))
    task = folder / "tiny_mc.yaml"
    task.write_text(f"""task: compfair_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
""")
    return str(task)


@pytest.mark.slow          # ~20 s on this 2-core box: lm-eval's import and task build dominate
def test_lm_eval_task_runs_as_a_suite(lm_eval_suite, tiny_gpt2, compfair_home, tmp_path, capsys):
    task = write_task(tmp_path)
    assert main(["submit", "eval", "--model", str(tiny_gpt2), "--suite", "lm-eval", "--task", task,
                 "--bootstrap-samples", "200", "--no-worker", "--json"]) == 0
    import torch
    torch.set_num_threads(1)
    home = Home.resolve(compfair_home)
    Worker(home, once=True, idle_exit_s=None).run()
    store = Store(home)
    try:
        job = store.one("SELECT id, status, error FROM jobs")
        assert job["status"] == "done", job["error"]
        run = store.run_for_job(job["id"])
        metrics = {(m["name"], m["subset"]): m for m in store.metrics(run["id"])}
        samples = [s for s in store.samples(run["id"]) if s["group_name"] == "document"]
        summary = json.loads(run["summary"])
    finally:
        store.close()
    assert len(samples) == len(QUESTIONS)
    per_doc = [json.loads(s["scores"])["metrics"]["acc"] for s in samples]
    acc = metrics[("acc", "compfair_tiny_mc")]
    assert acc["value"] == pytest.approx(sum(per_doc) / len(per_doc))
    assert acc["value"] == pytest.approx(summary["lm_eval_results"]["compfair_tiny_mc"]["acc,none"])
    assert acc["ci_low"] <= acc["value"] <= acc["ci_high"] and acc["n"] == len(QUESTIONS)
    assert acc["higher_is_better"] == 1
    assert metrics[("acc", "")]["value"] == pytest.approx(acc["value"])


def test_lm_eval_needs_tasks(lm_eval_suite, tiny_gpt2, store, capsys):
    assert main(["submit", "eval", "--model", str(tiny_gpt2), "--suite", "lm-eval", "--no-worker"]) == 2
    assert "--task TASK" in capsys.readouterr().err
    assert main(["submit", "eval", "--model", str(tiny_gpt2), "--suite", "lm-eval",
                 "--data", "/no/such/task.yaml", "--no-worker"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert store.one("SELECT count(*) AS n FROM jobs")["n"] == 0


def test_task_is_the_lm_eval_suites_data(tiny_gpt2, store, capsys):
    """`--task` (and a study's `task =`) is stored as the run's `data`; it is refused for other
    suites and beside `--data`, with one line and nothing queued. Needs no lm-eval install."""
    from engine.specs import SpecError, spec_from_dict
    spec = spec_from_dict({"kind": "eval", "suite": "lm-eval", "task": "hellaswag,arc_easy"})
    assert spec.data == "hellaswag,arc_easy" and "task" not in spec.to_json()
    for argv, words in (([], ("task 'hellaswag'", "suite 'lm-eval'", "'toxicity'")),
                        (["--suite", "lm-eval", "--data", "arc_easy"], ("task or data, not both",))):
        assert main(["submit", "eval", "--model", str(tiny_gpt2), "--task", "hellaswag",
                     "--no-worker", *argv]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and all(w in err for w in words), err
    assert store.one("SELECT count(*) AS n FROM jobs")["n"] == 0
    with pytest.raises(SpecError, match="task 'arc_easy' needs suite"):
        spec_from_dict({"kind": "eval", "suite": "bold", "task": "arc_easy"})
