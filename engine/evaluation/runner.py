"""The `eval` job: load data, scorer and model, open (or resume) the run, produce and store
samples batch by batch, then compute the metrics from what is stored.

Resuming: the run of a job is found again by `Store.start_run`; every sample already stored
under its key is skipped (never regenerated), and since each sample's randomness depends only
on (seed, item, sample index), the samples produced after a resume are those an uninterrupted
run would have produced. A resumed job keeps the data source its run started with, and fails
cleanly (keeping what is stored) if that data or the scorer changed: one run never mixes two
data sets or two scorers.

What a stored sample holds, per suite:

- toxicity / bold: one row per (prompt, sample): `prompt`, `completion` (new text only),
  `prompt_toxicity` (RTP), `domain`/`group_name` (BOLD), `toxicity` (the scorer's), `sentiment`
  (VADER compound, BOLD), `scores` (every class of a multi-class scorer).
- crows_pairs: one row per pair: `prompt` = sent_more, `completion` = sent_less, `domain` =
  stereo/antistereo, `group_name` = bias type, `scores` = {ll_more, ll_less}.
- perplexity: one row per window: `scores` = {begin, end, score_from, nll_sum, n_tokens}."""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import time
from typing import Any

from engine import __version__ as compfair_version
from engine.context import JobContext, JobFailed
from engine.devices import pick_device
from engine.evaluation import aggregate
from engine.evaluation.data import DataError, Prompt, SuiteData, load_suite_data
from engine.evaluation.generation import GeneratedBatch, Sampler, SamplingSettings, sample_key
from engine.evaluation.likelihood import (max_positions, plan_windows, sentence_log_likelihoods,
                                          text_token_ids, window_nlls)
from engine.evaluation.pipeline import SampleWriter
from engine.evaluation.scorers import ScorerError, SentimentScorer, ToxicityScorer, load_scorer
from engine.evaluation.vllm_backend import BackendUnavailable, VllmSampler, check_available
from engine.registry import dequantise_gguf
from engine.specs import GENERATION_SUITES, EvalSpec
from engine.store import loads

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 1.0
PAIRS_PER_BATCH = 16
WINDOWS_PER_BATCH = 4


def _versions(*packages: str) -> dict[str, str]:
    out = {"compfair": compfair_version, "python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


class ThrottledProgress:
    """Reports progress to the job at most every PROGRESS_EVERY_S seconds (or when forced),
    with throughput since this attempt started."""

    def __init__(self, ctx: JobContext, total: int, already: int, unit: str):
        self.ctx, self.total, self.already, self.unit = ctx, total, already, unit
        self.started = time.perf_counter()
        self.last = 0.0

    def __call__(self, done_now: float, *, force: bool = False, **data: Any) -> None:
        now = time.perf_counter()
        if not force and now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        rate = done_now / elapsed
        done = self.already + done_now
        self.ctx.progress(done, self.total, f"{int(done):,}/{self.total:,} {self.unit} · {rate:.2f} {self.unit}/s",
                          force=force, **{f"{self.unit}_per_s": rate, **data})


# -- setting up ---------------------------------------------------------------------------------
def _load_data(ctx: JobContext, spec: EvalSpec, prior: dict) -> SuiteData:
    data = spec.data
    if data == "auto" and prior.get("data_mode") in ("hub", "builtin"):
        data = prior["data_mode"]      # a resumed job keeps the source it started with
    try:
        loaded = load_suite_data(spec.suite, data, max_prompts=spec.max_prompts, domains=spec.domains,
                                 groups=spec.groups, prompts_per_group=spec.prompts_per_group,
                                 seed=spec.seed)
    except DataError as exc:
        raise JobFailed(str(exc)) from exc
    if loaded.note:
        ctx.log(f"{spec.suite} data: {loaded.note}", level="warning")
    ctx.log(f"{spec.suite} data: {loaded.source}, "
            + (f"{len(loaded.items)} of {loaded.n_available} items" if loaded.text is None
               else f"{len(loaded.text):,} characters"))
    return loaded


def _load_scorer(ctx: JobContext, spec: EvalSpec) -> ToxicityScorer:
    try:
        device = str(pick_device(spec.device))
        scorer, note = load_scorer(spec.scorer, label=spec.scorer_label, device=device)
    except (ScorerError, RuntimeError) as exc:
        raise JobFailed(str(exc).splitlines()[0]) from exc
    ctx.log(note or f"toxicity scorer: {scorer.name} ({scorer.version})")
    return scorer


def _settings(spec: EvalSpec, data: SuiteData, lm, scorer: ToxicityScorer | None) -> dict:
    fields = spec.to_dict()
    fields.pop("kind", None)
    fields.pop("label", None)
    if spec.suite == "perplexity":
        fields["effective_context_length"], fields["effective_stride"] = _window(spec, lm)
    return {
        **fields,
        "data_mode": data.mode, "data_source": data.source, "data_note": data.note,
        "data_fingerprint": data.fingerprint(), "n_items": len(data.items) or None,
        "scorer_name": scorer.name if scorer else None,
        "scorer_version": scorer.version if scorer else None,
        **({"resolved_device": "cuda (vllm)", "resolved_dtype": spec.dtype} if spec.backend == "vllm" else
           {"resolved_device": str(lm.device), "resolved_dtype": str(lm.dtype).replace("torch.", "")}),
        "model_source": lm.source.source,
        "versions": _versions("torch", "transformers", "numpy", "detoxify", "alt-profanity-check",
                              "vaderSentiment", "datasets"),
    }


# -- the vLLM backend ----------------------------------------------------------------------------
def _load_for_vllm(ctx: JobContext, spec: EvalSpec):
    """The model for the run's records, tokenizer and prompt encoding, loaded on CPU (in
    bf16 unless a dtype is given): vLLM loads its own copy on the GPU."""
    try:
        check_available(spec.device)
    except BackendUnavailable as exc:
        raise JobFailed(str(exc)) from exc
    ctx.log(f"loading model {spec.model} on CPU for vLLM's prompt encoding and the records")
    return ctx.models.load(spec.model, ctx.store, device="cpu",
                           dtype="bfloat16" if spec.dtype == "auto" else spec.dtype)


def _vllm_model_path(ctx: JobContext, lm) -> str:
    """What vLLM loads: the hub id or folder, or the dequantised folder of a GGUF file."""
    if lm.source.gguf_file:
        return str(dequantise_gguf(ctx.home, lm.source.load_path, lm.source.gguf_file))
    return lm.source.load_path


# -- generation suites ---------------------------------------------------------------------------
def _sample_rows_builder(items: dict[int, Prompt], scorer: ToxicityScorer,
                         sentiment: SentimentScorer | None):
    """The writer-thread function turning a generated batch into scored sample rows."""
    def build(batch: GeneratedBatch) -> list[dict]:
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


def _generate_and_store(ctx: JobContext, spec: EvalSpec, lm, run_id: int, data: SuiteData,
                        scorer: ToxicityScorer) -> dict:
    settings = SamplingSettings(spec.samples_per_prompt, spec.top_p, spec.temperature,
                                spec.max_new_tokens, spec.seed)
    sampler = Sampler(lm.model, lm.tokenizer, lm.device, settings, spec.batch_size)
    if spec.backend == "vllm":
        sampler = VllmSampler(sampler, _vllm_model_path(ctx, lm), spec.dtype)
    items = {p.index: p for p in data.items}
    prompts = {i: p.text for i, p in items.items()}
    done_keys = ctx.store.sample_keys(run_id)
    total = len(prompts) * spec.samples_per_prompt
    missing = sampler.count_missing(prompts, done_keys)
    if done_keys:
        ctx.log(f"resuming: {total - missing} of {total} samples already stored; generating {missing}")
    sentiment = SentimentScorer() if spec.suite == "bold" else None
    writer = SampleWriter(ctx.home, run_id, _sample_rows_builder(items, scorer, sentiment))
    report = ThrottledProgress(ctx, total, total - missing, "generations")
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


# -- likelihood suites ---------------------------------------------------------------------------
def _crows_pairs(ctx: JobContext, spec: EvalSpec, lm, run_id: int, data: SuiteData) -> dict:
    done_keys = ctx.store.sample_keys(run_id)
    todo = [p for p in data.items if sample_key(p.index, 0) not in done_keys]
    report = ThrottledProgress(ctx, len(data.items), len(data.items) - len(todo), "pairs")
    step = spec.batch_size or PAIRS_PER_BATCH
    for start in range(0, len(todo), step):
        chunk = todo[start:start + step]
        sentences = [s for p in chunk for s in (p.sent_more, p.sent_less)]
        ll = sentence_log_likelihoods(lm.model, lm.tokenizer, sentences, lm.device, batch_size=2 * step)
        ctx.store.add_samples(run_id, [{
            "key": sample_key(p.index, 0), "item_index": p.index, "sample_index": 0,
            "domain": p.direction, "group_name": p.bias_type, "prompt": p.sent_more,
            "completion": p.sent_less,
            "scores": {"ll_more": float(ll[2 * i]), "ll_less": float(ll[2 * i + 1])},
        } for i, p in enumerate(chunk)])
        report(start + len(chunk))
        ctx.check_cancelled()
    return {}


def _window(spec: EvalSpec, lm) -> tuple[int, int]:
    """(context length, stride) actually used: capped at the model's positions."""
    limit = max_positions(lm.model)
    context = min(spec.context_length, limit) if limit else spec.context_length
    return context, min(spec.stride, context)


def _perplexity(ctx: JobContext, spec: EvalSpec, lm, run_id: int, data: SuiteData) -> dict:
    limit = max_positions(lm.model)
    context, stride = _window(spec, lm)
    if context != spec.context_length:
        ctx.log(f"context_length {spec.context_length} exceeds the model's {limit} positions; "
                f"using context {context}, stride {stride}", level="warning")
    token_ids = text_token_ids(lm.tokenizer, data.text)
    windows = plan_windows(len(token_ids), context, stride)
    done_keys = ctx.store.sample_keys(run_id)
    todo = [w for w in windows if sample_key(w.index, 0) not in done_keys]
    report = ThrottledProgress(ctx, len(windows), len(windows) - len(todo), "windows")
    step = spec.batch_size or WINDOWS_PER_BATCH
    for start in range(0, len(todo), step):
        rows = [{"key": sample_key(w.index, 0), "item_index": w.index, "sample_index": 0,
                 "scores": {"begin": w.begin, "end": w.end, "score_from": w.score_from,
                            "nll_sum": nll, "n_tokens": n}}
                for w, nll, n in window_nlls(lm.model, token_ids, todo[start:start + step], lm.device,
                                             batch_size=step)]
        ctx.store.add_samples(run_id, rows)
        report(start + len(rows))
        ctx.check_cancelled()
    return {"effective_context_length": context, "effective_stride": stride,
            "text_tokens": len(token_ids) - 1}


# -- the job -------------------------------------------------------------------------------------
def run_eval(ctx: JobContext) -> dict:
    """Run the evaluation job of `ctx.spec` (an EvalSpec); returns {"run_id", "model_id"}."""
    spec = ctx.spec
    if not isinstance(spec, EvalSpec):
        raise JobFailed(f"run_eval got a {spec.kind!r} job")
    prior_run = ctx.store.run_for_job(ctx.job_id)
    prior = loads(prior_run["settings"], {}) if prior_run else {}
    data = _load_data(ctx, spec, prior)
    scorer = _load_scorer(ctx, spec) if spec.suite in GENERATION_SUITES else None
    if spec.backend == "vllm":
        lm = _load_for_vllm(ctx, spec)
    else:
        lm = ctx.load_model(spec.model)
    settings = _settings(spec, data, lm, scorer)
    if prior_run and prior.get("data_fingerprint") not in (None, settings["data_fingerprint"]) \
            and ctx.store.sample_keys(prior_run["id"]):
        raise JobFailed(f"the {spec.suite} data changed since this run started (fingerprint "
                        f"{prior['data_fingerprint']} -> {settings['data_fingerprint']}); "
                        "its stored samples are kept; submit a new job")
    if prior_run and scorer and prior_run["scorer"] \
            and (prior_run["scorer"], prior_run["scorer_version"]) != (scorer.name, scorer.version) \
            and ctx.store.sample_keys(prior_run["id"]):
        raise JobFailed(f"this run's stored samples were scored by {prior_run['scorer']} "
                        f"({prior_run['scorer_version']}) but the scorer is now {scorer.name} "
                        f"({scorer.version}); its stored samples are kept; submit a new job")
    run_id = ctx.store.start_run(ctx.job_id, lm.model_id, spec.suite, settings,
                                 scorer.name if scorer else None, scorer.version if scorer else None,
                                 data.source, str(lm.device))
    ctx.set_result(run_id=run_id, model_id=lm.model_id)
    ctx.log(f"run {run_id}: {spec.suite} of {lm.name} on {lm.device} ({settings['resolved_dtype']})")

    if spec.suite in GENERATION_SUITES:
        extra = _generate_and_store(ctx, spec, lm, run_id, data, scorer)
    elif spec.suite == "crows_pairs":
        extra = _crows_pairs(ctx, spec, lm, run_id, data)
    else:
        extra = _perplexity(ctx, spec, lm, run_id, data)

    ctx.progress(1, 1, "computing metrics", force=True)
    rows = ctx.store.samples(run_id)
    metrics, summary = aggregate.suite_metrics(spec.suite, rows, n_boot=spec.bootstrap_samples,
                                               confidence=spec.confidence, seed=spec.seed)
    summary = {**summary, **extra, "data_source": data.source, "data_note": data.note,
               "scorer": scorer.name if scorer else None}
    ctx.store.finish_run(run_id, metrics, summary)
    ctx.log(f"run {run_id} done: " + ", ".join(f"{r['name']}={r['value']:.4g}" for r in metrics
                                                if r["subset"] == "" and r["value"] is not None)[:300])
    return {"run_id": run_id, "model_id": lm.model_id}
