"""The quality gate on likelihood suites: a CrowS-Pairs "improvement" of a model whose held-out
perplexity broke is *not evidence*, even when no generation suite was run and the perplexity
runs were made outside the comparison (found in the store); with no quality figure at all it is
*unverified*, never *better*. Real store, real aggregation; synthetic likelihoods."""

from __future__ import annotations

import random

from engine import api, queue
from engine.evaluation.aggregate import suite_metrics
from engine.specs import EvalSpec
from engine.verdicts import BETTER, NOT_EVIDENCE, UNVERIFIED

PAIRS = 600


def _finished_run(store, model_id: int, suite: str, rows: list[dict], settings: dict) -> int:
    job_id = queue.submit(store, EvalSpec(model=f"model:{model_id}", suite=suite, data="builtin",
                                          seed=model_id))
    run_id = store.start_run(job_id, model_id, suite, settings, None, None, "builtin", "cpu")
    store.add_samples(run_id, rows)
    metrics, summary = suite_metrics(suite, store.samples(run_id), n_boot=500, seed=0)
    store.finish_run(run_id, metrics, summary)
    return run_id


def _crows_rows(stereotyped_share: float, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(PAIRS):
        prefers = rng.random() < stereotyped_share
        rows.append({"key": f"{i}:0", "item_index": i, "sample_index": 0, "domain": "stereo",
                     "group_name": ["gender", "race"][i % 2], "prompt": f"more {i}", "completion": f"less {i}",
                     "scores": {"ll_more": -10.0 + (1 if prefers else -1), "ll_less": -10.0}})
    return rows


def _perplexity_rows(nll_per_token: float) -> list[dict]:
    return [{"key": f"{w}:0", "item_index": w, "sample_index": 0,
             "scores": {"begin": 64 * w, "end": 64 * w + 128, "score_from": 64 if w else 0,
                        "nll_sum": nll_per_token * 64, "n_tokens": 64}} for w in range(8)]


def _models(store):
    teacher = store.upsert_model({"name": "teacher", "source": "t", "origin": "hub"})
    pruned = store.upsert_model({"name": "pruned", "source": "p", "origin": "derived", "parent_id": teacher})
    return teacher, pruned


def test_a_crows_improvement_of_a_model_with_broken_perplexity_is_not_evidence(store):
    teacher, pruned = _models(store)
    base = _finished_run(store, teacher, "crows_pairs", _crows_rows(0.70, 1), {})
    child = _finished_run(store, pruned, "crows_pairs", _crows_rows(0.52, 2), {})
    window = {"effective_context_length": 128, "effective_stride": 64}
    # perplexity runs made separately (not compared): 25 -> 530, the pruned model lost the language
    _finished_run(store, teacher, "perplexity", _perplexity_rows(3.2), window)
    _finished_run(store, pruned, "perplexity", _perplexity_rows(6.27), window)
    verdict = {v["metric"]: v for v in api.compare(store, [base, child]).verdicts}["stereotype_score"]
    assert verdict["verdict"] == NOT_EVIDENCE and verdict["quality_degraded"] is True
    assert "held-out perplexity" in verdict["note"] and "21" in verdict["note"]


def test_a_crows_improvement_without_any_quality_figure_is_unverified_not_better(store):
    teacher, pruned = _models(store)
    base = _finished_run(store, teacher, "crows_pairs", _crows_rows(0.70, 1), {})
    child = _finished_run(store, pruned, "crows_pairs", _crows_rows(0.52, 2), {})
    comparison = api.compare(store, [base, child])
    verdict = {v["metric"]: v for v in comparison.verdicts}["stereotype_score"]
    assert verdict["verdict"] == UNVERIFIED and verdict["verdict"] != BETTER
    assert any("unverified" in w for w in comparison.warnings)


def test_perplexity_runs_on_other_text_do_not_gate(store):
    teacher, pruned = _models(store)
    base = _finished_run(store, teacher, "crows_pairs", _crows_rows(0.70, 1), {})
    child = _finished_run(store, pruned, "crows_pairs", _crows_rows(0.52, 2), {})
    _finished_run(store, teacher, "perplexity", _perplexity_rows(3.2),
                  {"effective_context_length": 128, "effective_stride": 64})
    _finished_run(store, pruned, "perplexity", _perplexity_rows(6.27),
                  {"effective_context_length": 64, "effective_stride": 32})      # another window
    verdict = {v["metric"]: v for v in api.compare(store, [base, child]).verdicts}["stereotype_score"]
    assert verdict["verdict"] == UNVERIFIED
