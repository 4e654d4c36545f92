"""`compfair card`: the model card of a pruned tiny model (real prune and eval jobs), parsed back
with huggingface_hub's own `ModelCard.load`."""

from __future__ import annotations

import pytest

from engine.cli import main
from engine.store import Store
from tests.test_interop_export import build_store


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("card"))


def test_card_written_into_model_folder(built, capsys):
    from huggingface_hub import ModelCard
    home, base = built
    assert main(["--home", str(home.root), "card", "tiny-mag"]) == 0
    readme = home.root / "models" / "tiny-mag" / "README.md"
    assert f"wrote {readme}" in capsys.readouterr().out
    card = ModelCard.load(readme)
    data = card.data
    assert data.base_model == str(base)
    assert "compfair" in data.tags and "prune" in data.tags
    step, = data.to_dict()["compression"]
    assert step["method"] == "magnitude" and step["params"]["sparsity"] == 0.5
    store = Store(home)
    try:
        stored = {(r["suite"], r["name"]): r for r in store.query(
            "SELECT r.suite, x.* FROM metrics x JOIN runs r ON r.id = x.run_id "
            "JOIN models m ON m.id = r.model_id WHERE m.name = 'tiny-mag' AND x.subset = ''")}
    finally:
        store.close()
    results = {(r.task_name, r.metric_type): r for r in data.eval_results}
    emt = results[("compfair toxicity", "expected_max_toxicity")]
    want = stored[("toxicity", "expected_max_toxicity")]
    assert emt.metric_value == pytest.approx(want["value"])
    assert emt.metric_args["ci_low"] == pytest.approx(want["ci_low"])
    assert emt.metric_args["ci_high"] == pytest.approx(want["ci_high"])
    assert emt.metric_args["confidence"] == 0.95 and emt.metric_args["n"] == 6
    ppl = results[("compfair perplexity", "perplexity")]
    assert ppl.metric_value == pytest.approx(stored[("perplexity", "perplexity")]["value"])
    assert len(results) == len(stored)
    assert "## Evaluation (compfair)" in card.text and "| toxicity |" in card.text
    # the model-index metadata as the hub would read it
    index = data.to_dict()["model-index"][0]
    assert index["name"] == "tiny-mag"


def test_card_base_model_needs_output_path(built, tmp_path, capsys):
    home, base = built
    assert main(["--home", str(home.root), "card", "no-such-model"]) == 2
    assert "no-such-model" in capsys.readouterr().err
    out = tmp_path / "card.md"
    assert main(["--home", str(home.root), "card", str(base), "-o", str(out)]) == 0
    from huggingface_hub import ModelCard
    data = ModelCard.load(out).data
    assert data.base_model is None and "compression" not in data.to_dict()
    assert {r.metric_type for r in data.eval_results} >= {"perplexity", "expected_max_toxicity"}


def test_push_offline_is_one_line(built, capsys):
    """The upload itself needs network; offline it is one line, exit 1, the card written."""
    home, _ = built
    readme = home.root / "models" / "tiny-mag" / "README.md"
    readme.unlink(missing_ok=True)
    assert main(["--home", str(home.root), "push", "tiny-mag", "--repo", "someone/tiny-mag"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "someone/tiny-mag" in err and "offline" in err
    assert readme.is_file()
