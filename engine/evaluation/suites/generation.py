"""What the suites that sample continuations (toxicity, BOLD) share: sampling every prompt's k
continuations (transformers sampler or vLLM), scoring them in the writer thread and storing
one row per (prompt, sample)."""

from __future__ import annotations

import logging
import time
from typing import ClassVar

from engine.evaluation.suites.base import Suite

log = logging.getLogger(__name__)


class GenerationSuite(Suite):
    """A suite whose items are prompts with k sampled, scored continuations each."""

    generates_text: ClassVar[bool] = True
    unit: ClassVar[str] = "generations"
    display_settings = (("samples_per_prompt", "k"), ("max_prompts", "n"), ("top_p", "p"),
                        ("max_new_tokens", "tok"), ("seed", "seed"))
    comparable_settings = ("samples_per_prompt", "top_p", "temperature", "max_new_tokens",
                           "max_prompts", "data_source", "backend")
    uses_sentiment: ClassVar[bool] = False   # also score VADER sentiment (BOLD)

    def run(self, ctx, spec, lm, run_id, data, scorer) -> dict:
        from engine.evaluation.generation import Sampler, SamplingSettings
        from engine.evaluation.pipeline import SampleWriter
        from engine.evaluation.progress import ThrottledProgress
        from engine.evaluation.scorers import SentimentScorer
        settings = SamplingSettings(spec.samples_per_prompt, spec.top_p, spec.temperature,
                                    spec.max_new_tokens, spec.seed)
        sampler = Sampler(lm.model, lm.tokenizer, lm.device, settings, spec.batch_size)
        if spec.backend == "vllm":
            from engine.evaluation.vllm_backend import VllmSampler
            sampler = VllmSampler(sampler, _vllm_model_path(ctx, lm), spec.dtype)
        items = {p.index: p for p in data.items}
        prompts = {i: p.text for i, p in items.items()}
        done_keys = ctx.store.sample_keys(run_id)
        total = len(prompts) * spec.samples_per_prompt
        missing = sampler.count_missing(prompts, done_keys)
        if done_keys:
            ctx.log(f"resuming: {total - missing} of {total} samples already stored; generating {missing}")
        sentiment = SentimentScorer() if self.uses_sentiment else None
        writer = SampleWriter(ctx.home, run_id, sample_rows_builder(items, scorer, sentiment))
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
        return {"generated_now": generated, "already_stored": total - missing,
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


def sample_rows_builder(items: dict, scorer, sentiment):
    """The writer-thread function turning a generated batch into scored sample rows."""
    from engine.evaluation.generation import sample_key

    def build(batch) -> list[dict]:
        details = scorer.score_details(batch.completions)
        moods = sentiment.score(batch.completions) if sentiment else None
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
        return rows
    return build


def _vllm_model_path(ctx, lm) -> str:
    """What vLLM loads: the hub id or folder, or the dequantised folder of a GGUF file."""
    from engine.registry import dequantise_gguf
    if lm.source.gguf_file:
        return str(dequantise_gguf(ctx.home, lm.source.load_path, lm.source.gguf_file))
    return lm.source.load_path
