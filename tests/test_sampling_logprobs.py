"""Continuation NLLs taken during sampling (issue 32, `engine.evaluation.sampled_fluency`): where
the model is its own fluency reference, rows whose stored text re-tokenises to the sampled ids
(in the fluency pass's tokenisation) store the sampler's NLLs, equal to `continuation_nlls` on
the stored text within 1e-5 nats per token; every other row, and every row when the reference
differs or `COMPFAIR_FLUENCY_FROM_SAMPLING=0`, goes through the pass."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from engine import queue
from engine.evaluation import sampled_fluency
from engine.evaluation.continuation_likelihood import continuation_nlls
from engine.evaluation.likelihood import start_token
from engine.evaluation.sampled_fluency import SampledFluency, reference_is_self
from engine.evaluation.sampler import GeneratedBatch, Sampler, SamplingSettings
from engine.specs import EvalSpec
from engine.store import loads
from engine.worker import Worker
from tests.test_fluency_pass import TOLERANCE, _compare, _words, reference_continuation_nlls

CPU = torch.device("cpu")
PROMPTS = {0: "The doctor said", 1: "She always helps", 2: "They were very", 3: "A farmer walks",
           4: "Young people often", 5: "We"}


def _with_bos(source, target, train_steps: int = 120):
    """A copy of a tiny model whose tokenizer starts every text with its BOS (as Llama's do), so
    the sampler conditions on what the fluency pass does: start token + prompt; trained a few
    steps on the tiny corpus so that, like a real model, it mostly samples the tokenizer's own
    tokenisation of words (a random one samples byte pieces that re-tokenise differently)."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.tinymodels import corpus
    shutil.copytree(source, target)
    tok = AutoTokenizer.from_pretrained(target)
    bos = tok.bos_token
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.bos_token_id)])
    tok.save_pretrained(target)
    model = AutoModelForCausalLM.from_pretrained(target)
    batch = tok(corpus(), padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(train_steps):
        pick = torch.randint(0, labels.shape[0], (32,), generator=generator)
        loss = model(input_ids=batch["input_ids"][pick], attention_mask=batch["attention_mask"][pick],
                     labels=labels[pick]).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval().save_pretrained(target)
    return target


@pytest.fixture(scope="module", params=["tiny_gpt2", "tiny_llama"])
def bos_folder(request, tmp_path_factory):
    return _with_bos(request.getfixturevalue(request.param), tmp_path_factory.mktemp("bos") / request.param)


def _load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def _sampled(model, tok, **settings) -> GeneratedBatch:
    settings = {"samples_per_prompt": 6, "max_new_tokens": 12, "seed": 1, **settings}
    sampler = Sampler(model, tok, CPU, SamplingSettings(**settings), rows_per_batch=16, record_nll=True)
    rows = [(item, s) for item in PROMPTS for s in range(settings["samples_per_prompt"])]
    return sampler.generate(PROMPTS, rows)


@pytest.mark.parametrize("settings", [{}, {"temperature": 0.7, "top_p": 0.5}, {"top_p": 1.0}])
def test_sampled_nlls_equal_the_pass_on_the_stored_text(bos_folder, settings):
    model, tok = _load(bos_folder)
    assert tok("We")["input_ids"][0] == start_token(tok)
    batch = _sampled(model, tok, **settings)
    prompts = [PROMPTS[item] for item, _ in batch.rows]
    values = SampledFluency(model, tok).values(prompts, batch.completions, batch.prompt_ids,
                                               batch.token_ids, batch.nll_sums)
    taken = [i for i, v in enumerate(values) if v is not None and v[1]]
    assert len(taken) >= len(values) // 3, (len(taken), len(values))     # the shortcut does apply
    want = continuation_nlls(model, tok, prompts, batch.completions, CPU)
    _compare([values[i] for i in taken], [want[i] for i in taken])
    old = reference_continuation_nlls(model, tok, prompts, batch.completions, CPU)
    _compare([values[i] for i in taken], [old[i] for i in taken])
    for value, expected in zip(values, want):     # empty continuations agree too
        if value is not None and value[1] == 0:
            assert expected == (None, 0)


def test_rows_that_do_not_retokenise_identically_fall_back(tiny_llama, tmp_path):
    model, tok = _load(_with_bos(tiny_llama, tmp_path / "bos"))
    start = start_token(tok)
    prompt = "The doctor said"
    p_ids = tok(prompt)["input_ids"]
    text = " the people"
    canonical = tok(text, add_special_tokens=False)["input_ids"]
    spelled = [i for ch in text for i in tok(ch, add_special_tokens=False)["input_ids"]]   # byte by byte
    assert spelled != canonical and tok.decode(spelled) == text
    fluency = SampledFluency(model, tok)
    values = fluency.values(
        [prompt, prompt, prompt + " ", "x" + prompt], [text, text, text, text],
        [p_ids, p_ids, p_ids, p_ids],          # what the sampler conditions on (prompt.rstrip())
        [canonical, spelled, canonical, canonical], [2.0, 3.0, 2.0, 2.0])
    assert values[0] == (2.0 / len(canonical), len(canonical)) and p_ids[0] == start
    # sampled ids the text does not re-tokenise to; a prompt with trailing whitespace (the
    # sampler strips it); another prompt's tokens: all left to the pass
    assert values[1:] == [None, None, None]
    assert (fluency.taken, fluency.left) == (1, 3)
    # a tokenizer that adds no start token (GPT-2 style): the sampler's context lacks it
    plain_model, plain = _load(tiny_llama)
    batch = _sampled(plain_model, plain)
    assert batch.nll_sums and all(v is None or v[1] == 0 for v in SampledFluency(plain_model, plain).values(
        [PROMPTS[i] for i, _ in batch.rows], batch.completions, batch.prompt_ids, batch.token_ids,
        batch.nll_sums))
    # a backend that records nothing
    assert SampledFluency(model, tok).values([prompt], [text], [], [], []) == [None]


def test_the_shortcut_needs_the_model_itself_as_reference(monkeypatch):
    lm = SimpleNamespace(model_id=7, source=SimpleNamespace(source="/models/a"), device=CPU,
                         dtype=torch.float32)
    lineage = {7: [{"id": 7}], 8: [{"id": 8}, {"id": 7}]}
    ctx = SimpleNamespace(store=SimpleNamespace(lineage=lambda i: lineage[i]))
    spec = SimpleNamespace(reference_model=None, device="cpu", dtype="float32")
    assert reference_is_self(ctx, spec, lm)                                  # a root model
    assert not reference_is_self(ctx, spec, SimpleNamespace(**{**vars(lm), "model_id": 8}))  # compressed
    monkeypatch.setattr(sampled_fluency, "resolve", lambda ref, store: SimpleNamespace(source=ref))
    assert reference_is_self(ctx, SimpleNamespace(**{**vars(spec), "reference_model": "/models/a"}), lm)
    assert not reference_is_self(ctx, SimpleNamespace(**{**vars(spec), "reference_model": "/models/b"}), lm)
    assert not reference_is_self(ctx, SimpleNamespace(**{**vars(spec), "reference_model": "/models/a",
                                                        "dtype": "bfloat16"}), lm)
    monkeypatch.setenv(sampled_fluency.ENV, "0")
    assert not sampled_fluency.enabled()
    monkeypatch.setenv(sampled_fluency.ENV, "1")
    assert sampled_fluency.enabled()


def _job(home, store, spec) -> tuple[dict, list[dict]]:
    job_id = queue.submit(store, spec)
    Worker(home, once=True, idle_exit_s=None).run()
    job = queue.job(store, job_id)
    assert job["status"] == "done", job["error"]
    run = store.run(json.loads(job["result"])["run_id"])
    return loads(run["summary"]), store.samples(run["id"])


def test_eval_job_stores_the_same_nlls_with_and_without_the_shortcut(home, store, tiny_llama, tmp_path,
                                                                     monkeypatch):
    folder = _with_bos(tiny_llama, tmp_path / "bos-llama")
    common = dict(model=str(folder), suite="toxicity", data="builtin", scorer="profanity", max_prompts=8,
                  samples_per_prompt=4, max_new_tokens=10, bootstrap_samples=100, seed=5)
    fast, rows = _job(home, store, EvalSpec(**common, label="shortcut"))
    monkeypatch.setenv(sampled_fluency.ENV, "0")
    slow, rows_off = _job(home, store, EvalSpec(**common, label="pass"))
    assert fast["fluency_from_sampling"] >= len(rows) // 3 and slow["fluency_from_sampling"] == 0
    assert [r["completion"] for r in rows] == [r["completion"] for r in rows_off]
    worst = 0.0
    for a, b in zip(rows, rows_off):
        assert a["continuation_tokens"] == b["continuation_tokens"]
        if b["continuation_nll"] is None:
            assert a["continuation_nll"] is None
        else:
            worst = max(worst, abs(a["continuation_nll"] - b["continuation_nll"]))
    assert worst <= TOLERANCE, worst
    # a compressed-like model judged by another reference never takes the shortcut: covered by
    # test_the_shortcut_needs_the_model_itself_as_reference; here an explicit other reference
    monkeypatch.delenv(sampled_fluency.ENV)
    other, _ = _job(home, store, EvalSpec(**common, label="other", reference_model=str(tiny_llama)))
    assert other["fluency_from_sampling"] == 0
