"""KL divergence and top-1 agreement of a model against its baseline on the perplexity suite's
held-out windows (llama.cpp's `--kl-divergence` "Mean KLD" and "Same top p"): per window against
a direct full-vocabulary computation, then through real eval jobs (queue -> Worker -> store)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from engine import queue
from engine.specs import EvalSpec
from engine.worker import Worker
from tests.tinymodels import corpus

PPL = dict(suite="perplexity", data="builtin", context_length=64, stride=32, bootstrap_samples=200)


def _perturbed(source: Path, folder: Path, scale: float = 1.6, noise: float = 0.05) -> Path:
    """`source`'s weights scaled and jittered (a "really" changed model), same tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(source)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale).add_(noise * torch.randn(p.shape, generator=generator))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


def _direct(model, baseline, token_ids, windows) -> list[tuple[float, float, int, int]]:
    """(NLL sum, KL sum, agreeing tokens, tokens) per window, one window and one position at a
    time, full-vocabulary softmax of both models in float64."""
    import torch
    out = []
    with torch.no_grad():
        for w in windows:
            ids = torch.tensor([token_ids[w.begin:w.end]])
            q_logits = model(input_ids=ids).logits[0].double()
            p_logits = baseline(input_ids=ids).logits[0].double()
            nll = kl = 0.0
            agree = n = 0
            for t in range(w.score_from, w.end):        # token t predicted at column t - begin - 1
                j = t - w.begin - 1
                log_q = torch.log_softmax(q_logits[j], dim=-1)
                log_p = torch.log_softmax(p_logits[j], dim=-1)
                nll -= float(log_q[token_ids[t]])
                kl += float((log_p.exp() * (log_p - log_q)).sum())
                agree += int(int(log_p.argmax()) == int(log_q.argmax()))
                n += 1
            out.append((nll, kl, agree, n))
    return out


def test_window_divergences_match_a_direct_computation(tiny_gpt2, tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.evaluation import window_divergence
    from engine.evaluation.likelihood import plan_windows, text_token_ids, window_nlls
    from engine.evaluation.window_divergence import window_divergences
    child = _perturbed(tiny_gpt2, tmp_path / "child")
    baseline = AutoModelForCausalLM.from_pretrained(tiny_gpt2).eval()
    model = AutoModelForCausalLM.from_pretrained(child).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2)
    token_ids = text_token_ids(tokenizer, " ".join(corpus(12, seed=4)))
    windows = plan_windows(len(token_ids), 40, 24)       # last window shorter: padding in its batch
    assert len(windows) >= 4 and windows[-1].end - windows[-1].begin < 40
    # a few rows per float32 chunk, so that chunking is exercised
    monkeypatch.setattr(window_divergence, "DIVERGENCE_CHUNK_ENTRIES", 3 * len(tokenizer))
    cpu = torch.device("cpu")
    got = list(window_divergences(model, baseline, token_ids, windows, cpu, batch_size=3))
    want = _direct(model, baseline, token_ids, windows)
    nlls = list(window_nlls(model, token_ids, windows, cpu, batch_size=3))
    assert [d.window for d in got] == windows
    for d, (nll, kl, agree, n), (_, nll_ref, n_ref) in zip(got, want, nlls):
        assert d.n_tokens == n == n_ref
        assert d.nll_sum == pytest.approx(nll, rel=1e-5) and d.nll_sum == pytest.approx(nll_ref, rel=1e-6)
        assert d.kl_sum == pytest.approx(kl, rel=1e-4, abs=1e-6)
        assert d.top1_agree == agree
    total = sum(n for *_, n in want)
    assert sum(d.kl_sum for d in got) / total > 1e-3                  # really different
    assert sum(d.top1_agree for d in got) < total


def test_tokenizer_mismatch_reasons(tiny_gpt2):
    from transformers import AutoTokenizer

    from engine.evaluation.likelihood import text_token_ids
    from engine.evaluation.suites.perplexity import tokenizer_mismatch
    text = "The people in the city walk slowly to the river."
    mine, other = AutoTokenizer.from_pretrained(tiny_gpt2), AutoTokenizer.from_pretrained(tiny_gpt2)
    ids = text_token_ids(mine, text)
    assert tokenizer_mismatch(mine, other, text, ids) == ""
    other.add_tokens(["zzzextra"])
    assert tokenizer_mismatch(mine, other, text, ids) == f"vocabulary sizes {len(mine)} and {len(mine) + 1}"


def _other_tokenizer(folder: Path, like: Path) -> None:
    """Replace `folder`'s tokenizer by one of the same size trained on other text: the same
    vocabulary size, other ids for the same words."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    size = len(AutoTokenizer.from_pretrained(like))
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([s.upper()[::-1] for s in corpus()], vocab_size=size, min_frequency=1,
                            special_tokens=["<|endoftext|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>",
                                        eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                                        pad_token="<|endoftext|>")
    assert len(tokenizer) == size
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"):
        (folder / name).unlink(missing_ok=True)
    tokenizer.save_pretrained(folder)


def _copy_model(source: Path, folder: Path) -> Path:
    shutil.copytree(source, folder)
    return folder


def test_divergence_through_eval_jobs(home, store, tiny_gpt2, tmp_path):
    """One worker pass over four perplexity jobs:
    - the root model itself: no divergence computed;
    - an identical copy registered as its child (baseline = the lineage root): KL ~ 0, agreement 1;
    - a perturbed model with reference_model = the root: KL > 0, agreement < 1, the metrics
      reproduce from the stored windows;
    - a baseline whose tokenizer differs: skipped, with the reason in the run summary."""
    root = Path(tiny_gpt2).resolve()
    copy = _copy_model(root, tmp_path / "copy").resolve()
    changed = _perturbed(root, tmp_path / "changed").resolve()
    mismatched = _copy_model(root, tmp_path / "other-tokenizer").resolve()
    _other_tokenizer(mismatched, root)

    root_job = queue.submit(store, EvalSpec(model=str(root), **PPL))
    assert Worker(home, once=True, idle_exit_s=None).run() == 1
    root_id = store.run_for_job(root_job)["model_id"]
    store.upsert_model({"name": "copy", "source": str(copy), "origin": "derived", "path": str(copy),
                        "parent_id": root_id})
    jobs = {"copy": queue.submit(store, EvalSpec(model=str(copy), **PPL)),
            "changed": queue.submit(store, EvalSpec(model=str(changed), reference_model=str(root), **PPL)),
            "mismatch": queue.submit(store, EvalSpec(model=str(root), reference_model=str(mismatched), **PPL))}
    assert Worker(home, once=True, idle_exit_s=None).run() == 3
    runs = {"root": store.run_for_job(root_job)} | {k: store.run_for_job(j) for k, j in jobs.items()}
    assert all(r["status"] == "done" for r in runs.values()), [queue.job(store, j)["error"] for j in jobs.values()]
    metrics = {k: {m["name"]: m for m in store.metrics(r["id"])} for k, r in runs.items()}
    summaries = {k: json.loads(r["summary"]) for k, r in runs.items()}

    # the root is its own baseline: perplexity only
    assert "perplexity" in metrics["root"] and "kl_divergence" not in metrics["root"]
    assert "divergence_reference" not in summaries["root"] and "divergence_skipped" not in summaries["root"]
    assert all("kl_sum" not in json.loads(s["scores"]) for s in store.samples(runs["root"]["id"]))

    # an identical copy, compared with the root of its lineage
    assert summaries["copy"]["divergence_reference"]["ref"] == f"model:{root_id}"
    assert metrics["copy"]["kl_divergence"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["copy"]["top1_agreement"]["value"] == 1.0
    assert metrics["copy"]["perplexity"]["value"] == pytest.approx(metrics["root"]["perplexity"]["value"], rel=1e-6)

    # a perturbed model against the named reference
    kl, agree = metrics["changed"]["kl_divergence"], metrics["changed"]["top1_agreement"]
    windows = [json.loads(s["scores"]) for s in store.samples(runs["changed"]["id"])]
    tokens = sum(w["n_tokens"] for w in windows)
    assert tokens == summaries["changed"]["text_tokens"]
    assert kl["value"] == pytest.approx(math.fsum(w["kl_sum"] for w in windows) / tokens, rel=1e-12)
    assert agree["value"] == pytest.approx(sum(w["top1_agree"] for w in windows) / tokens, rel=1e-12)
    assert kl["value"] > 1e-3 and agree["value"] < 1.0
    assert kl["ci_low"] <= kl["value"] <= kl["ci_high"] and kl["ci_low"] < kl["ci_high"]
    assert agree["ci_low"] <= agree["value"] <= agree["ci_high"]
    assert (kl["higher_is_better"], agree["higher_is_better"]) == (0, 1)
    assert kl["n"] == agree["n"] == len(windows)
    assert summaries["changed"]["divergence_reference"]["ref"] == str(root)
    from engine import api
    comparison = api.compare(store, [runs["root"]["id"], runs["changed"]["id"]])
    # shown beside perplexity, never tested as a paired change (they already compare with it)
    assert {("kl_divergence", ""), ("top1_agreement", "")} <= {(n, s) for n, s, _ in comparison.rows}
    assert {v["metric"] for v in comparison.verdicts} == {"perplexity"}

    # tokenizers differ: perplexity as usual, no divergence, the reason recorded and logged
    reason = summaries["mismatch"]["divergence_skipped"]
    assert "tokenizers differ" in reason and "token ids differ" in reason
    assert "kl_divergence" not in metrics["mismatch"] and "perplexity" in metrics["mismatch"]
    assert any("skipped" in e["message"] and e["level"] == "warning"
               for e in store.events(runs["mismatch"]["job_id"]))

    # resuming: windows already stored are kept (here with kl_sum 0), the rest compared
    resumed = queue.submit(store, EvalSpec(model=str(changed), reference_model=str(root), **PPL))
    run_id = store.start_run(resumed, None, "perplexity", {}, None, None, "builtin", "cpu")
    kept = sorted(store.samples(runs["changed"]["id"]), key=lambda r: r["item_index"])[:3]
    store.add_samples(run_id, [{"key": r["key"], "item_index": r["item_index"], "sample_index": 0,
                                "scores": {**json.loads(r["scores"]), "kl_sum": 0.0}} for r in kept])
    assert Worker(home, once=True, idle_exit_s=None).run() == 1
    again = {m["name"]: m["value"] for m in store.metrics(store.run_for_job(resumed)["id"])}
    kept_kl = math.fsum(json.loads(r["scores"])["kl_sum"] for r in kept)
    assert again["kl_divergence"] == pytest.approx(kl["value"] - kept_kl / tokens, rel=1e-9)
    assert again["top1_agreement"] == pytest.approx(agree["value"], rel=1e-12)
    assert again["perplexity"] == pytest.approx(metrics["changed"]["perplexity"]["value"], rel=1e-12)


def test_resumed_run_keeps_stored_windows_and_partial_comparisons_are_absent():
    from engine.evaluation.aggregations.perplexity import perplexity_metrics
    rows = [{"item_index": i, "scores": {"begin": 32 * i, "end": 32 * i + 64, "score_from": 32 * i + 32,
                                         "nll_sum": 40.0, "n_tokens": 32, "kl_sum": 0.5 * (i + 1),
                                         "top1_agree": 30}} for i in range(6)]
    out, summary = perplexity_metrics(rows, n_boot=100, confidence=0.95, seed=0)
    got = {r["name"]: r for r in out}
    assert got["kl_divergence"]["value"] == pytest.approx(sum(0.5 * (i + 1) for i in range(6)) / 192)
    assert got["top1_agreement"]["value"] == pytest.approx(30 / 32)
    assert summary["ci_block_windows"] == 2
    del rows[2]["scores"]["kl_sum"], rows[2]["scores"]["top1_agree"]
    out, _ = perplexity_metrics(rows, n_boot=100, confidence=0.95, seed=0)
    absent = {r["name"]: r for r in out if r["name"] in ("kl_divergence", "top1_agreement")}
    assert all(math.isnan(r["value"]) and "only 5 of 6 windows" in r["reason"] for r in absent.values())
