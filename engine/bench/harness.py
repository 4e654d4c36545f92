"""The benchmark itself: a scratch home sharing the real home's model cache, one loaded model,
and the phases in order (`run_bench`; see the package docstring)."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine.bench.baseline import Baseline
from engine.bench.batched import BatchedGenerate
from engine.bench.compression_timing import distillation, pruning
from engine.bench.engine_path import compfair_job, eval_spec, merge_jobs
from engine.bench.measure import phase
from engine.bench.models import build_config_model
from engine.bench.scoring import scoring
from engine.bench.options import BenchSettings, Say
from engine.paths import Home

log = logging.getLogger(__name__)


def _scratch_home(root: Path, real_home):
    """A fresh home under `root` whose model cache is the real home's (a symlink)."""

    scratch = root / "home"
    scratch.mkdir(parents=True)
    (scratch / "cache").symlink_to(real_home.cache_dir, target_is_directory=True)
    return Home.resolve(scratch)


def _machine(lm) -> dict:
    """The software and hardware the figures were measured on."""
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


def _generation(worker, model_ref: str, lm, settings: BenchSettings, say: Say,
                result: dict[str, Any]) -> list[str]:
    """Phases 1 and 2: the baselines in `repeat + 1` parts around the compfair jobs (both see
    the same load on average; repeated jobs, other seeds and the same work, show the machine's
    run-to-run spread). Fills `data`, `compfair`, `generate`, `pipeline` (when asked for) and
    `ratio`; returns the first job's texts."""
    from engine.evaluation.data_sources import load_suite_data  # on use: numpy
    from engine.evaluation.scorers import load_scorer  # on use: numpy

    data = load_suite_data("toxicity", settings.data, max_prompts=settings.prompts, seed=settings.seed)
    prompts = [p.text for p in data.items]
    result["data"] = {"source": data.source, "prompts": len(prompts)}
    scorer, _ = load_scorer(settings.scorer, device=str(lm.device))
    baseline_prompts = prompts[:settings.baseline_prompts] if settings.baseline_prompts else prompts
    temperature = eval_spec(model_ref, settings, settings.seed).temperature
    batched = BatchedGenerate(lm, settings, scorer, temperature)
    batched.search(baseline_prompts, say)
    naive = Baseline(lm, settings, scorer, temperature) if settings.pipeline_baseline else None
    parts = settings.repeat + 1
    cuts = [round(i * len(baseline_prompts) / parts) for i in range(parts + 1)]
    jobs, texts = [], []
    for part in range(parts):
        chunk = baseline_prompts[cuts[part]:cuts[part + 1]]
        batched.run(chunk, say)
        if naive is not None:
            naive.run(chunk, say)
        if part < settings.repeat:
            record, job_texts = compfair_job(worker, model_ref, lm, settings, say, settings.seed + part)
            jobs.append(record)
            texts = texts or job_texts
    result["compfair"] = fast = merge_jobs(jobs)
    result["generate"] = gen = batched.record()
    if naive is not None:
        result["pipeline"] = naive.record()
    result["ratio"] = ratios(fast, gen)
    return texts


def ratios(fast: dict, gen: dict) -> dict[str, float]:
    """The headline ratios, compfair over the batched-generate baseline, measured in one run."""
    return {
        # the whole eval job (set-up, generation, fluency, metrics) against generate + batched scoring
        "job_vs_generate_scoring_per_s": fast["job_generations_per_s"] / gen["with_scoring_generations_per_s"],
        "job_vs_generate_scoring_per_cpu_s":
            fast["job_generations_per_cpu_s"] / gen["with_scoring_generations_per_cpu_s"],
        "job_vs_generate_per_cpu_s": fast["job_generations_per_cpu_s"] / gen["generations_per_cpu_s"],
        # compfair's sampler alone against generate alone
        "sampler_vs_generate_per_s": fast["sampler_generations_per_s"] / gen["generations_per_s"],
        # the generation phase (sampler, overlapped scoring, storing) against generate + scoring
        "generation_phase_vs_generate_scoring_per_cpu_s":
            fast["generations_per_cpu_s"] / gen["with_scoring_generations_per_cpu_s"],
        "fluency_share_of_job": fast["fluency_share"],
    }


# -- the benchmark ---------------------------------------------------------------------------
def run_bench(settings: BenchSettings, say: Say | None = None) -> dict[str, Any]:
    """Run every phase and return the figures (see the package docstring)."""
    import torch  # noqa: F401 - fail early and clearly without torch

    from engine.worker import Worker  # on use: torch, numpy

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
        with phase(record, say, f"loading {settings.model}"):
            lm = worker.models.load(model_ref, worker.store, device=settings.device, dtype="auto")
        result["model"] = {"ref": settings.model, "source": lm.source.source, "load_s": record["wall_s"],
                           "parameters": sum(p.numel() for p in lm.model.parameters())}
        result["machine"] = _machine(lm)
        texts = _generation(worker, model_ref, lm, settings, say, result)
        result["scoring"] = scoring(texts, settings, lm.device, root, say)
        if not settings.skip_compression:
            result["distillation"] = distillation(worker, model_ref, lm, settings, root, say)
            result["pruning"] = pruning(worker, model_ref, lm, settings, say)
    finally:
        if worker is not None:
            worker.models.clear()
            worker.store.close()
        shutil.rmtree(root, ignore_errors=True)
    result["total_s"] = round(time.perf_counter() - started, 1)
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return result
