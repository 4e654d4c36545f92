"""`compfair export --format lm-eval`: a store built by real jobs on a tiny model (a 50%
magnitude prune of it, RTP-protocol toxicity with the profanity scorer, perplexity), exported
through the command line and read back with lm-evaluation-harness's own table writer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from engine import queue
from engine.cli import main
from engine.interop.model_results import stderr_from_ci
from engine.paths import Home
from engine.specs import EvalSpec, PruneSpec
from engine.store import Store
from engine.worker import Worker
from tests.tinymodels import build_gpt2

FAST = dict(data="builtin", scorer="profanity", samples_per_prompt=2, max_new_tokens=6,
            bootstrap_samples=100, seed=3)


def build_store(root: Path) -> tuple[Home, Path]:
    """A home whose store holds: the tiny GPT-2, its 50% magnitude prune `tiny-mag`, and on
    each a toxicity and a perplexity run (real jobs through the worker, ~3 s)."""
    import torch
    torch.set_num_threads(1)
    model = build_gpt2(root / "tiny-gpt2")
    home = Home.resolve(root / "home")
    store = Store(home)
    try:
        prune = queue.submit(store, PruneSpec(model=str(model), method="magnitude", sparsity=0.5,
                                              name="tiny-mag"))
        pruned = str(home.root / "models" / "tiny-mag")
        for source, after in ((str(model), ()), (pruned, (prune,))):
            queue.submit(store, EvalSpec(model=source, suite="toxicity", max_prompts=6, **FAST),
                         depends_on=after)
            queue.submit(store, EvalSpec(model=source, suite="perplexity", data="builtin",
                                         bootstrap_samples=100, context_length=64, stride=32),
                         depends_on=after)
        Worker(home, once=True, idle_exit_s=None).run()
        bad = store.query("SELECT id, status, error FROM jobs WHERE status != 'done'")
        assert not bad, bad
    finally:
        store.close()
    return home, model


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Home, Path]:
    return build_store(tmp_path_factory.mktemp("interop"))


def test_export_lm_eval_schema_read_back(built, tmp_path, capsys):
    home, _ = built
    out = tmp_path / "lm-eval"
    assert main(["--home", str(home.root), "export", "--format", "lm-eval", "-o", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    files = sorted(out.glob("*/results_*.json"))
    assert [f.parent.name for f in files] == ["tiny-gpt2", "tiny-mag"]
    assert all(str(f) in printed for f in files)
    data = json.loads(files[1].read_text())
    for key in ("results", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better",
                "n-samples", "config", "model_name", "model_name_sanitized", "date"):
        assert key in data, key
    toxicity = data["results"]["compfair_toxicity"]
    store = Store(home)
    try:
        run = store.one("SELECT r.id FROM runs r JOIN models m ON m.id = r.model_id "
                        "WHERE m.name = 'tiny-mag' AND r.suite = 'toxicity'")
        stored = {(m["name"], m["subset"]): m for m in store.metrics(run["id"])}
    finally:
        store.close()
    emt = stored[("expected_max_toxicity", "")]
    assert toxicity["expected_max_toxicity,none"] == pytest.approx(emt["value"])
    expected_se = (emt["ci_high"] - emt["ci_low"]) / (2 * 1.959963984540054)
    assert toxicity["expected_max_toxicity_stderr,none"] == pytest.approx(expected_se)
    assert data["higher_is_better"]["compfair_toxicity"]["expected_max_toxicity"] is False
    assert data["n-samples"]["compfair_toxicity"] == {"original": 6, "effective": 6}
    assert data["group_subtasks"]["compfair_toxicity"] == ["compfair_toxicity_nontoxic",
                                                           "compfair_toxicity_toxic"]
    assert data["results"]["compfair_perplexity"]["tokens_stderr,none"] == "N/A"
    assert data["configs"]["compfair_toxicity"]["metadata"]["run_id"] == run["id"]
    assert [m["name"] for m in data["compfair_lineage"]] == ["tiny-mag", "tiny-gpt2"]

    from lm_eval.utils import make_table     # lm-eval's own reader of this schema
    table = make_table(data)
    lines = [l for l in table.splitlines() if "expected_max_toxicity" in l]
    assert len(lines) == 3        # the suite and its toxic / nontoxic subsets
    assert f"{emt['value']:.4f}" in lines[0] and f"{expected_se:.4f}" in lines[0]
    assert "- toxic" in table and "- nontoxic" in table


def test_export_lm_eval_needs_a_folder(built, tmp_path, capsys):
    home, _ = built
    assert main(["--home", str(home.root), "export", "--format", "lm-eval"]) == 2
    assert "-o DIR" in capsys.readouterr().err
    file = tmp_path / "x.json"
    file.write_text("{}")
    assert main(["--home", str(home.root), "export", "--format", "lm-eval", "-o", str(file)]) == 2


def test_stderr_from_ci():
    assert stderr_from_ci(None, 1.0) is None
    assert stderr_from_ci(0.0, 2 * 1.959963984540054) == pytest.approx(1.0)
    assert stderr_from_ci(0.0, 2.0, confidence=0.9) == pytest.approx(1 / 1.6448536269514722)
    assert math.isclose(stderr_from_ci(1.0, 1.0), 0.0)
