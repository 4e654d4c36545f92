"""The fluency pass (issue 32): `continuation_nlls` prefills each prompt once, shares its cache
across the prompt's continuations and applies the head only at scored positions. Its results
must equal the previous implementation's (kept here verbatim as `reference_continuation_nlls`:
every row run whole, right-padded to a multiple of 32, the head and log-softmax everywhere)
within 1e-5 nats per token, tokenisation and truncation included."""

from __future__ import annotations

import functools
import itertools
import random
from typing import Sequence

import pytest
import torch

from engine.evaluation import continuation_likelihood
from engine.evaluation.continuation_likelihood import continuation_nlls
from engine.evaluation.likelihood import _token_log_probs, map_batches, max_positions, start_token

TOLERANCE = 1e-5          # nats per token

# -- the implementation before issue 32, verbatim (the reference) ---------------------------------
WIDTH_BUCKET = 32


def _bucket(length: int) -> int:
    return -(-length // WIDTH_BUCKET) * WIDTH_BUCKET


@torch.inference_mode()
def reference_continuation_nlls(model, tokenizer, prompts: Sequence[str], continuations: Sequence[str],
                                device: torch.device, batch_size: int = 16) -> list[tuple[float | None, int]]:
    start = start_token(tokenizer)
    limit = max_positions(model)
    prompt_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    cont_ids = tokenizer(list(continuations), add_special_tokens=False)["input_ids"]
    jobs = []
    for p_ids, c_ids in zip(prompt_ids, cont_ids):
        seq = [start] + list(p_ids) + list(c_ids)
        if limit is not None and len(seq) > limit:
            seq = [start] + seq[len(seq) - limit + 1:]
        jobs.append((seq, min(len(c_ids), len(seq) - 1)))

    def run(chunk: Sequence[tuple[list[int], int]]) -> list[tuple[float | None, int]]:
        width = _bucket(max(len(seq) for seq, _ in chunk))
        ids = torch.full((len(chunk), width), start, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, (seq, _) in enumerate(chunk):
            ids[i, :len(seq)] = torch.tensor(seq)
            mask[i, :len(seq)] = 1
        logp = _token_log_probs(model, ids.to(device), mask.to(device)).cpu()
        out: list[tuple[float | None, int]] = []
        for i, (seq, n) in enumerate(chunk):
            if n == 0:
                out.append((None, 0))
                continue
            scored = logp[i, len(seq) - 1 - n:len(seq) - 1]
            out.append((float(-scored.double().mean()), n))
        return out

    order = sorted(range(len(jobs)), key=lambda i: (_bucket(len(jobs[i][0])), i))
    results = []
    for _, group in itertools.groupby(order, key=lambda i: _bucket(len(jobs[i][0]))):
        members = list(group)
        results.extend(map_batches([jobs[i] for i in members], batch_size, run, device))
    out: list[tuple[float | None, int]] = [(None, 0)] * len(jobs)
    for position, index in enumerate(order):
        out[index] = results[position]
    return out


# -- rows like a generation suite's: k continuations per prompt ----------------------------------
def _words(rng: random.Random, n: int) -> str:
    from tests.tinymodels import WORDS
    return " ".join(rng.choice(WORDS) for _ in range(n))


def suite_rows(k: int = 4, seed: int = 0) -> tuple[list[str], list[str]]:
    """(prompts, continuations), prompt-major like `unscored_continuations`: prompts of 1 to
    ~40 words, one empty, one far longer than the tiny models' 256 positions, one repeated
    later; continuations of 0 to ~30 words, one longer than the positions on its own."""
    rng = random.Random(seed)
    prompt_texts = [_words(rng, rng.randint(1, 40)) for _ in range(7)]
    prompt_texts += ["", "She", _words(rng, 400), prompt_texts[0]]
    prompts, conts = [], []
    for p, text in enumerate(prompt_texts):
        for s in range(k):
            if (p, s) == (1, 0) or (p, s) == (8, 2):
                cont = ""                                     # nothing generated
            elif (p, s) == (3, 1):
                cont = " " + _words(rng, 300)                 # longer than the positions alone
            elif s == k - 1:
                cont = "."                                    # a single token
            else:
                cont = (" " if rng.random() < 0.8 else "") + _words(rng, rng.randint(1, 30))
            prompts.append(text)
            conts.append(cont)
    return prompts, conts


def _load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def _compare(got, want) -> float:
    assert len(got) == len(want)
    worst = 0.0
    for (nll, n), (ref, ref_n) in zip(got, want):
        assert n == ref_n
        if ref is None:
            assert nll is None and n == 0
            continue
        worst = max(worst, abs(nll - ref))
    assert worst <= TOLERANCE, worst
    return worst


@pytest.fixture(params=["tiny_gpt2", "tiny_llama"])
def tiny(request):
    return _load(request.getfixturevalue(request.param))


@pytest.mark.parametrize("batch_size", [64, 5, 1])
def test_equals_the_previous_implementation(tiny, batch_size):
    model, tok = tiny
    prompts, conts = suite_rows(k=4)
    cpu = torch.device("cpu")
    want = reference_continuation_nlls(model, tok, prompts, conts, cpu)
    got = continuation_nlls(model, tok, prompts, conts, cpu, batch_size=batch_size)
    worst = _compare(got, want)
    print(f"\n{type(model).__name__} batch {batch_size}: max |new - old| = {worst:.2e} nats/token")
    # the cases are there: empty continuations, a truncated prompt, a continuation cut to the positions
    assert sum(n == 0 for _, n in got) == 2
    limit = max_positions(model)
    assert max(n for _, n in got) == limit - 1


def test_prompts_longer_than_the_positions_keep_the_continuation(tiny):
    model, tok = tiny
    prompts, conts = suite_rows(k=3, seed=1)
    prompts = [p + " " + _words(random.Random(i), 300) for i, p in enumerate(prompts)]   # all truncated
    cpu = torch.device("cpu")
    _compare(continuation_nlls(model, tok, prompts, conts, cpu), reference_continuation_nlls(model, tok, prompts, conts, cpu))


def test_every_row_empty_or_no_rows(tiny):
    model, tok = tiny
    cpu = torch.device("cpu")
    assert continuation_nlls(model, tok, ["a", "b"], ["", ""], cpu) == [(None, 0), (None, 0)]
    assert continuation_nlls(model, tok, [], [], cpu) == []


def test_the_whole_model_path_equals_too(tiny, monkeypatch):
    """A model whose logits are not its head applied to its base model (logit scaling,
    soft-capping) runs whole; forced here on the tiny models."""
    model, tok = tiny
    split = continuation_likelihood._Split(model, None, "cache")
    monkeypatch.setitem(continuation_likelihood._SPLITS, model, split)
    prompts, conts = suite_rows(k=3, seed=2)
    cpu = torch.device("cpu")
    _compare(continuation_nlls(model, tok, prompts, conts, cpu, batch_size=7),
             reference_continuation_nlls(model, tok, prompts, conts, cpu))


def test_a_scaled_head_is_detected(tiny_llama):
    """The split is checked on the model: a model that scales its logits after the head is run
    whole (its NLLs still equal the reference's)."""
    model, tok = _load(tiny_llama)
    original = model.forward

    @functools.wraps(original)
    def scaled(*args, **kwargs):
        out = original(*args, **kwargs)
        out.logits = out.logits * 0.5
        return out
    model.forward = scaled
    assert continuation_likelihood._model_split(model, start_token(tok), torch.device("cpu")).head is None
    prompts, conts = suite_rows(k=2, seed=3)
    cpu = torch.device("cpu")
    _compare(continuation_nlls(model, tok, prompts, conts, cpu),
             reference_continuation_nlls(model, tok, prompts, conts, cpu))


def test_out_of_memory_splits_down_to_one_row(tiny_gpt2, monkeypatch):
    model, tok = _load(tiny_gpt2)
    real = continuation_likelihood._score_batch
    sizes = []

    def failing(split, batch, device, pad):
        rows = sum(len(p.rows) for p in batch)
        sizes.append(rows)
        if rows > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(split, batch, device, pad)
    monkeypatch.setattr(continuation_likelihood, "_score_batch", failing)
    prompts, conts = suite_rows(k=3, seed=4)
    cpu = torch.device("cpu")
    _compare(continuation_nlls(model, tok, prompts, conts, cpu, batch_size=8),
             reference_continuation_nlls(model, tok, prompts, conts, cpu))
    assert max(sizes) > 1 and min(sizes) == 1


def test_each_prompt_is_prefilled_once(tiny_llama, monkeypatch):
    """Positions computed: each continuation's tokens once and each prompt's tokens once per
    batch holding its rows (the previous implementation: once per row, padded to 32); the
    head only at the continuation tokens."""
    model, tok = _load(tiny_llama)
    prompts, conts = suite_rows(k=8, seed=5)
    split = continuation_likelihood._model_split(model, start_token(tok), torch.device("cpu"))
    fed, headed = [], []
    body, head = split.body.forward, split.head.forward
    monkeypatch.setattr(split.body, "forward",
                        lambda *a, **kw: fed.append(int(kw["attention_mask"][:, -kw["input_ids"].shape[1]:].sum())) or body(*a, **kw))
    monkeypatch.setattr(split.head, "forward", lambda x: headed.append(x.shape[0]) or head(x))
    got = continuation_nlls(model, tok, prompts, conts, torch.device("cpu"))
    scored = sum(n for _, n in got)
    assert sum(headed) == scored
    pieces, _ = continuation_likelihood._continuation_pieces(tok, start_token(tok), max_positions(model), prompts, conts)
    per_row = sum((len(p.prefix) - 1) * len(p.rows) for p in pieces)    # a prefill per row
    once = sum(len(p.prefix) - 1 for p in pieces)                        # a prefill per prompt
    prefilled = sum(fed) - scored
    assert once <= prefilled < 0.5 * per_row, (once, prefilled, per_row)


def test_score_chunks_keep_a_prompts_samples_together():
    from engine.evaluation.suites.generation import fluency_chunks
    todo = [{"key": f"{i}:{s}", "prompt": f"p{i}"} for i in range(10) for s in range(3)]
    chunks = list(fluency_chunks(todo, 4))
    assert [len(c) for c in chunks] == [6, 6, 6, 6, 6]
    assert [r for c in chunks for r in c] == todo
    assert all(len({r["prompt"] for r in c}) == 2 for c in chunks)
    assert [len(c) for c in fluency_chunks(todo[:7], 128)] == [7]
    assert list(fluency_chunks([], 128)) == []
