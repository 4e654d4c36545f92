"""The sampler: nucleus sampling faithful to top-p, generations that depend on (seed, item,
sample) and not on batching, out-of-memory halving, and only new tokens decoded."""

from __future__ import annotations

import pytest
import torch

from engine.evaluation import nucleus_sampling
from engine.evaluation import sampler as g
from engine.evaluation.sampler import Sampler, SamplingSettings, plan_batches

PROMPTS = {0: "The people in the city", 1: "She said", 2: "A very kind doctor always helps the",
           3: "They think", 4: "Old friends walk slowly to the river and", 5: "We"}


@pytest.fixture(scope="module")
def gpt2(tiny_gpt2):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2).eval()
    return model, AutoTokenizer.from_pretrained(tiny_gpt2)


def _sampler(gpt2, rows=None, **settings) -> Sampler:
    model, tokenizer = gpt2
    defaults = dict(samples_per_prompt=2, max_new_tokens=6, seed=5)
    return Sampler(model, tokenizer, torch.device("cpu"), SamplingSettings(**{**defaults, **settings}), rows)


def _all(sampler: Sampler, done=frozenset()) -> dict[tuple[int, int], str]:
    out = {}
    for batch in sampler.stream(PROMPTS, set(done)):
        out.update(zip(batch.rows, batch.completions))
    return out


def test_nucleus_matches_top_p_distribution():
    from transformers.generation.logits_process import TopPLogitsWarper
    torch.manual_seed(0)
    logits = torch.randn(1, 1000) * 4
    n = 20_000
    tokens = nucleus_sampling.nucleus_sample(logits.expand(n, -1), torch.rand(n, dtype=torch.float64), 0.9, 0.8)
    reference = torch.softmax(TopPLogitsWarper(0.9)(None, logits / 0.8), dim=-1)[0]
    empirical = torch.bincount(tokens, minlength=1000).double() / n
    assert empirical[reference == 0].sum() == 0                  # never outside the nucleus
    assert 0.5 * (empirical - reference).abs().sum() < 0.03       # total variation


def test_nucleus_partial_topk_equals_full_sort(monkeypatch):
    torch.manual_seed(1)
    vocab = 6000
    # rows from peaked (nucleus of a few tokens) to flat (nucleus > 4096 candidates)
    logits = torch.randn(6, vocab) * torch.tensor([[8.0], [4.0], [2.0], [1.0], [0.1], [0.0]])
    uniforms = torch.rand(6, dtype=torch.float64)
    fast = nucleus_sampling.nucleus_sample(logits, uniforms, 0.9, 1.0)
    monkeypatch.setattr(nucleus_sampling, "CANDIDATES", ())
    assert torch.equal(fast, nucleus_sampling.nucleus_sample(logits, uniforms, 0.9, 1.0))


def test_top_p_one_samples_the_whole_distribution():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0]]).expand(4000, -1)
    uniforms = (torch.arange(4000, dtype=torch.float64) + 0.5) / 4000
    counts = torch.bincount(nucleus_sampling.nucleus_sample(logits, uniforms, 1.0, 1.0), minlength=4)
    assert counts.tolist() == [1000, 1000, 1000, 1000]


def test_same_seed_same_generations_and_other_seed_differs(gpt2):
    first = _all(_sampler(gpt2))
    assert first == _all(_sampler(gpt2))
    assert first != _all(_sampler(gpt2, seed=6))
    assert len(first) == len(PROMPTS) * 2


def test_generations_do_not_depend_on_batching_or_what_is_stored(gpt2):
    reference = _all(_sampler(gpt2, rows=64))
    assert _all(_sampler(gpt2, rows=4)) == reference
    assert _all(_sampler(gpt2, rows=1)) == reference
    done = {g.sample_key(*row) for row in list(reference)[::2]}
    resumed = _all(_sampler(gpt2, rows=64), done)
    assert set(resumed) == {row for row in reference if g.sample_key(*row) not in done}
    assert all(resumed[row] == reference[row] for row in resumed)


def test_out_of_memory_halves_the_batch_and_keeps_results(gpt2):
    model, _ = gpt2
    reference = _all(_sampler(gpt2, rows=16))
    sampler = _sampler(gpt2, rows=16)
    real_forward = model.forward
    calls = []

    def forward_with_small_memory(*args, **kwargs):
        rows = kwargs["input_ids"].shape[0]
        calls.append(rows)
        if rows > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(*args, **kwargs)

    model.forward = forward_with_small_memory
    try:
        assert _all(sampler) == reference
        assert sampler.working_rows <= 3 and max(calls) > 3
        sampler.working_rows = 16
        model.forward = lambda *a, **k: (_ for _ in ()).throw(torch.OutOfMemoryError("out of memory"))
        with pytest.raises(torch.OutOfMemoryError):
            sampler.generate(PROMPTS, [(0, 0), (1, 0)])
    finally:
        del model.forward


def test_only_new_tokens_are_decoded(gpt2):
    for (item, _), text in _all(_sampler(gpt2, max_new_tokens=5)).items():
        assert not text.startswith(PROMPTS[item])
        assert "<|endoftext|>" not in text


def test_plan_batches_longest_first_and_independent_of_storage():
    plan = plan_batches({0: 3, 1: 9, 2: 5}, samples_per_prompt=2, rows_per_batch=4)
    assert plan == [[(1, 0), (1, 1), (2, 0), (2, 1)], [(0, 0), (0, 1)]]


def test_long_prompts_keep_their_end(gpt2):
    model, tokenizer = gpt2
    sampler = _sampler(gpt2)
    limit = model.config.n_positions - 6
    ids = sampler.encode({0: "the people " * 400})[0]
    assert len(ids) == limit
    batch = sampler.generate({0: "the people " * 400}, [(0, 0)])
    assert len(batch.completions) == 1


def test_sentence_log_likelihoods_batched_padded_and_out_of_memory_split(gpt2):
    from engine.evaluation.likelihood import sentence_log_likelihoods
    model, tokenizer = gpt2
    sentences = ["The people walk.", "She is a very kind doctor who helps the old man.", "We", "They think so."]
    cpu = torch.device("cpu")
    one_by_one = [sentence_log_likelihoods(model, tokenizer, [s], cpu)[0] for s in sentences]
    batched = sentence_log_likelihoods(model, tokenizer, sentences, cpu, batch_size=4)
    assert batched == pytest.approx(one_by_one, rel=1e-5)           # right padding is not scored
    real_forward = model.forward

    def forward_with_small_memory(*args, **kwargs):
        if kwargs["input_ids"].shape[0] > 1:
            raise torch.OutOfMemoryError("out of memory")
        return real_forward(*args, **kwargs)

    model.forward = forward_with_small_memory
    try:
        assert sentence_log_likelihoods(model, tokenizer, sentences, cpu, batch_size=4) == \
            pytest.approx(one_by_one, rel=1e-5)
    finally:
        del model.forward
