"""The fast path samples what the baseline samples, and the benchmark runs.

compfair's sampler and the transformers `pipeline` (the benchmark's baseline) use different
random streams, so their generations cannot be compared one by one. What must agree is the
distribution they draw from. On a tiny GPT-2, both are compared with the exact nucleus
distribution computed from the model's own next-token logits (a chi-square goodness-of-fit test
with every sample inside the nucleus), and with each other on whole continuations (the mean
log-probability of what they generate, with prompts of different lengths sharing a left-padded
batch in compfair's sampler). Negative controls show that the test has the power to reject a
sampler with a wrong top-p, a wrong temperature, or no nucleus at all. Seeds are fixed, so the
test is deterministic.

No test here asserts a speed ratio: timings belong to `compfair bench`, not to unit tests."""

from __future__ import annotations

import contextlib

import json
import math
import platform
import sys

import numpy as np
import pytest
import torch

from engine.evaluation import cpu_paths
from engine.evaluation import reserved_cache
from engine.evaluation import sampler as g
from engine.evaluation.sampler import Sampler, SamplingSettings

TOP_P, TEMPERATURE = 0.9, 0.1       # a peaked distribution: nucleus of ~70 tokens, top one ~0.66
N_FIRST = 3000                      # first-token samples per sampler
PROMPTS = {0: "She said", 1: "A very kind doctor always helps the", 2: "They think"}


@pytest.fixture(scope="module")
def gpt2(tiny_gpt2):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2).eval()
    return model, AutoTokenizer.from_pretrained(tiny_gpt2)


@pytest.fixture(scope="module")
def pipe(gpt2):
    from transformers import pipeline
    model, tokenizer = gpt2
    return pipeline("text-generation", model=model, tokenizer=tokenizer, device=torch.device("cpu"))


def exact_nucleus(model, tokenizer, prompt: str, top_p: float = TOP_P,
                  temperature: float = TEMPERATURE) -> torch.Tensor:
    """The exact next-token distribution after `prompt`: softmax(logits / T) restricted to the
    nucleus (transformers' own TopPLogitsWarper) and renormalised."""
    from transformers.generation.logits_process import TopPLogitsWarper
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits[:, -1, :].double()
    return torch.softmax(TopPLogitsWarper(top_p)(ids, logits / temperature), dim=-1)[0]


def chi_square_p(tokens: torch.Tensor, reference: torch.Tensor) -> tuple[float, int]:
    """(p-value of a chi-square goodness-of-fit test, samples outside the reference's support).

    Tokens expected at least 5 times are their own bins; the rest of the support is pooled."""
    from scipy.stats import chisquare
    counts = torch.bincount(tokens, minlength=reference.numel()).double()
    outside = int(counts[reference == 0].sum())
    if outside:
        return 0.0, outside
    expected = reference * tokens.numel()
    big = expected >= 5
    observed = torch.cat([counts[big], counts[~big & (reference > 0)].sum().reshape(1)])
    wanted = torch.cat([expected[big], expected[~big & (reference > 0)].sum().reshape(1)])
    return float(chisquare(observed.numpy(), wanted.numpy()).pvalue), outside


def sampler_tokens(model, tokenizer, prompts: dict[int, str], k: int, steps: int,
                   monkeypatch, seed: int = 1, temperature: float = TEMPERATURE
                   ) -> dict[tuple[int, int], list[int]]:
    """Token ids compfair's Sampler draws for every (item, sample), recorded where the real
    sampler draws them (its `nucleus_sample` calls), all rows in one left-padded batch."""
    drawn: list[torch.Tensor] = []
    real = g.nucleus_sample

    def recording(*args, **kwargs):
        out = real(*args, **kwargs)
        drawn.append(out.clone())
        return out

    monkeypatch.setattr(g, "nucleus_sample", recording)
    settings = SamplingSettings(samples_per_prompt=k, top_p=TOP_P, temperature=temperature,
                                max_new_tokens=steps, seed=seed)
    sampler = Sampler(model, tokenizer, torch.device("cpu"), settings, rows_per_batch=len(prompts) * k)
    batches = list(sampler.stream(prompts))
    monkeypatch.setattr(g, "nucleus_sample", real)
    assert len(batches) == 1                              # one batch: prompts of several lengths
    per_step = torch.stack(drawn, dim=1).tolist()         # [rows, steps actually run]
    return {row: per_step[r] for r, row in enumerate(batches[0].rows)}


def pipeline_tokens(pipe, prompt: str, k: int, steps: int, seed: int = 1) -> list[list[int]]:
    torch.manual_seed(seed)
    n_prompt = pipe.preprocess(prompt)["input_ids"].shape[-1]
    out = pipe(prompt, num_return_sequences=k, do_sample=True, top_p=TOP_P, top_k=0,
               temperature=TEMPERATURE, max_new_tokens=steps,
               return_tensors=True, pad_token_id=pipe.tokenizer.pad_token_id)
    return [list(o["generated_token_ids"][n_prompt:n_prompt + steps]) for o in out]


def test_first_tokens_follow_the_exact_nucleus_distribution(gpt2, pipe, monkeypatch):
    model, tokenizer = gpt2
    prompt = PROMPTS[0]
    reference = exact_nucleus(model, tokenizer, prompt)
    assert 10 < int((reference > 0).sum()) < 200 and reference.max() > 0.3   # a useful shape
    fast = torch.tensor([t[0] for t in sampler_tokens(model, tokenizer, {0: prompt}, N_FIRST, 1,
                                                      monkeypatch).values()])
    slow = torch.tensor([t[0] for t in pipeline_tokens(pipe, prompt, N_FIRST, 1)])
    for tokens in (fast, slow):
        p_value, outside = chi_square_p(tokens, reference)
        assert outside == 0
        assert p_value > 1e-3
    # the two samplers agree with each other (total variation of the empirical distributions)
    tv = 0.5 * (torch.bincount(fast, minlength=reference.numel()).double()
                - torch.bincount(slow, minlength=reference.numel()).double()).abs().sum() / N_FIRST
    assert tv < 0.1

    # Power: the same test rejects samplers with a wrong top-p, temperature or no nucleus.
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits[:, -1, :].expand(N_FIRST, -1)
    uniforms = torch.rand(N_FIRST, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    right = g.nucleus_sample(logits, uniforms, TOP_P, TEMPERATURE)
    assert chi_square_p(right, reference)[0] > 1e-3
    for top_p, temperature in ((0.8, TEMPERATURE), (TOP_P, 0.12), (1.0, TEMPERATURE)):
        wrong = g.nucleus_sample(logits, uniforms, top_p, temperature)
        p_value, outside = chi_square_p(wrong, reference)
        assert p_value < 1e-6 or outside > 0, (top_p, temperature)


def _continuation_log_probs(model, prompt_ids: list[int], continuations: list[list[int]]) -> np.ndarray:
    """Mean log-probability per token (T=1) of each continuation after the prompt."""
    ids = torch.tensor([prompt_ids + c for c in continuations])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits.double(), dim=-1)
    n = len(prompt_ids)
    picked = logp[:, n - 1:-1, :].gather(2, ids[:, n:].unsqueeze(2)).squeeze(2)
    return picked.mean(dim=1).numpy()


def test_whole_continuations_match_the_pipeline_with_padded_prompts(gpt2, pipe, monkeypatch):
    """Positions, the expanded KV cache and left padding: six-token continuations of three
    prompts of different lengths, generated in one padded batch by compfair and prompt by prompt
    by the pipeline, have the same mean log-probability per prompt (within 4 standard errors),
    while a sampler at a slightly wrong temperature is told apart (the test's power)."""
    model, tokenizer = gpt2
    k, steps = 400, 6
    fast = sampler_tokens(model, tokenizer, PROMPTS, k, steps, monkeypatch)
    off = sampler_tokens(model, tokenizer, PROMPTS, k, steps, monkeypatch, temperature=0.13)
    eos = tokenizer.eos_token_id

    def log_probs(prompt_ids, continuations):
        kept = [c for c in continuations if len(c) == steps and eos not in c]
        assert len(kept) > 0.9 * k
        return _continuation_log_probs(model, prompt_ids, kept)

    def z(a, b) -> float:
        return abs(a.mean() - b.mean()) / math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))

    for item, prompt in PROMPTS.items():
        prompt_ids = tokenizer(prompt).input_ids
        theirs = log_probs(prompt_ids, pipeline_tokens(pipe, prompt, k, steps))
        ours = log_probs(prompt_ids, [fast[(item, s)] for s in range(k)])
        wrong = log_probs(prompt_ids, [off[(item, s)] for s in range(k)])
        assert z(ours, theirs) < 4, prompt
        assert z(wrong, theirs) > 6, prompt


def test_consecutive_eval_jobs_load_the_model_once(home, store, tiny_gpt2, monkeypatch):
    import engine.model_loader as registry
    from engine import queue
    from engine.specs import EvalSpec
    from engine.worker import Worker

    loads: list[str] = []
    real = registry._load_pretrained

    def counting(path, *args, **kwargs):
        loads.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(registry, "_load_pretrained", counting)
    common = dict(model=str(tiny_gpt2), data="builtin", scorer="profanity", max_prompts=3,
                  samples_per_prompt=2, max_new_tokens=4, bootstrap_samples=100)
    first = queue.submit(store, EvalSpec(**common, seed=1))
    second = queue.submit(store, EvalSpec(**common, seed=2, suite="toxicity", top_p=0.8))
    assert Worker(home, once=True, idle_exit_s=None).run() == 2
    assert [queue.job(store, j)["status"] for j in (first, second)] == ["done", "done"]
    assert len(loads) == 1


@pytest.fixture
def bench_result(home, tiny_gpt2):
    from engine.bench import BenchSettings, run_bench
    messages: list[str] = []
    settings = BenchSettings(model=str(tiny_gpt2), prompts=3, k=2, new_tokens=3, detoxify=False,
                             distill_steps=1, distill_batch=2, seq_len=16, calibration_samples=2,
                             home=str(home.root))
    return run_bench(settings, say=messages.append), messages


def test_bench_smoke_on_a_tiny_model(bench_result, home):
    from engine.bench import summary_tables
    result, messages = bench_result
    base, fast = result["generate"], result["compfair"]
    assert base["generations"] == fast["generations"] == 6
    for record in (base, fast):
        assert record["generations_per_s"] > 0 and record["tokens_per_s"] > 0
        assert record["peak_rss_bytes"] > 0
    assert 0 <= fast["generation_share"] <= 1.0 + 1e-9
    assert "pipeline" not in result                    # the naive baseline only when asked for
    assert result["ratio"]["job_vs_generate_scoring_per_cpu_s"] > 0
    assert result["scoring"]["profanity"]["texts"] == 6 and result["scoring"]["profanity"]["ratio"] > 0
    offline = result["scoring"]["offline"]        # the offline default, on 2,000 (cycled) texts
    assert offline["texts"] == 2000 and offline["batched_texts_per_s"] > 0 and offline["scorer"] == "offline"
    assert result["distillation"]["tokens_per_s"] > 0
    assert {m: p["achieved_sparsity"] for m, p in result["pruning"].items()} == \
        {"magnitude": pytest.approx(0.5, abs=0.01), "wanda": pytest.approx(0.5, abs=0.01)}
    assert any("baseline" in m for m in messages) and any("compfair" in m for m in messages)
    titles = [title for title, _, _ in summary_tables(result)]
    assert len(titles) == 5 and "ratios (same run)" in titles
    assert 0 < fast["quality_s"] < fast["job_s"]        # the fluency pass ran, inside the job
    json.dumps(result, default=str)
    # the scratch home is gone; the real home's store was never touched
    from engine.store import Store
    assert Store(home).query("SELECT count(*) AS n FROM jobs")[0]["n"] == 0


def test_bench_command_json(home, tiny_gpt2, capsys):
    from engine.cli import main
    code = main(["--home", str(home.root), "bench", "--model", str(tiny_gpt2), "--prompts", "2",
                 "--k", "2", "--new-tokens", "2", "--skip-compression", "--no-detoxify", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["generate"]["generations"] == result["compfair"]["generations"] == 4
    assert "distillation" not in result and result["ratio"]["sampler_vs_generate_per_s"] > 0


def test_bench_repeat_runs_several_jobs_between_baseline_parts(home, tiny_gpt2, capsys):
    from engine.cli import main
    code = main(["--home", str(home.root), "bench", "--model", str(tiny_gpt2), "--prompts", "3",
                 "--k", "2", "--new-tokens", "2", "--skip-compression", "--no-detoxify", "--repeat", "2",
                 "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    fast = result["compfair"]
    assert result["generate"]["generations"] == 6 and fast["generations"] == 12
    assert len(fast["job_id"]) == len(fast["jobs_generations_per_s"]) == 2
    assert fast["generations_per_s"] == pytest.approx(12 / fast["phase_s"])
    assert fast["job_generations_per_s"] == pytest.approx(12 / fast["job_s"])
    assert len(result["generate"]["load"].split(", ")) == 3          # three baseline parts
    from engine.bench import summary_tables
    assert summary_tables(result)[0][2][2][0].startswith("compfair sampler alone (2 eval jobs, ")


def test_bench_config_model_builds_a_gpt2_of_that_shape(tmp_path, monkeypatch):
    import engine.bench as bench
    monkeypatch.setitem(bench.CONFIG_MODELS, "gpt2-test", dict(n_layer=2, n_embd=32, n_head=2))
    folder = bench.build_config_model("gpt2-test", tmp_path / "m")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.config.n_layer == 2 and model.config.vocab_size == 50257
    assert max(tokenizer("The people in the city said that")["input_ids"]) < 50257
    with pytest.raises(ValueError, match="config:gpt2"):
        bench.build_config_model("llama-9000", tmp_path / "x")


def test_cpu_chunks_follow_the_cache_budget_and_do_not_change_generations(gpt2, monkeypatch):
    model, tokenizer = gpt2
    settings = SamplingSettings(samples_per_prompt=4, max_new_tokens=5, seed=3)

    def run(sampler):
        out, sizes = {}, []
        for batch in sampler.stream(PROMPTS):
            sizes.append(len(batch.rows))
            out.update(zip(batch.rows, batch.completions))
        return out, sizes

    reference, sizes = run(Sampler(model, tokenizer, torch.device("cpu"), settings))
    assert sizes == [12]                                  # everything fits one chunk
    per_row = g.kv_bytes_per_position(model, 4) * (len(tokenizer(PROMPTS[1]).input_ids) + 5)
    monkeypatch.setattr(g, "CPU_CACHE_BUDGET", 5 * (per_row + 400 * 16))
    budgeted, sizes = run(Sampler(model, tokenizer, torch.device("cpu"), settings))
    assert sizes[0] == 5 and sum(sizes) == 12
    assert budgeted == reference
    explicit, sizes = run(Sampler(model, tokenizer, torch.device("cpu"), settings, rows_per_batch=7))
    assert sizes == [7, 5] and explicit == reference     # an explicit size is kept as given


def test_gpu_working_size_grows_while_memory_allows_and_stops_after_out_of_memory(gpt2, monkeypatch):
    """The growth rule alone (no GPU here): CUDA's memory counters are stubbed."""
    model, tokenizer = gpt2
    sampler = Sampler(model, tokenizer, torch.device("cpu"), SamplingSettings())
    sampler.device = torch.device("cuda")
    sampler.adaptive = sampler._may_grow = True
    sampler.working_rows = g.DEFAULT_ROWS_GPU
    total, peak = 80 * 2**30, {"now": 10 * 2**30}

    class Props:
        total_memory = total

    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: peak["now"])
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: Props)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    sampler._after_chunk(g.DEFAULT_ROWS_GPU)
    assert sampler.working_rows == 2 * g.DEFAULT_ROWS_GPU
    sampler._after_chunk(100)                              # a short last chunk says nothing
    assert sampler.working_rows == 2 * g.DEFAULT_ROWS_GPU
    peak["now"] = 50 * 2**30                               # over GPU_GROW_BELOW of the device
    sampler._after_chunk(sampler.working_rows)
    assert sampler.working_rows == 2 * g.DEFAULT_ROWS_GPU and sampler.peak_memory == 50 * 2**30
    peak["now"] = 1 * 2**30
    sampler._may_grow = False                              # what an out-of-memory sets
    sampler._after_chunk(sampler.working_rows)
    assert sampler.working_rows == 2 * g.DEFAULT_ROWS_GPU


def test_reserved_cache_gives_the_same_logits_as_a_growing_one(gpt2):
    """The in-place KV buffers are an optimisation only: decoding with them gives the same
    logits as transformers' own concatenating cache."""
    import inspect
    if reserved_cache._DynamicLayer is None:
        pytest.skip("this transformers has no per-layer caches; the sampler concatenates")
    model, tokenizer = gpt2
    arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    ids = torch.tensor([tokenizer("The people in the city").input_ids] * 3)
    with torch.inference_mode():
        plain = g._returned_cache(model(input_ids=ids, use_cache=True))
        reserved = g._returned_cache(model(input_ids=ids, use_cache=True))
        select = torch.tensor([0, 0, 1, 2])
        plain.batch_select_indices(select)
        reserved_cache.reserve_cache(reserved, select, 4)
        assert type(reserved.layers[0]).__name__ == "_ReservedLayer"
        token = torch.tensor([[5], [6], [7], [8]])
        for _ in range(6):                                 # past the reserved room: falls back
            a = model(input_ids=token, use_cache=True, **{arg: plain})
            b = model(input_ids=token, use_cache=True, **{arg: reserved})
            assert torch.allclose(a.logits, b.logits, atol=1e-6)
            plain, reserved = g._returned_cache(a), g._returned_cache(b)
            token = a.logits[:, -1].argmax(-1, keepdim=True)


@pytest.mark.parametrize("kind", ["gpt2", "llama-gqa"])
def test_cpu_fast_paths_give_the_same_generations_and_are_restored(kind, gpt2, tiny_llama, monkeypatch):
    """The sampler's CPU kernels (decode attention as two matrix products, output head in
    vocabulary slices) are optimisations only: same generations as plain SDPA and one-piece
    head, for GPT-2 and for a Llama with grouped-query attention; both are used during decode
    steps; and the shared model is back to its own attention and head afterwards."""
    if cpu_paths.FAST_DECODE_ATTENTION is None:
        pytest.skip("this transformers has no pluggable attention")
    from transformers import AttentionInterface, AutoConfig, AutoTokenizer, LlamaForCausalLM
    if kind == "gpt2":
        model, tokenizer = gpt2
    else:
        config = AutoConfig.from_pretrained(tiny_llama)
        config.num_key_value_heads = 2                    # 4 query heads share 2 key/value heads
        torch.manual_seed(0)
        model, tokenizer = LlamaForCausalLM(config).eval(), AutoTokenizer.from_pretrained(tiny_llama)
    assert model.config._attn_implementation == "sdpa"
    head = model.get_output_embeddings()
    # slices smaller than the tiny vocabulary, with a remainder, so slicing really happens
    monkeypatch.setattr(cpu_paths, "HEAD_SLICE", 7)
    attention_queries, head_calls = [], []
    settings = SamplingSettings(samples_per_prompt=3, max_new_tokens=6, seed=4)

    def generations():
        out = {}
        for batch in Sampler(model, tokenizer, torch.device("cpu"), settings).stream(PROMPTS):
            out.update(zip(batch.rows, batch.completions))
        return out

    original = AttentionInterface._global_mapping[cpu_paths.FAST_DECODE_ATTENTION]

    def counting(*args, **kwargs):
        attention_queries.append(args[1].shape[2])
        return original(*args, **kwargs)

    sliced_call = cpu_paths._SlicedHead.__call__

    def counting_head(self, hidden):
        head_calls.append(hidden.shape)
        return sliced_call(self, hidden)

    monkeypatch.setitem(AttentionInterface._global_mapping, cpu_paths.FAST_DECODE_ATTENTION, counting)
    monkeypatch.setattr(cpu_paths._SlicedHead, "__call__", counting_head)
    fast = generations()
    assert 1 in attention_queries and head_calls                  # decode steps went through both
    assert model.config._attn_implementation == "sdpa"            # restored
    assert "forward" not in vars(head)
    monkeypatch.setattr(cpu_paths, "FAST_DECODE_ATTENTION", None)
    monkeypatch.setattr(cpu_paths, "sliced_output_head", lambda model: contextlib.nullcontext(False))
    attention_queries.clear(), head_calls.clear()
    assert generations() == fast
    assert not attention_queries and not head_calls


def test_sliced_output_head_matches_the_linear_layer():
    """The sliced head computes the same logits as the layer it stands in for, bias included,
    for any leading shape; the layer is untouched after the context."""
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=True)
    model = torch.nn.Module()
    model.get_output_embeddings = lambda: head
    hidden = torch.randn(3, 2, 16)
    expected = head(hidden).detach()
    with cpu_paths.sliced_output_head(model, slice_rows=8) as replaced:
        assert replaced
        assert head(hidden).requires_grad          # with autograd on: the plain layer
        with torch.inference_mode():
            got = head(hidden).clone()
            assert torch.allclose(head(hidden[:1]), expected[:1], atol=1e-6)   # buffer reused
    assert torch.allclose(got, expected, atol=1e-6)
    assert "forward" not in vars(head)
    with cpu_paths.sliced_output_head(model, slice_rows=64) as replaced:   # one slice: left alone
        assert not replaced


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="mallopt tuning is glibc-only")
def test_workers_keep_freed_host_memory_for_reuse(tmp_path):
    """glibc accepts the allocator settings (the worker applies them at start; they are
    process-wide and may be applied again)."""
    from engine.devices import keep_freed_host_memory

    assert keep_freed_host_memory() and keep_freed_host_memory()
