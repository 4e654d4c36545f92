"""`compfair plan`: items needed to decide a comparison and the time, on a real store: the
sizing against the analytic normal formula for a known per-item difference sd, the noise-floor
path of a single generation run, bad input through the real CLI entry, and the JSON shape."""

from __future__ import annotations

import json
import math
import random
from statistics import NormalDist

import numpy as np
import pytest

from engine import queue
from engine.cli import main
from engine.evaluation.aggregate import suite_metrics
from engine.planning import NOISE_FLOOR, PAIRED, plan
from engine.planning_cost import SUMMARY_SOURCE, WALL_SOURCE
from engine.specs import EvalSpec

Z = NormalDist()
N_ITEMS = 300


def _add_run(store, model_id: int, rows: list[dict], *, k: int, suite: str = "toxicity",
             extra: dict | None = None, finish: bool = True) -> int:
    """A run of `suite` holding `rows` (finished, with its metrics, unless `finish` is False)."""
    spec = EvalSpec(model=f"model:{model_id}", suite=suite, data="builtin", seed=model_id,
                    samples_per_prompt=k)
    job_id = queue.submit(store, spec)
    run_id = store.start_run(job_id, model_id, suite, {"samples_per_prompt": k, "confidence": 0.95},
                             "profanity", "1", "builtin", "cpu")
    if rows:
        store.add_samples(run_id, rows)
    if finish:
        metrics, summary = (suite_metrics(suite, store.samples(run_id), n_boot=200, seed=0)
                            if rows else ([], {}))
        store.finish_run(run_id, metrics, {**summary, **(extra or {})})
    return run_id


def _rows(toxicity: list[list[float]]) -> list[dict]:
    """Sample rows with the given toxicity per item and sample (fluent text, scored NLL)."""
    return [{"key": f"{i}:{s}", "item_index": i, "sample_index": s, "prompt": f"prompt {i}",
             "completion": f"people in the city {i} said {s} things", "prompt_toxicity": 0.2,
             "toxicity": tox, "continuation_nll": 2.5 + 0.01 * ((i + s) % 7), "continuation_tokens": 8}
            for i, samples in enumerate(toxicity) for s, tox in enumerate(samples)]


def _pair(store, sd: float) -> tuple[int, int]:
    """A baseline and a model whose per-prompt max toxicities differ by d_i with sd exactly `sd`
    (both samples of a prompt equal, so a prompt's max is its toxicity)."""
    rng = np.random.default_rng(7)
    base = 0.4 + 0.1 * rng.random(N_ITEMS)
    z = rng.standard_normal(N_ITEMS)
    d = sd * (z - z.mean()) / z.std()
    teacher = store.upsert_model({"name": "teacher", "source": "t", "origin": "hub"})
    child = store.upsert_model({"name": "child", "source": "c", "origin": "derived", "parent_id": teacher})
    a = _add_run(store, teacher, _rows([[float(b)] * 2 for b in base]), k=2)
    b = _add_run(store, child, _rows([[float(b + e)] * 2 for b, e in zip(base, d)]), k=2)
    return a, b


def analytic_equivalence(sigma: float, margin: float, alpha: float = 0.05, power: float = 0.8) -> float:
    return ((Z.inv_cdf(1 - alpha) + Z.inv_cdf(1 - (1 - power) / 2)) * sigma / margin) ** 2


def analytic_difference(sigma: float, margin: float, alpha: float = 0.05, power: float = 0.8) -> float:
    return ((Z.inv_cdf(1 - alpha / 2) + Z.inv_cdf(power)) * sigma / margin) ** 2


@pytest.mark.parametrize("margin, power", [(0.01, 0.8), (0.005, 0.9)])
def test_items_needed_match_the_analytic_formula_for_a_known_difference_sd(store, margin, power):
    a, b = _pair(store, sd=0.05)
    plans = {p.metric: p for p in plan(store, a, against=b, power=power,
                                       margins=[f"expected_max_toxicity={margin}"])}
    emt = plans["expected_max_toxicity"]
    assert emt.sigma_source == PAIRED and emt.n == N_ITEMS and emt.margin == margin
    assert emt.sigma == pytest.approx(0.05, rel=0.05)
    assert emt.items_for_equivalence == pytest.approx(analytic_equivalence(0.05, margin, power=power), rel=0.1)
    assert emt.items_for_difference == pytest.approx(analytic_difference(0.05, margin, power=power), rel=0.1)
    # the default margin (0.02) of toxicity_probability, and the relative one of perplexity
    assert plans["toxicity_probability"].margin == 0.05
    assert plans["continuation_perplexity"].margin_words == "+-10%"


def test_without_against_a_generation_run_is_sized_from_its_own_noise_floor(store, capsys):
    rng = random.Random(3)
    k, n = 4, 120
    model = store.upsert_model({"name": "teacher", "source": "t", "origin": "hub"})
    timings = {"generation_seconds": 96.0, "quality_seconds": 24.0, "generated_now": n * k}
    run = _add_run(store, model, _rows([[rng.betavariate(1, 4) for _ in range(k)] for _ in range(n)]),
                   k=k, extra=timings)
    plans = plan(store, run)
    assert plans and all(p.sigma_source == NOISE_FLOOR for p in plans)
    emt = next(p for p in plans if p.metric == "expected_max_toxicity")
    assert math.isfinite(emt.sigma) and emt.sigma > 0 and emt.n == n
    assert isinstance(emt.items_for_equivalence, int) and emt.items_for_equivalence > 0
    assert emt.seconds_source == SUMMARY_SOURCE and emt.seconds_per_item == pytest.approx(120.0 / n)
    record = emt.record()
    assert record["seconds_for_equivalence"] == pytest.approx(emt.items_for_equivalence * 1.0 * 2)
    assert record["generations_per_model"] == emt.items_for_equivalence * k
    assert main(["plan", str(run)]) == 0
    out = capsys.readouterr().out
    assert "would show equivalence within +-0.02 at 80% power" in out
    assert "conservative stand-in" in out and "for both models" in out


def test_a_bold_run_without_against_gets_a_finite_estimate_for_its_gap(store):
    rng = random.Random(1)
    rows = [{"key": f"{i}:{s}", "item_index": i, "sample_index": s, "prompt": f"p{i}",
             "completion": f"some words here {i} {s}", "domain": "race" if i < 30 else "gender",
             "group_name": f"g{i % 3}" if i < 30 else f"h{i % 2}", "sentiment": rng.uniform(-1, 1),
             "toxicity": 0.3 * rng.random(), "continuation_nll": 2.5, "continuation_tokens": 8}
            for i in range(60) for s in range(4)]
    model = store.upsert_model({"name": "teacher", "source": "t", "origin": "hub"})
    plans = {p.metric: p for p in plan(store, _add_run(store, model, rows, k=4, suite="bold"))}
    assert set(plans) == {"sentiment_mean_gap", "toxicity_mean"}
    for p in plans.values():
        assert p.sigma_source == NOISE_FLOOR and math.isfinite(p.sigma) and p.sigma > 0
        assert isinstance(p.items_for_equivalence, int) and p.seconds(p.items_for_equivalence) is not None


@pytest.fixture
def runs(store) -> dict[str, int]:
    """Two finished toxicity runs, an unfinished one and a finished CrowS-Pairs run."""
    model = store.upsert_model({"name": "teacher", "source": "t", "origin": "hub"})
    rows = _rows([[0.1 * (i % 5), 0.05 * (i % 3)] for i in range(20)])
    return {"a": _add_run(store, model, rows, k=2), "b": _add_run(store, model, rows, k=2),
            "open": _add_run(store, model, rows, k=2, finish=False),
            "crows": _add_run(store, model, [], k=1, suite="crows_pairs")}


BAD = [
    ("unknown run", lambda r: ["999"], "run 999 does not exist"),
    ("unfinished run", lambda r: [r["open"]], "is running, not finished"),
    ("different suites", lambda r: [r["a"], "--against", r["crows"]], "different suites"),
    ("deterministic suite", lambda r: [r["crows"]], "needs a compared run (--against RUN2)"),
    ("unknown metric", lambda r: [r["a"], "--margin", "nosuch=0.1"],
     "'nosuch' is not a paired metric of the toxicity suite; known: "),
    ("bad value", lambda r: [r["a"], "--margin", "expected_max_toxicity=abc"],
     "'expected_max_toxicity=abc': the value must be a positive number"),
    ("negative value", lambda r: [r["a"], "--margin", "expected_max_toxicity=-1"],
     "'expected_max_toxicity=-1': the value must be a positive number"),
    ("no value", lambda r: [r["a"], "--margin", "expected_max_toxicity"], "must be METRIC=VALUE"),
    ("power 1", lambda r: [r["a"], "--power", "1.0"], "--power 1.0 must be in [0.5, 1)"),
    ("power 0.3", lambda r: [r["a"], "--power", "0.3"], "--power 0.3 must be in [0.5, 1)"),
    ("power text", lambda r: [r["a"], "--power", "x"], "invalid float value: 'x'"),
]


@pytest.mark.parametrize("case, argv, expected", BAD, ids=[c[0] for c in BAD])
def test_bad_input_exits_2_with_one_line_naming_the_value(runs, home, capsys, case, argv, expected):
    try:
        code = main(["--home", str(home.root), "plan", *map(str, argv(runs))])
    except SystemExit as exc:            # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0], lines[0]
    assert not out.strip() and "Traceback" not in err


def test_json_is_one_record_per_headline_metric(store, home, capsys):
    a, b = _pair(store, sd=0.05)
    assert main(["--home", str(home.root), "plan", str(a), "--against", str(b), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["metric"] for r in records] == ["expected_max_toxicity", "toxicity_probability",
                                              "continuation_perplexity"]
    keys = {"metric", "title", "unit", "n", "sigma", "sigma_source", "margin", "margin_words",
            "alpha", "power", "items_for_equivalence", "items_for_difference", "samples_per_item",
            "seconds_per_item", "seconds_source", "device", "models", "seconds_for_equivalence",
            "seconds_for_difference", "generations_per_model"}
    for record in records:
        assert set(record) == keys
        assert record["n"] == N_ITEMS and record["models"] == 2 and record["device"] == "cpu"
        assert record["sigma_source"] == PAIRED and record["unit"] == "prompts"
        assert record["seconds_source"] == WALL_SOURCE          # no timings in these summaries
    emt = records[0]
    assert isinstance(emt["items_for_equivalence"], int) and emt["margin"] == 0.02
    assert emt["generations_per_model"] == emt["items_for_equivalence"] * 2
