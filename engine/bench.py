"""`compfair bench`: evaluation throughput of compfair's real path against a same-run baseline,
scoring batched against per-text, and the cost of distillation and pruning, on one model.

Everything runs in one process, on one loaded model, with the same prompts, k and token budget,
so a ratio compares two measurements taken under the same conditions. On a shared machine
absolute numbers move with the load, so the baseline runs half of its prompts before the
compfair job and half after (both see the load alike), the load average is recorded at the
start and end of each phase, and generations per CPU-second of this process are reported
beside generations per second (a figure other processes disturb much less; for compfair it
counts the whole job, data loading and metrics included).

Phases (`run_bench`):

1. **baseline**: transformers `pipeline("text-generation")` called one prompt at a time with
   `num_return_sequences=k`, `do_sample`, `top_p`, `top_k=0` (nucleus only, like compfair),
   then the scorer called once per text (half the prompts before phase 2, half after).
2. **compfair**: a real `eval` job (toxicity suite, same prompts and settings) submitted to the
   queue of a scratch home and run by a real `Worker` (`run_one`): the sampler, the scoring
   thread, the store and the metrics, exactly as a user's job. The worker's model cache already
   holds the model the baseline used, so neither side pays for loading.
3. **scoring**: the compfair texts scored one call per text and in one batched call, with the
   offline profanity scorer and with Detoxify (its real class; the `original` weights when they
   are in the torch hub cache, otherwise a randomly initialised BERT-base-shaped checkpoint of
   the same architecture, which costs the same to run).
4. **distillation**: a few optimiser steps of the real `Distiller` on a half-depth student of
   the model (builtin text), tokens/s.
5. **pruning**: magnitude and Wanda at 50% (small builtin calibration) on fresh copies, seconds.

Bench-only model sources: `config:gpt2` / `config:gpt2-medium` build a GPT-2 of that size from
its config with random weights and a byte-level BPE tokenizer trained on the builtin corpus
(no hub needed, e.g. on GPU machines). Its output layer is untied from the token embeddings and
scaled up (x8) so next-token distributions are about as peaked as a trained model's (median
nucleus ~80 tokens at p=0.9, SmolLM2's ~60); at the default initialisation they are nearly
uniform and every nucleus would hold ~38k tokens. Untying adds parameters but not compute: the
output layer's matrix product is the same either way. The scratch home shares the real home's model cache, so the
dequantised SmolLM2 is reused.

Peak memory: resident set size sampled every 20 ms during each phase (CPU), and CUDA's
maximum allocated memory on a GPU."""

from __future__ import annotations

import gc
import logging
import os
import platform
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)

CONFIG_MODELS = {
    "gpt2": dict(n_layer=12, n_embd=768, n_head=12),
    "gpt2-medium": dict(n_layer=24, n_embd=1024, n_head=16),
}
LOGIT_SCALE = 8.0           # random GPT-2: makes next-token distributions peaked (see docstring)


@dataclass(frozen=True)
class BenchSettings:
    model: str = "smollm2"
    prompts: int = 32
    k: int = 8
    new_tokens: int = 20
    top_p: float = 0.9
    scorer: str = "profanity"
    data: str = "builtin"
    device: str = "auto"
    seed: int = 0
    baseline_prompts: int | None = None      # None: all prompts (the same set as compfair)
    repeat: int = 1                          # compfair jobs, interleaved with baseline parts
    skip_compression: bool = False
    detoxify: bool = True
    detoxify_texts: int | None = None        # texts for the detoxify comparison (None: 64 on CPU)
    distill_steps: int = 3
    distill_batch: int = 4
    seq_len: int = 64
    calibration_samples: int = 8
    home: str | None = None                  # the home whose model cache is reused

    def __post_init__(self) -> None:
        for name in ("prompts", "k", "new_tokens", "distill_steps", "distill_batch",
                     "calibration_samples", "repeat"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.seq_len < 8:
            raise ValueError(f"seq_len must be >= 8, got {self.seq_len}")


Say = Callable[[str], None]


# -- measuring -----------------------------------------------------------------------------
class _PeakMemory:
    """Peak resident set size (sampled) and CUDA max allocated memory during a block."""

    def __init__(self, device) -> None:
        self.device = device
        self.rss_start = self.rss_peak = _rss()
        self.cuda_peak: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="bench-rss", daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.rss_peak = max(self.rss_peak, _rss())

    def __enter__(self) -> "_PeakMemory":
        if self.device.type == "cuda":
            import torch
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.rss_peak = max(self.rss_peak, _rss())
        if self.device.type == "cuda":
            import torch
            torch.cuda.synchronize(self.device)
            self.cuda_peak = int(torch.cuda.max_memory_allocated(self.device))

    def record(self) -> dict[str, Any]:
        return {"peak_rss_bytes": self.rss_peak, "rss_growth_bytes": self.rss_peak - self.rss_start,
                "peak_cuda_bytes": self.cuda_peak}


def _rss() -> int:
    try:
        import psutil
        return int(psutil.Process().memory_info().rss)
    except ImportError:  # pragma: no cover - psutil comes with accelerate
        import resource
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _load() -> float:
    return round(os.getloadavg()[0], 2)


@contextmanager
def _phase(record: dict, say: Say, name: str) -> Iterator[None]:
    say(f"{name}...")
    record["load_start"] = _load()
    started = time.perf_counter()
    yield
    record["wall_s"] = round(time.perf_counter() - started, 3)
    record["load_end"] = _load()


def _sync(device) -> None:
    if device.type == "cuda":
        import torch
        torch.cuda.synchronize(device)


# -- model sources -------------------------------------------------------------------------
def _train_tokenizer(folder: Path):
    """A byte-level BPE tokenizer trained on the builtin corpus (no hub)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from engine.compression.builtin_corpus import builtin_texts

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(builtin_texts(), vocab_size=4096, min_frequency=1,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>",
                                        eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                                        pad_token="<|endoftext|>")
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_config_model(name: str, folder: Path, seed: int = 0) -> Path:
    """`config:gpt2` / `config:gpt2-medium`: a GPT-2 of that size with random weights, saved as
    a Hugging Face folder (loaded through the normal model path)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    if name not in CONFIG_MODELS:
        raise ValueError(f"config model {name!r} is unknown; choose from "
                         + ", ".join(f"config:{n}" for n in CONFIG_MODELS))
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(folder)
    torch.manual_seed(seed)
    config = GPT2Config(**CONFIG_MODELS[name], bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(LOGIT_SCALE)
    model.save_pretrained(folder)
    return folder


def _scratch_home(root: Path, real_home):
    """A fresh home under `root` whose model cache is the real home's (a symlink)."""
    from engine.paths import Home

    scratch = root / "home"
    scratch.mkdir(parents=True)
    (scratch / "cache").symlink_to(real_home.cache_dir, target_is_directory=True)
    return Home.resolve(scratch)


# -- phases ----------------------------------------------------------------------------------
class _Baseline:
    """transformers pipeline, one prompt at a time, then the scorer once per text.

    `run` may be called several times (the benchmark runs half of the prompts before the
    compfair job and half after, so both see the machine's load alike); `record` sums them."""

    def __init__(self, lm, settings: BenchSettings, scorer) -> None:
        import torch
        from transformers import pipeline
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        self.lm, self.scorer = lm, scorer
        tokenizer = lm.tokenizer
        self.pipe = pipeline("text-generation", model=lm.model, tokenizer=tokenizer, device=lm.device)
        self.stop = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
        self.kwargs = dict(num_return_sequences=settings.k, do_sample=True, top_p=settings.top_p,
                           top_k=0, temperature=1.0, max_new_tokens=settings.new_tokens,
                           return_tensors=True, pad_token_id=tokenizer.pad_token_id)
        self.pipe("Hello", **{**self.kwargs, "max_new_tokens": 2, "num_return_sequences": 2})  # warm-up
        torch.manual_seed(settings.seed)
        self.k = settings.k
        self.prompts = self.generations = self.new_tokens = 0
        self.generation_s = self.scoring_s = self.cpu_s = 0.0
        self.scores: list[float] = []
        self.loads: list[str] = []
        self.memory: dict[str, Any] = {}

    def run(self, prompts: list[str], say: Say) -> None:
        if not prompts:
            return
        tokenizer = self.lm.tokenizer
        lengths = [self.pipe.preprocess(p)["input_ids"].shape[-1] for p in prompts]
        texts: list[str] = []
        record: dict[str, Any] = {}
        with _phase(record, say, f"baseline: pipeline, {len(prompts)} prompts x k={self.k}"), \
                _PeakMemory(self.lm.device) as memory:
            cpu = time.process_time()
            started = time.perf_counter()
            for prompt, n_prompt in zip(prompts, lengths):
                for out in self.pipe(prompt, **self.kwargs):
                    ids = list(out["generated_token_ids"])[n_prompt:]
                    end = next((i + 1 for i, t in enumerate(ids) if t in self.stop), len(ids))
                    self.new_tokens += end
                    texts.append(tokenizer.decode(ids[:end], skip_special_tokens=True))
            _sync(self.lm.device)
            self.generation_s += time.perf_counter() - started
            started = time.perf_counter()
            self.scores += [float(self.scorer.score([text])[0]) for text in texts]   # per text
            self.scoring_s += time.perf_counter() - started
            self.cpu_s += time.process_time() - cpu
        self.prompts += len(prompts)
        self.generations += len(texts)
        self.loads.append(f"{record['load_start']}-{record['load_end']}")
        for key, value in memory.record().items():
            if value is not None:
                self.memory[key] = max(self.memory.get(key) or 0, value)

    def record(self) -> dict[str, Any]:
        total = self.generation_s + self.scoring_s
        return {
            "prompts": self.prompts, "generations": self.generations, "new_tokens": self.new_tokens,
            "generation_s": round(self.generation_s, 3), "scoring_s": round(self.scoring_s, 3),
            "total_s": round(total, 3), "cpu_s": round(self.cpu_s, 3),
            "generations_per_s": self.generations / total, "tokens_per_s": self.new_tokens / total,
            "generations_per_cpu_s": self.generations / max(self.cpu_s, 1e-9),
            "generation_share": self.generation_s / total, "scoring_share": self.scoring_s / total,
            "mean_toxicity": sum(self.scores) / max(len(self.scores), 1),
            "load": ", ".join(self.loads), "peak_cuda_bytes": None, **self.memory}


def _compfair(worker, model_ref: str, lm, settings: BenchSettings, say: Say,
              seed: int) -> tuple[dict, list[str]]:
    """A real eval job through the queue and the worker; returns its figures and texts."""
    from engine import queue
    from engine.specs import EvalSpec
    from engine.store import loads

    spec = EvalSpec(model=model_ref, suite="toxicity", data=settings.data,
                    max_prompts=settings.prompts, samples_per_prompt=settings.k,
                    top_p=settings.top_p, max_new_tokens=settings.new_tokens,
                    scorer=settings.scorer, device=settings.device, seed=seed,
                    bootstrap_samples=1000, label="bench")
    store = worker.store
    job_id = queue.submit(store, spec)
    record: dict[str, Any] = {}
    with _phase(record, say, f"compfair: eval job {job_id} (queue + worker)"), \
            _PeakMemory(lm.device) as memory:
        cpu = time.process_time()
        row = queue.claim(store, worker.id)
        status = worker.run_one(row)
        cpu_s = time.process_time() - cpu
    job = queue.job(store, job_id)
    if status != "done":
        raise RuntimeError(f"the bench's eval job {status}: {job['error']}")
    run_id = loads(job["result"], {})["run_id"]
    run = store.run(run_id)
    summary = loads(run["summary"], {})
    samples = store.samples(run_id)
    phase = summary["generation_seconds"]
    generated = summary["generated_now"]
    tokens = summary.get("new_tokens") or 0
    memory_record = memory.record()
    if summary.get("peak_device_bytes"):
        memory_record["peak_cuda_bytes"] = max(memory_record["peak_cuda_bytes"] or 0,
                                               summary["peak_device_bytes"])
    record.update({
        "job_id": job_id, "run_id": run_id, "prompts": run["n_items"],
        "generations": generated, "new_tokens": tokens,
        "phase_s": phase, "job_s": record["wall_s"], "cpu_s": round(cpu_s, 3),
        "generations_per_cpu_s": generated / max(cpu_s, 1e-9),
        "load": f"{record['load_start']}-{record['load_end']}",
        "sampling_s": summary.get("sampling_seconds"), "scoring_busy_s": summary.get("scoring_seconds"),
        "generations_per_s": generated / phase, "tokens_per_s": tokens / phase,
        "generation_share": (summary.get("sampling_seconds") or 0) / phase,
        "scoring_share": (summary.get("scoring_seconds") or 0) / phase,
        "final_batch_rows": summary.get("final_batch_rows"),
        "mean_toxicity": sum(s["toxicity"] for s in samples) / max(len(samples), 1),
        **memory_record})
    return record, [s["completion"] for s in samples]


_ADDED = ("generations", "new_tokens", "phase_s", "job_s", "cpu_s", "sampling_s", "scoring_busy_s")


def _merge_jobs(records: list[dict]) -> dict:
    """One record for repeated compfair jobs: work and time summed, rates recomputed from the
    sums, memory peaks maxed; `jobs_generations_per_s` keeps each job's rate (the spread)."""
    if len(records) == 1:
        return records[0]
    merged = dict(records[0])
    for key in _ADDED:
        merged[key] = sum(r.get(key) or 0 for r in records)
    for key in ("peak_rss_bytes", "rss_growth_bytes", "peak_cuda_bytes"):
        values = [r[key] for r in records if r.get(key) is not None]
        merged[key] = max(values) if values else None
    phase = merged["phase_s"]
    merged.update({
        "job_id": [r["job_id"] for r in records], "run_id": [r["run_id"] for r in records],
        "generations_per_s": merged["generations"] / phase, "tokens_per_s": merged["new_tokens"] / phase,
        "generations_per_cpu_s": merged["generations"] / max(merged["cpu_s"], 1e-9),
        "generation_share": merged["sampling_s"] / phase, "scoring_share": merged["scoring_busy_s"] / phase,
        "mean_toxicity": sum(r["mean_toxicity"] * r["generations"] for r in records) / max(merged["generations"], 1),
        "load": ", ".join(r["load"] for r in records),
        "jobs_generations_per_s": [round(r["generations_per_s"], 3) for r in records]})
    return merged


def _score_pair(name: str, scorer, texts: list[str], say: Say) -> dict:
    say(f"scoring: {name}, {len(texts)} texts per-text and batched")
    scorer.score(texts[:2])                                       # warm-up
    started = time.perf_counter()
    one_by_one = [float(scorer.score([t])[0]) for t in texts]
    per_text = time.perf_counter() - started
    started = time.perf_counter()
    batched = scorer.score(texts)
    batched_s = time.perf_counter() - started
    agree = max((abs(a - float(b)) for a, b in zip(one_by_one, batched)), default=0.0)
    return {"texts": len(texts), "per_text_s": round(per_text, 4), "batched_s": round(batched_s, 4),
            "per_text_texts_per_s": len(texts) / per_text, "batched_texts_per_s": len(texts) / batched_s,
            "ratio": per_text / batched_s, "max_abs_difference": agree}


def _detoxify_scorer(scratch: Path, device: str, texts: list[str]):
    """The real Detoxify class: cached `original` weights, else a BERT-base-shaped random
    checkpoint (same architecture and cost; the scores are meaningless)."""
    from engine.evaluation.scorers import (DETOXIFY_CLASSES, DetoxifyScorer, detoxify_cached_checkpoint,
                                           save_detoxify_checkpoint)

    if detoxify_cached_checkpoint("original") is not None:
        return DetoxifyScorer("original", device=device), "detoxify:original (cached weights)"
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForSequenceClassification

    from engine.compression.builtin_corpus import builtin_texts

    folder = scratch / "bert-base-random"
    folder.mkdir(parents=True, exist_ok=True)
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(builtin_texts() + list(texts), vocab_size=30522, show_progress=False)
    wordpiece.save_model(str(folder))
    config = BertConfig(num_labels=len(DETOXIFY_CLASSES))            # bert-base-uncased shape
    config.save_pretrained(folder)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    checkpoint = save_detoxify_checkpoint(model, folder, scratch / "detoxify-bert-base-random.ckpt")
    del model
    return (DetoxifyScorer(str(checkpoint), device=device),
            "detoxify (BERT-base shape, random weights: original weights not cached)")


def _scoring(texts: list[str], settings: BenchSettings, device, scratch: Path, say: Say) -> dict:
    from engine.evaluation.scorers import ProfanityScorer, ScorerError

    out: dict[str, Any] = {}
    with _phase(out, say, "scoring alone"):
        try:
            out["profanity"] = _score_pair("profanity", ProfanityScorer(), texts, say)
        except ScorerError as exc:
            out["profanity"] = {"skipped": str(exc)}
        if settings.detoxify:
            try:
                scorer, note = _detoxify_scorer(scratch, str(device), texts)
                n = settings.detoxify_texts or (len(texts) if device.type == "cuda" else min(len(texts), 64))
                out["detoxify"] = {"scorer": note, **_score_pair("detoxify", scorer, texts[:n], say)}
                del scorer
            except (ScorerError, ImportError) as exc:
                out["detoxify"] = {"skipped": str(exc).splitlines()[0]}
    return out


class _Reporter:
    """The Distiller's view of a job: records progress, ignores the rest."""

    def __init__(self) -> None:
        self.last: dict[str, Any] = {}

    def progress(self, done, total, message="", *, force=False, **data) -> None:
        self.last = data

    def check_cancelled(self) -> None:
        pass

    def log(self, message, level="info", **data) -> None:
        log.debug("bench distillation: %s", message)


def _distillation(worker, model_ref: str, lm, settings: BenchSettings, scratch: Path, say: Say) -> dict:
    import torch

    from engine.compression.distill import Distiller
    from engine.compression.students import choose_layers, keep_layers, teacher_depth
    from engine.compression.textdata import TextSource, text_blocks
    from engine.specs import DistillSpec

    record: dict[str, Any] = {}
    n_teacher = teacher_depth(lm.model, model_ref)
    kept = choose_layers(n_teacher, 0.5)
    spec = DistillSpec(teacher=model_ref, steps=settings.distill_steps, batch_size=settings.distill_batch,
                       seq_len=settings.seq_len, warmup_steps=0, checkpoint_every=10**6,
                       data="builtin", device=settings.device, seed=settings.seed)
    student = worker.models.load(model_ref, worker.store, device=settings.device, fresh=True)
    keep_layers(student.model, kept)
    student_model = student.model.to(lm.device)
    data = text_blocks(TextSource("builtin", "builtin"), lm.tokenizer, settings.seq_len,
                       settings.distill_steps * settings.distill_batch, n_heldout=2)
    reporter = _Reporter()
    distiller = Distiller(student_model, lm.model, data.train, data.heldout, spec, lm.device,
                          scratch / "distill", reporter, identity={})
    with _phase(record, say, f"distillation: {settings.distill_steps} steps, student "
                             f"{len(kept)} of {n_teacher} layers"), _PeakMemory(lm.device) as memory:
        outcome = distiller.run()
    record.update({
        "teacher_layers": n_teacher, "student_layers": len(kept), "steps": outcome.steps,
        "tokens_per_step": settings.distill_batch * settings.seq_len,
        # tokens/s of the training steps (the held-out KL before/after is not counted)
        "tokens_per_s": float(reporter.last.get("tokens_per_s") or outcome.tokens_per_s),
        "train_s": round(outcome.wall_s, 3), "final_loss": outcome.last_terms.get("loss"),
        **memory.record()})
    del distiller, student, student_model
    gc.collect()
    if lm.device.type == "cuda":
        torch.cuda.empty_cache()
    return record


def _pruning(worker, model_ref: str, lm, settings: BenchSettings, say: Say) -> dict:
    import torch

    from engine.compression.prune import check_sparsity, magnitude_prune, wanda_prune
    from engine.compression.textdata import TextSource, text_blocks

    calibration = text_blocks(TextSource("builtin", "builtin"), lm.tokenizer, settings.seq_len,
                              settings.calibration_samples).train[:settings.calibration_samples]
    out: dict[str, Any] = {}
    for method in ("magnitude", "wanda"):
        copy = worker.models.load(model_ref, worker.store, device=settings.device, fresh=True)
        record: dict[str, Any] = {"sparsity": 0.5}
        with _phase(record, say, f"pruning: {method} 50%"), _PeakMemory(copy.device) as memory:
            if method == "magnitude":
                magnitude_prune(copy.model, 0.5)
            else:
                wanda_prune(copy.model, calibration, 0.5, device=copy.device, batch_size=8)
                record["calibration"] = f"{calibration.shape[0]} x {calibration.shape[1]} tokens"
            _sync(copy.device)
        record["achieved_sparsity"] = round(check_sparsity(copy.model)["overall"], 4)
        record.update(memory.record())
        out[method] = record
        del copy
        gc.collect()
        if lm.device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def _machine(lm) -> dict:
    import torch
    import transformers

    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "device": str(lm.device), "dtype": str(lm.dtype).replace("torch.", ""),
            "attention": getattr(lm.model.config, "_attn_implementation", None),
            "load_average": [round(x, 2) for x in os.getloadavg()]}
    if lm.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(lm.device)
    return info


# -- the benchmark ---------------------------------------------------------------------------
def run_bench(settings: BenchSettings, say: Say | None = None) -> dict[str, Any]:
    """Run every phase and return the figures (see the module docstring)."""
    import torch  # noqa: F401 - fail early and clearly without torch

    from engine.evaluation.data import load_suite_data
    from engine.evaluation.scorers import load_scorer
    from engine.paths import Home
    from engine.worker import Worker

    say = say or (lambda message: log.info("%s", message))
    started = time.perf_counter()
    real_home = Home.resolve(settings.home)
    root = Path(tempfile.mkdtemp(prefix="compfair-bench-"))
    result: dict[str, Any] = {"settings": asdict(settings)}
    worker = None
    try:
        home = _scratch_home(root, real_home)
        model_ref = settings.model
        if model_ref.startswith("config:"):
            say(f"building {model_ref} (random weights)")
            model_ref = str(build_config_model(model_ref.partition(":")[2], root / "config-model",
                                               settings.seed))
        worker = Worker(home, once=True, idle_exit_s=None)
        record: dict[str, Any] = {}
        with _phase(record, say, f"loading {settings.model}"):
            lm = worker.models.load(model_ref, worker.store, device=settings.device, dtype="auto")
        result["model"] = {"ref": settings.model, "source": lm.source.source, "load_s": record["wall_s"],
                           "parameters": sum(p.numel() for p in lm.model.parameters())}
        result["machine"] = _machine(lm)
        data = load_suite_data("toxicity", settings.data, max_prompts=settings.prompts, seed=settings.seed)
        prompts = [p.text for p in data.items]
        result["data"] = {"source": data.source, "prompts": len(prompts)}
        scorer, _ = load_scorer(settings.scorer, device=str(lm.device))
        baseline_prompts = prompts[:settings.baseline_prompts] if settings.baseline_prompts else prompts
        baseline = _Baseline(lm, settings, scorer)
        # the baseline in repeat + 1 parts around the compfair jobs: both see the same load on
        # average; repeated jobs (other seeds, same work) show the machine's run-to-run spread
        parts = settings.repeat + 1
        cuts = [round(i * len(baseline_prompts) / parts) for i in range(parts + 1)]
        jobs, texts = [], []
        for part in range(parts):
            baseline.run(baseline_prompts[cuts[part]:cuts[part + 1]], say)
            if part < settings.repeat:
                record, job_texts = _compfair(worker, model_ref, lm, settings, say, settings.seed + part)
                jobs.append(record)
                texts = texts or job_texts
        result["compfair"] = _merge_jobs(jobs)
        result["baseline"] = base = baseline.record()
        del baseline
        fast = result["compfair"]
        result["ratio"] = {key: fast[key] / base[key] for key in
                           ("generations_per_s", "tokens_per_s", "generations_per_cpu_s")}
        result["scoring"] = _scoring(texts, settings, lm.device, root, say)
        if not settings.skip_compression:
            result["distillation"] = _distillation(worker, model_ref, lm, settings, root, say)
            result["pruning"] = _pruning(worker, model_ref, lm, settings, say)
    finally:
        if worker is not None:
            worker.models.clear()
            worker.store.close()
        shutil.rmtree(root, ignore_errors=True)
    result["total_s"] = round(time.perf_counter() - started, 1)
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


# -- presenting ------------------------------------------------------------------------------
def _mib(value) -> str:
    return "" if not value else f"{value / 2**20:,.0f} MiB"


def _compfair_label(record: dict) -> str:
    spread = record.get("jobs_generations_per_s")
    if not spread:
        return "compfair (eval job)"
    return f"compfair ({len(spread)} eval jobs, {min(spread):.2f}-{max(spread):.2f} gen/s)"


def summary_tables(result: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, columns, rows) for each table the CLI prints."""
    machine, base, fast = result["machine"], result["baseline"], result["compfair"]
    s = result["settings"]
    title = (f"{result['model']['ref']} on {machine.get('gpu') or machine['device']} "
             f"({machine['dtype']}, {machine['attention']} attention, {machine['torch_threads']} threads); "
             f"{result['data']['prompts']} prompts x k={s['k']} x {s['new_tokens']} tokens, "
             f"scorer {s['scorer']}")

    def memory(record):
        return _mib(record.get("peak_cuda_bytes")) or _mib(record.get("peak_rss_bytes"))

    ratio = result["ratio"]
    generation = [
        ["baseline (pipeline, per prompt)", f"{base['generations']}", f"{base['generations_per_s']:.2f}",
         f"{base['tokens_per_s']:.1f}", f"{base['generations_per_cpu_s']:.2f}", f"{base['total_s']:.1f}",
         f"{base['generation_share']:.0%}", f"{base['scoring_share']:.0%}", memory(base), base["load"]],
        [_compfair_label(fast), f"{fast['generations']}", f"{fast['generations_per_s']:.2f}",
         f"{fast['tokens_per_s']:.1f}", f"{fast['generations_per_cpu_s']:.2f}", f"{fast['phase_s']:.1f}",
         f"{fast['generation_share']:.0%}", f"{fast['scoring_share']:.0%} (overlapped)", memory(fast),
         fast["load"]],
        ["ratio", "", f"{ratio['generations_per_s']:.2f}x", f"{ratio['tokens_per_s']:.2f}x",
         f"{ratio['generations_per_cpu_s']:.2f}x", "", "", "", "", ""],
    ]
    tables = [(title, ["path", "generations", "gen/s", "tokens/s", "gen/CPU-s", "seconds",
                       "generation", "scoring", "peak memory", "load avg"], generation)]
    scoring_rows = []
    for name, record in result.get("scoring", {}).items():
        if not isinstance(record, dict):
            continue
        if "skipped" in record:
            scoring_rows.append([name, "", "", "", f"skipped: {record['skipped']}"])
        else:
            scoring_rows.append([record.get("scorer", name), str(record["texts"]),
                                 f"{record['per_text_texts_per_s']:.1f}",
                                 f"{record['batched_texts_per_s']:.1f}", f"{record['ratio']:.1f}x"])
    if scoring_rows:
        tables.append(("scoring alone", ["scorer", "texts", "per-text texts/s", "batched texts/s",
                                         "ratio"], scoring_rows))
    compression = []
    if "distillation" in result:
        d = result["distillation"]
        compression.append([f"distillation ({d['student_layers']} of {d['teacher_layers']} layers, "
                            f"{d['steps']} steps x {d['tokens_per_step']} tokens)",
                            f"{d['tokens_per_s']:.0f} tokens/s", f"{d['train_s']:.1f}", memory(d)])
    for method, p in result.get("pruning", {}).items():
        compression.append([f"pruning {method} 50% (achieved {p['achieved_sparsity']:.1%})"
                            + (f", calibration {p['calibration']}" if "calibration" in p else ""),
                            "", f"{p['wall_s']:.2f}", memory(p)])
    if compression:
        tables.append(("compression", ["what", "throughput", "seconds", "peak memory"], compression))
    return tables
