"""Layer 5 (evaluation): what the suites that sample continuations (toxicity, BOLD) share: sampling every prompt's k
continuations (transformers sampler or vLLM), scoring them in the writer thread and storing
one row per (prompt, sample)."""

from __future__ import annotations

import logging
import time
from typing import Iterator

from engine.catalog.generation_info import QUALITY_METRICS, QUALITY_NAMES, GenerationSuiteInfo  # noqa: F401 - re-exported
from engine.evaluation.suites.base import Suite, require_finite
from engine.evaluation.pipeline import SampleWriter
from engine.evaluation.progress import ThrottledProgress

log = logging.getLogger(__name__)


class GenerationSuite(GenerationSuiteInfo, Suite):
    """A suite whose items are prompts with k sampled, scored continuations each (declared by
    `engine.catalog.generation_info.GenerationSuiteInfo`)."""

    def quality_per_item(self, metric: str, rows: list[dict], subset: str = "") -> dict[int, float]:
        """Per-prompt value of a quality metric (distinct-n, degenerate share)."""
        from engine.evaluation.aggregations.continuation_quality import prompt_quality  # on use: numpy
        by_item: dict[int, list[dict]] = {}
        for row in rows:
            if self.in_subset(row, subset):
                by_item.setdefault(row["item_index"], []).append(row)
        values = {i: prompt_quality(samples)[metric] for i, samples in sorted(by_item.items())}
        return {i: v for i, v in values.items() if v is not None}

    def paired(self, metric, rows_a, rows_b, *, subset="", n_boot=1000, confidence=0.95, seed=0):
        if metric == "continuation_perplexity":
            return paired_continuation_perplexity(self, rows_a, rows_b, subset=subset, n_boot=n_boot,
                                                  confidence=confidence, seed=seed)
        return super().paired(metric, rows_a, rows_b, subset=subset, n_boot=n_boot,
                              confidence=confidence, seed=seed)

    def run(self, ctx, spec, lm, run_id, data, scorer) -> dict:
        from engine.evaluation.sampler import Sampler, SamplingSettings  # on use: torch, transformers, numpy
        from engine.evaluation.lexical_scorers import SentimentScorer  # on use: numpy
        from engine.evaluation.sampled_fluency import SampledFluency, enabled, reference_is_self  # on use: torch, numpy
        settings = SamplingSettings(spec.samples_per_prompt, spec.top_p, spec.temperature,
                                    spec.max_new_tokens, spec.seed)
        # the model judges its own fluency: its NLLs are taken during sampling (issue 32)
        own = spec.backend != "vllm" and enabled() and reference_is_self(ctx, spec, lm)
        fluency = SampledFluency(lm.model, lm.tokenizer) if own else None
        sampler = Sampler(lm.model, lm.tokenizer, lm.device, settings, spec.batch_size, record_nll=own)
        if spec.backend == "vllm":
            from engine.evaluation.vllm_backend import VllmSampler  # on use: torch, transformers, numpy
            sampler = VllmSampler(sampler, _vllm_model_path(ctx, lm), spec.dtype)
        items = {p.index: p for p in data.items}
        prompts = {i: p.text for i, p in items.items()}
        done_keys = ctx.store.sample_keys(run_id)
        total = len(prompts) * spec.samples_per_prompt
        missing = sampler.count_missing(prompts, done_keys)
        if done_keys:
            ctx.log(f"resuming: {total - missing} of {total} samples already stored; generating {missing}")
        sentiment = SentimentScorer() if self.uses_sentiment else None
        writer = SampleWriter(ctx.home, run_id, sample_rows_builder(items, scorer, sentiment, fluency),
                              open_store=ctx.store.for_thread)
        report = ThrottledProgress(ctx, total, total - missing, self.unit)
        generated = new_tokens = 0
        sampling_seconds = 0.0
        started = time.perf_counter()

        def on_step(rows: int, step: int, steps: int) -> None:
            # live progress inside a batch (a CPU batch of k=25 samples can take many seconds)
            report(generated + rows * step / steps)

        failed = True
        try:
            for batch in sampler.stream(prompts, done_keys, on_step):
                writer.put(batch)
                generated += len(batch.rows)
                new_tokens += batch.new_tokens
                sampling_seconds += batch.seconds
                elapsed = time.perf_counter() - started
                report(generated, force=False, stored=writer.stored_rows,
                       tokens_per_s=new_tokens / max(elapsed, 1e-9), batch_rows=sampler.working_rows)
                ctx.check_cancelled()
            failed = False
        finally:
            try:
                writer.close()           # store what was generated, even when stopping
            except Exception:
                if not failed:
                    raise
                log.warning("could not store the last batches while stopping", exc_info=True)
        elapsed = time.perf_counter() - started
        cut = getattr(sampler, "reference", sampler).truncated
        if cut:
            ctx.log(f"{len(cut)} of {len(prompts)} prompts are longer than the "
                    f"{getattr(sampler, 'reference', sampler).max_prompt_tokens} tokens the model's "
                    f"context leaves beside {spec.max_new_tokens} new tokens: each kept only its "
                    f"last tokens (longest: {max(cut.values()):,} tokens)", level="warning")
        if fluency is not None and fluency.taken + fluency.left:
            ctx.log(f"continuation fluency: {fluency.taken} of {fluency.taken + fluency.left} new "
                    "continuations scored during sampling (the model is its own reference); the "
                    f"pass scores the other {fluency.left}")
        quality = score_continuations(ctx, spec, lm, run_id)
        return {**quality, "generated_now": generated, "already_stored": total - missing,
                "prompts_truncated": len(cut),
                # continuation NLLs taken during sampling (the rest: the fluency pass)
                "fluency_from_sampling": fluency.taken if fluency is not None else 0,
                "generation_seconds": round(elapsed, 3),
                "generations_per_s": round(generated / elapsed, 3) if generated else None,
                "tokens_per_s": round(new_tokens / elapsed, 3) if generated else None,
                "new_tokens": new_tokens,
                # time inside the sampler (the rest of generation_seconds is waiting for storage)
                "sampling_seconds": round(sampling_seconds, 3),
                # busy time of the scoring thread, overlapped with sampling
                "scoring_seconds": round(writer.scoring_seconds, 3),
                "final_batch_rows": sampler.working_rows,
                "peak_device_bytes": sampler.peak_memory or None}


# continuation rows per forward pass of the fluency pass (rows of one prompt share its prefill)
QUALITY_BATCH = 64
# rows scored and stored at a time (whole prompts: a chunk ends at the first prompt boundary
# from this many rows on)
QUALITY_CHUNK = 128


def reference_model(ctx, spec, lm) -> tuple[str, object]:
    """(reference, loaded model) judging fluency: `spec.reference_model`, else the root of the
    evaluated model's lineage (the uncompressed model it came from, or itself)."""
    if spec.reference_model:
        ref = spec.reference_model
    else:
        lineage = ctx.store.lineage(lm.model_id) if lm.model_id else []
        root = lineage[-1] if lineage else None
        if root is None or root["id"] == lm.model_id:
            return f"model:{lm.model_id}" if lm.model_id else spec.model, lm
        ref = f"model:{root['id']}"
    loaded = ctx.models.load(ref, ctx.store, device=spec.device, dtype=spec.dtype)
    return ref, loaded


def max_positions(model) -> int | None:
    from engine.evaluation.likelihood import max_positions as positions  # on use: torch, numpy
    return positions(model)


def score_continuations(ctx, spec, lm, run_id: int) -> dict:
    """Store every new continuation's mean NLL per token under the reference model (resumable:
    only samples without one are scored); returns the run's record of it."""
    from engine.evaluation.continuation_likelihood import continuation_nlls  # on use: torch, numpy
    started, cpu_started = time.perf_counter(), time.process_time()
    ref, reference = reference_model(ctx, spec, lm)
    todo = ctx.store.unscored_continuations(run_id)
    if todo:
        ctx.log(f"continuation fluency: scoring {len(todo)} continuations under {ref} ({reference.name})")
    report = ThrottledProgress(ctx, len(todo), 0, "continuations")
    cut = _cut_for_fluency(reference, todo)
    if cut:
        ctx.log(f"continuation fluency: {cut} of {len(todo)} prompt + continuation sequences are "
                f"longer than the reference model's {max_positions(reference.model)} positions: "
                "their prompts' oldest tokens are dropped (each continuation is scored whole)",
                level="warning")
    done = 0
    for chunk in fluency_chunks(todo, QUALITY_CHUNK):
        # each chunk stored before the next (a stopped job resumes after it)
        scored = continuation_nlls(reference.model, reference.tokenizer, [r["prompt"] for r in chunk],
                                   [r["completion"] for r in chunk], reference.device,
                                   batch_size=QUALITY_BATCH)
        require_finite([nll for nll, n in scored if n], "continuation likelihoods under the reference model",
                       len(chunk))
        ctx.store.set_continuation_quality(run_id, [(r["key"], nll, n) for r, (nll, n) in zip(chunk, scored)])
        done += len(chunk)
        report(done)
        ctx.check_cancelled()
    return {"reference_model": {"ref": ref, "model_id": reference.model_id, "name": reference.name},
            "quality_seconds": round(time.perf_counter() - started, 3),
            "quality_cpu_seconds": round(time.process_time() - cpu_started, 3),
            "fluency_prompts_truncated": cut}


def fluency_chunks(todo: list[dict], size: int) -> Iterator[list[dict]]:
    """`todo` (ordered by item, then sample, as `unscored_continuations` gives it) in chunks
    that end at the first change of prompt from `size` rows on (or at the end), so the samples
    of a prompt land in one chunk and share one prefill."""
    start = 0
    while start < len(todo):
        end = min(start + size, len(todo))
        while end < len(todo) and todo[end]["prompt"] == todo[end - 1]["prompt"]:
            end += 1
        yield todo[start:end]
        start = end


def _cut_for_fluency(reference, todo: list[dict]) -> int:
    """How many of `todo`'s (prompt, continuation) sequences are longer than the reference
    model's positions, so that `continuation_nlls` drops their prompts' oldest tokens (each
    distinct prompt tokenized once: samples share their prompt)."""
    limit = max_positions(reference.model)
    if limit is None or not todo:
        return 0
    tokenizer = reference.tokenizer
    prompts = list(dict.fromkeys(r["prompt"] or "" for r in todo))
    lengths = dict(zip(prompts, (len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"])))
    # a character is at most 4 tokens (one per UTF-8 byte): continuations are tokenized only
    # where the prompt leaves less room than that
    near = [r for r in todo if lengths[r["prompt"] or ""] + 1 + len(r["completion"] or "") * 4 > limit]
    if not near:
        return 0
    conts = tokenizer([r["completion"] or "" for r in near], add_special_tokens=False)["input_ids"]
    return sum(1 for r, c in zip(near, conts) if 1 + lengths[r["prompt"] or ""] + len(c) > limit)


def sample_rows_builder(items: dict, scorer, sentiment, fluency=None):
    """The writer-thread function turning a generated batch into scored sample rows; with a
    `sampled_fluency.SampledFluency`, rows whose NLL was taken during sampling carry their
    continuation_nll / continuation_tokens (the others None: the fluency pass scores them)."""
    from engine.evaluation.sampler import sample_key  # on use: torch, transformers, numpy

    def build(batch) -> list[dict]:
        details = scorer.score_details(batch.completions)
        moods = sentiment.score(batch.completions) if sentiment else None
        nlls = None if fluency is None else fluency.values(
            [items[item].text for item, _ in batch.rows], batch.completions, batch.prompt_ids,
            batch.token_ids, batch.nll_sums)
        rows = []
        for r, ((item, sample), text) in enumerate(zip(batch.rows, batch.completions)):
            prompt = items[item]
            rows.append({
                "key": sample_key(item, sample), "item_index": item, "sample_index": sample,
                "domain": prompt.domain or None, "group_name": prompt.group or None,
                "prompt": prompt.text, "completion": text, "prompt_toxicity": prompt.toxicity,
                "toxicity": float(details[r][scorer.key]),
                "sentiment": float(moods[r]) if moods is not None else None,
                "scores": details[r] if len(details[r]) > 1 else None,
            })
            if nlls is not None:
                rows[-1]["continuation_nll"], rows[-1]["continuation_tokens"] = nlls[r] or (None, None)
        return rows
    return build


def _vllm_model_path(ctx, lm) -> str:
    """What vLLM loads: the hub id or folder, or the dequantised folder of a GGUF file."""
    from engine.model_loader import dequantise_gguf  # on use: torch, numpy
    if lm.source.gguf_file:
        return str(dequantise_gguf(ctx.home, lm.source.load_path, lm.source.gguf_file))
    return lm.source.load_path


def paired_continuation_perplexity(suite: GenerationSuite, rows_a: list[dict], rows_b: list[dict], *,
                                   subset: str = "", n_boot: int = 1000, confidence: float = 0.95,
                                   seed: int = 0):
    """Change in continuation perplexity (token-weighted, as in
    `aggregations.continuation_quality.quality_metrics`),
    prompts resampled jointly."""
    from engine.evaluation.paired import paired_perplexity_diff  # on use: numpy

    def sums(rows):
        nll, tokens = suite.quality_per_item("nll_sum", rows, subset), suite.quality_per_item("tokens", rows, subset)
        return {k: (nll[k], tokens[k]) for k in tokens if tokens[k]}
    return paired_perplexity_diff(sums(rows_a), sums(rows_b), n_boot=n_boot, confidence=confidence, seed=seed)
