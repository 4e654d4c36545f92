"""The `eval` job: load data, scorer and model, open (or resume) the run, produce and store
samples batch by batch (the suite's own `run`), then compute the metrics from what is stored.

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
from dataclasses import dataclass

from engine import __version__ as compfair_version
from engine.context import JobContext
from engine.errors import BackendUnavailable, JobFailed, ScorerError
from engine.devices import pick_device
from engine.evaluation import aggregate
from engine.evaluation.data import DataError, SuiteData
from engine.evaluation.metrics import between_blocks
from engine.evaluation.phases import PhaseClock
from engine.evaluation.scorers import ToxicityScorer, load_scorer
from engine.evaluation.suites import Suite, get_suite
from engine.evaluation.vllm_backend import check_available
from engine.specs import EvalSpec
from engine.store import loads

log = logging.getLogger(__name__)


def _versions(*packages: str) -> dict[str, str]:
    out = {"compfair": compfair_version, "python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


# -- setting up ---------------------------------------------------------------------------------
def _load_data(ctx: JobContext, suite: Suite, spec: EvalSpec, prior: dict) -> SuiteData:
    data = spec.data
    if data == "auto" and prior.get("data_mode") in ("hub", "builtin"):
        data = prior["data_mode"]      # a resumed job keeps the source it started with
    try:
        loaded = suite.load(spec, data)
    except DataError as exc:
        raise JobFailed(str(exc)) from exc
    if loaded.note:
        ctx.log(f"{spec.suite} data: {loaded.note}", level="warning")
    ctx.log(f"{spec.suite} data: {loaded.source}, "
            + (f"{len(loaded.items)} of {loaded.n_available} items" if loaded.text is None
               else f"{len(loaded.text):,} characters"))
    return loaded


def _load_scorer(ctx: JobContext, spec: EvalSpec) -> tuple[ToxicityScorer, str]:
    """The scorer and `load_scorer`'s note on what `auto` chose and why ("" when asked by name)."""
    try:
        device = str(pick_device(spec.device))
        scorer, note = load_scorer(spec.scorer, label=spec.scorer_label, device=device)
    except (ScorerError, RuntimeError) as exc:
        raise JobFailed(str(exc).splitlines()[0]) from exc
    ctx.log(note or f"toxicity scorer: {scorer.name} ({scorer.version})")
    return scorer, note


def _settings(suite: Suite, spec: EvalSpec, data: SuiteData, lm, scorer: ToxicityScorer | None) -> dict:
    fields = spec.to_dict()
    fields.pop("kind", None)
    fields.pop("label", None)
    fields.update(suite.run_settings(spec, lm))
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


# -- the job -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OpenedRun:
    """What an eval job has set up before producing samples: its suite, data (every item,
    whichever part this job produces), scorer, model and the run it stores into;
    `scorer_note`: what `auto` chose and why ("" for a scorer asked by name)."""

    suite: Suite
    data: SuiteData
    scorer: ToxicityScorer | None
    lm: object
    run_id: int
    scorer_note: str = ""


def open_run(ctx: JobContext, spec: EvalSpec, owner_job: int) -> OpenedRun:
    """Load data, scorer and model for `spec` and open (or find again) the run of job
    `owner_job` (the job itself, or the sharded job a shard writes for). Refuses (JobFailed,
    keeping what is stored) a run whose stored samples came from other data or another scorer."""
    suite = get_suite(spec.suite)
    prior_run = ctx.store.run_for_job(owner_job)
    prior = loads(prior_run["settings"], {}) if prior_run else {}
    data = _load_data(ctx, suite, spec, prior)
    scorer, scorer_note = _load_scorer(ctx, spec) if suite.generates_text else (None, "")
    if spec.backend == "vllm":
        lm = _load_for_vllm(ctx, spec)
    else:
        lm = ctx.load_model(spec.model)
    settings = _settings(suite, spec, data, lm, scorer)
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
    run_id = ctx.store.start_run(owner_job, lm.model_id, spec.suite, settings,
                                 scorer.name if scorer else None, scorer.version if scorer else None,
                                 data.source, str(lm.device))
    ctx.log(f"run {run_id}: {spec.suite} of {lm.name} on {lm.device} ({settings['resolved_dtype']})")
    return OpenedRun(suite, data, scorer, lm, run_id, scorer_note)


def run_eval(ctx: JobContext) -> dict:
    """Run the evaluation job of `ctx.spec` (an EvalSpec); returns {"run_id", "model_id"}.
    A sharded job (engine.scale.shards) runs after its shards: it finds every sample stored
    and only computes the metrics."""
    spec = ctx.spec
    if not isinstance(spec, EvalSpec):
        raise JobFailed(f"run_eval got a {spec.kind!r} job")
    clock = PhaseClock()
    opened = open_run(ctx, spec, ctx.job_id)
    clock.mark("setup")
    run_id, lm, data, scorer = opened.run_id, opened.lm, opened.data, opened.scorer
    ctx.set_result(run_id=run_id, model_id=lm.model_id)

    extra = opened.suite.run(ctx, spec, lm, run_id, data, scorer)
    clock.mark("work")

    ctx.progress(1, 1, "computing metrics", force=True)
    rows = ctx.store.samples(run_id)
    with between_blocks(ctx.check_cancelled):     # cancel is honoured during the bootstrap
        metrics, summary = aggregate.suite_metrics(opened.suite, rows, n_boot=spec.bootstrap_samples,
                                                   confidence=spec.confidence, seed=spec.seed)
    clock.mark("metrics")
    phases = clock.phases(extra)
    summary = {**summary, **extra, "data_source": data.source, "data_note": data.note,
               "scorer": scorer.name if scorer else None, "scorer_note": opened.scorer_note,
               "phase_seconds": phases.to_dict()}
    ctx.store.finish_run(run_id, metrics, summary)
    ctx.log(f"run {run_id} time: {phases.line()}")
    ctx.log(f"run {run_id} done: " + ", ".join(f"{r['name']}={r['value']:.4g}" for r in metrics
                                                if r["subset"] == "" and r["value"] is not None)[:300])
    return {"run_id": run_id, "model_id": lm.model_id}
