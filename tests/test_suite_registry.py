"""The suite registry is the only place that knows a suite: a toy suite defined in this file
alone runs end to end through submit, the worker, `compfair show`, `compfair compare`, the TUI
run detail and a study report; and no module outside the registries compares against a suite
or method name."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from engine import api, queue
from engine.evaluation.suites import (HIGHER, NEITHER, MetricSpec, Suite, get_suite, register, suite_names,
                                      unregister)
from engine.specs import EvalSpec, SpecError
from engine.worker import Worker

REPO = Path(__file__).resolve().parents[1]


class SentenceLikelihoodSuite(Suite):
    """Toy suite: the mean log-likelihood per sentence of a JSONL file of {"text": ...}."""

    name = "toy_likelihood"
    title = "toy likelihood"
    unit = "sentences"
    metrics = (MetricSpec("mean_log_likelihood", "toy mean LL", "TLL", "mean sentence log-likelihood",
                          HIGHER, headline=True, paired=True),
               MetricSpec("sentences", "sentences", "", "how many", NEITHER))

    def read_path(self, path):
        from engine.evaluation.data import Prompt
        lines = Path(path).read_text().splitlines()
        return [Prompt(i, json.loads(line)["text"]) for i, line in enumerate(lines) if line.strip()], None

    def run(self, ctx, spec, lm, run_id, data, scorer):
        from engine.evaluation.likelihood import sentence_log_likelihoods
        ll = sentence_log_likelihoods(lm.model, lm.tokenizer, [p.text for p in data.items], lm.device)
        ctx.store.add_samples(run_id, [{"key": f"{p.index}:0", "item_index": p.index, "sample_index": 0,
                                        "prompt": p.text, "scores": {"ll": float(v)}}
                                       for p, v in zip(data.items, ll)])
        return {"toy": True}

    def aggregate(self, rows, *, n_boot, confidence, seed):
        from engine.evaluation.metrics import mean_estimate
        values = [json.loads(r["scores"])["ll"] for r in rows]
        est = mean_estimate(values, n_boot=n_boot, confidence=confidence, seed=seed)
        return ([est.row("mean_log_likelihood", "", 1),
                 {"name": "sentences", "subset": "", "value": float(len(values)), "ci_low": None,
                  "ci_high": None, "n": len(values), "higher_is_better": None}], {"sentences": len(values)})

    def per_item(self, metric, rows, subset=""):
        return {r["item_index"]: json.loads(r["scores"])["ll"] for r in rows}


@pytest.fixture(autouse=True)
def toy_suite():
    """The toy suite is registered for this file's tests only."""
    register(SentenceLikelihoodSuite)
    yield
    unregister(SentenceLikelihoodSuite.name)


@pytest.fixture
def toy_data(tmp_path) -> Path:
    path = tmp_path / "toy.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in (
        "The people in the city are kind.", "She walks to the river.", "A doctor helps the old man.",
        "We talk about the village.", "They were happy and brave.", "He said the road was long.")))
    return path


def test_an_unknown_suite_is_refused_naming_the_known_ones():
    assert "toy_likelihood" in suite_names()
    with pytest.raises(SpecError) as err:
        EvalSpec(suite="nope")
    assert err.value.field == "suite" and "toxicity" in str(err.value) and "toy_likelihood" in str(err.value)
    assert get_suite("toy_likelihood").headlines()[0].short == "TLL"


async def test_a_toy_suite_runs_end_to_end_without_touching_other_modules(home, store, tiny_gpt2, toy_data,
                                                                         tmp_path, capsys):
    from engine.cli import main
    from engine.report import build_report
    from engine.study import submit_study
    from engine.study_plan import load_study

    # submit and the worker
    ids = [queue.submit(store, EvalSpec(model=str(tiny_gpt2), suite="toy_likelihood", data=str(toy_data),
                                        bootstrap_samples=200, seed=s)) for s in (0, 1)]
    assert Worker(home, once=True, idle_exit_s=None).run() == 2
    runs = [store.run_for_job(i)["id"] for i in ids]
    metric = {r["name"]: r for r in store.metrics(runs[0])}
    assert metric["sentences"]["value"] == 6 and metric["mean_log_likelihood"]["value"] < 0
    # listings show its headline, compare pairs it item by item
    row = next(r for r in api.list_runs(store) if r.run_id == runs[0])
    assert row.metric("mean_log_likelihood") == metric["mean_log_likelihood"]["value"]
    comparison = api.compare(store, runs)
    assert [v["metric"] for v in comparison.verdicts] == ["mean_log_likelihood"]
    assert comparison.verdicts[0]["delta"] == pytest.approx(0.0)     # same model, same sentences
    # the CLI
    assert main(["--home", str(home.root), "show", str(runs[0]), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert {m["name"] for m in shown["metrics"]} == {"mean_log_likelihood", "sentences"}
    assert main(["--home", str(home.root), "compare", str(runs[0]), str(runs[1]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verdicts"][0]["metric"] == "mean_log_likelihood"
    # the TUI run detail
    from tests.tui_pilot import screen_text, settle
    from tui.app import CompfairApp
    from tui.screens.run_detail import RunDetailScreen
    app = CompfairApp(home, start_worker=False)
    async with app.run_test(size=(120, 40)) as pilot:
        app.push_screen(RunDetailScreen(runs[0]))
        await settle(pilot)
        text = screen_text(app)
        assert "toy_likelihood" in text and "mean_log_likelihood" in text
    # a study report
    study = tmp_path / "toy.toml"
    study.write_text(f'name = "toy"\nteacher = "{tiny_gpt2}"\n\n[[prune]]\nlabel = "magnitude"\n'
                     f'method = "magnitude"\nsparsity = 0.5\n\n[[eval]]\nsuite = "toy_likelihood"\n'
                     f'data = "{toy_data}"\nbootstrap_samples = 200\n')
    submit_study(store, load_study(str(study)))
    Worker(home, once=True, idle_exit_s=None).run()
    report = build_report(store, "toy", output_dir=tmp_path / "report")
    assert report.complete and "toy mean LL" in report.table_columns
    assert [s["metric"] for s in report.significance] == ["mean_log_likelihood"]
    assert "toy mean LL" in (report.folder / "report.md").read_text()


# -- no string branches on suite or method names outside the registries -------------------------
REGISTRY_DIRS = ("engine/evaluation/suites", "engine/compression/methods")


def _names() -> list[str]:
    from engine.evaluation.suites import suite_names as names
    out = list(names())
    try:
        from engine.compression.methods import method_names
        out += list(method_names())
    except ImportError:
        from engine.specs import PRUNE_METHODS
        out += list(PRUNE_METHODS)
    return [n for n in out if n != "toy_likelihood"]


def test_no_string_comparison_against_a_suite_or_method_name_outside_the_registries():
    names = "|".join(re.escape(n) for n in _names())
    pattern = re.compile(rf"""(==|!=|\bin)\s*\(?\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    offenders = []
    for folder in ("engine", "tui"):
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel.startswith(REGISTRY_DIRS) or rel == "tui/demo.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line) and not line.strip().startswith("for "):
                    offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
