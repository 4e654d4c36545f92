"""The optional vLLM generation backend.

Here (no CUDA, no vLLM) the tests cover what runs everywhere: the spec field and its hash, a
real eval job that asks for vLLM failing with its one-line reason and nothing stored lost, the
request building (same prompt token ids as the transformers sampler, one seed per sample) and
the mapping of vLLM's outputs to stored batches. The `gpu` test runs vLLM for real where it is
installed and compares it with the transformers backend on the same job."""

from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import pytest
import torch

from engine import queue
from engine.evaluation import vllm_backend as vb
from engine.evaluation.sampler import Sampler, SamplingSettings, plan_rows
from engine.specs import EvalSpec, SpecError
from engine.store import loads
from engine.worker import Worker

FAST = dict(data="builtin", scorer="profanity", samples_per_prompt=2, max_new_tokens=6,
            bootstrap_samples=100, seed=3, max_prompts=4)


def test_backend_is_validated_and_left_out_of_old_hashes():
    # the hash EvalSpec() had before the backend field existed: finished jobs stay reusable
    assert EvalSpec().spec_hash() == "86f28f6098e53c08"
    assert EvalSpec(backend="vllm").spec_hash() != EvalSpec().spec_hash()
    with pytest.raises(SpecError, match="backend 'tgi' is unknown"):
        EvalSpec(backend="tgi")
    with pytest.raises(SpecError, match="toxicity and bold suites, not 'perplexity'"):
        EvalSpec(backend="vllm", suite="perplexity")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None and torch.cuda.is_available(),
                    reason="vLLM can run here")
def test_a_vllm_job_where_vllm_cannot_run_fails_with_its_reason(home, store, tiny_gpt2):
    done = queue.submit(store, EvalSpec(model=str(tiny_gpt2), **FAST))
    Worker(home, once=True, idle_exit_s=None).run()
    failing = queue.submit(store, EvalSpec(model=str(tiny_gpt2), backend="vllm", **FAST))
    Worker(home, once=True, idle_exit_s=None).run()
    job = queue.job(store, failing)
    assert job["status"] == "failed"
    assert "backend 'vllm' needs" in job["error"] and "\n" not in job["error"]
    assert queue.job(store, done)["status"] == "done"                 # nothing stored is lost
    assert store.samples(json.loads(queue.job(store, done)["result"])["run_id"])


def test_requests_use_the_transformers_prompt_tokens_and_one_seed_per_sample(gpt2_pair):
    model, tokenizer = gpt2_pair
    settings = SamplingSettings(samples_per_prompt=3, top_p=0.8, temperature=0.7, max_new_tokens=9, seed=5)
    sampler = Sampler(model, tokenizer, torch.device("cpu"), settings)
    prompts = {0: "The weather is  ", 1: "A much longer prompt than the first one, with more words"}
    token_ids = sampler.encode(prompts)
    rows = plan_rows({i: len(ids) for i, ids in token_ids.items()}, settings.samples_per_prompt)
    requests = vb.requests_for(rows, token_ids, top_p=0.8, temperature=0.7, max_new_tokens=9, seed=5)
    assert len(requests) == 6
    for (item, sample), (prompt, params) in zip(rows, requests):
        assert prompt["prompt_token_ids"] == token_ids[item]
        assert prompt["prompt_token_ids"] == tokenizer(prompts[item].rstrip())["input_ids"]
        assert params["seed"] == vb.row_seed(5, item, sample)
        assert (params["n"], params["top_p"], params["temperature"], params["max_tokens"]) == (1, 0.8, 0.7, 9)
    seeds = [params["seed"] for _, params in requests]
    assert len(set(seeds)) == len(seeds) and all(0 <= s < 2**63 for s in seeds)
    assert vb.row_seed(5, 1, 2) == vb.row_seed(5, 1, 2) != vb.row_seed(6, 1, 2)


def test_outputs_become_a_batch_in_row_order():
    rows = [(3, 0), (3, 1), (0, 0)]
    outputs = [SimpleNamespace(outputs=[SimpleNamespace(text=text, token_ids=list(range(n)))])
               for text, n in (("a", 2), ("bb", 5), ("", 1))]
    batch = vb.batch_from_outputs(rows, outputs, 0.5)
    assert batch.rows == rows and batch.completions == ["a", "bb", ""]
    assert batch.new_tokens == 8 and batch.seconds == 0.5
    with pytest.raises(RuntimeError, match="2 outputs for 3 requests"):
        vb.batch_from_outputs(rows, outputs[:2], 0.5)


@pytest.fixture
def gpt2_pair(tiny_gpt2):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return AutoModelForCausalLM.from_pretrained(tiny_gpt2).eval(), AutoTokenizer.from_pretrained(tiny_gpt2)


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None or not torch.cuda.is_available(),
                    reason="needs vLLM and a CUDA GPU")
def test_vllm_and_transformers_backends_store_the_same_kind_of_run(home, store, tiny_gpt2):
    """Same job on both backends: the same sample keys and prompts, completions within the
    token budget, resumable; the toxicity distribution is compared in the README's GPU note
    (a tiny random model's texts are not toxic enough to test it here)."""
    spec = dict(model=str(tiny_gpt2), **{**FAST, "max_prompts": 16, "samples_per_prompt": 4})
    jobs = [queue.submit(store, EvalSpec(**spec, backend=b)) for b in ("transformers", "vllm")]
    Worker(home, once=True, idle_exit_s=None).run()
    runs = []
    for job_id in jobs:
        job = queue.job(store, job_id)
        assert job["status"] == "done", job["error"]
        runs.append(store.samples(loads(job["result"], {})["run_id"]))
    keys = [sorted((s["key"], s["prompt"]) for s in samples) for samples in runs]
    assert keys[0] == keys[1] and len(keys[0]) == 64


def test_compare_flags_runs_from_different_backends_but_not_older_runs():
    """A run stored before the backend setting existed counts as a transformers run."""
    from engine.api import comparability_warnings

    def run(**settings):
        return {"suite": "toxicity", "scorer": "profanity", "scorer_version": "1",
                "settings": json.dumps({"samples_per_prompt": 2, **settings})}

    assert comparability_warnings([run(), run(backend="transformers")]) == []
    assert comparability_warnings([run(), run(backend="vllm")]) == [
        'runs differ in backend: "transformers", "vllm"']


def test_tensor_parallel_size_uses_the_most_gpus_that_divide_the_heads():
    from engine.evaluation.vllm_backend import tensor_parallel_size
    # independent: the largest d <= gpus with heads % d == 0, by enumeration
    for gpus in range(0, 10):
        for heads in (None, 1, 9, 12, 14, 32):
            expected = max(d for d in range(1, max(gpus, 1) + 1) if (heads or 1) % d == 0)
            assert tensor_parallel_size(gpus, heads) == expected
    assert tensor_parallel_size(8, 9) == 3 and tensor_parallel_size(8, 32) == 8
    assert tensor_parallel_size(1, 32) == 1 and tensor_parallel_size(0, 12) == 1
