"""Phase 2, compfair's real path: an `eval` job through the queue and a real `Worker`, and the
merging of repeated jobs into one record."""

from __future__ import annotations

import time
from typing import Any

from engine.bench.measure import PeakMemory, phase
from engine.bench.options import BenchSettings, Say
from engine.evaluation.phases import JobPhases
from engine import queue
from engine.job_results import JobResult
from engine.specs import EvalSpec
from engine.store import loads


def eval_spec(model_ref: str, settings: BenchSettings, seed: int):
    """The bench's eval job (the baselines take its sampling settings from it)."""

    return EvalSpec(model=model_ref, suite="toxicity", data=settings.data,
                    max_prompts=settings.prompts, samples_per_prompt=settings.k,
                    top_p=settings.top_p, max_new_tokens=settings.new_tokens,
                    scorer=settings.scorer, device=settings.device, seed=seed,
                    bootstrap_samples=1000, label="bench")


def compfair_job(worker, model_ref: str, lm, settings: BenchSettings, say: Say,
                 seed: int) -> tuple[dict, list[str]]:
    """A real eval job through the queue and the worker; returns its figures and texts."""

    spec = eval_spec(model_ref, settings, seed)
    store = worker.store
    job_id = queue.submit(store, spec)
    record: dict[str, Any] = {}
    with phase(record, say, f"compfair: eval job {job_id} (queue + worker)"), \
            PeakMemory(lm.device) as memory:
        cpu = time.process_time()
        row = queue.claim(store, worker.id)
        status = worker.run_one(row)
        cpu_s = time.process_time() - cpu
    job = queue.job(store, job_id)
    if status != "done":
        raise RuntimeError(f"the bench's eval job {status}: {job['error']}")
    run_id = JobResult.from_row(job).run_id
    run = store.run(run_id)
    summary = loads(run["summary"], {})
    samples = store.samples(run_id)
    generation_s = summary["generation_seconds"]
    generated = summary["generated_now"]
    tokens = summary.get("new_tokens") or 0
    memory_record = memory.record()
    if summary.get("peak_device_bytes"):
        memory_record["peak_cuda_bytes"] = max(memory_record["peak_cuda_bytes"] or 0,
                                               summary["peak_device_bytes"])
    phases = JobPhases.from_summary(summary)
    record.update({
        "job_id": job_id, "run_id": run_id, "prompts": run["n_items"],
        "sampling": {"top_p": spec.top_p, "temperature": spec.temperature,
                     "max_new_tokens": spec.max_new_tokens, "samples_per_prompt": spec.samples_per_prompt},
        "generations": generated, "new_tokens": tokens,
        # the generation phase (sampling, with scoring overlapped in its thread, and storing)
        "phase_s": generation_s, "generation_cpu_s": phases.cpu.get("generation"),
        # the whole job: the sum of its stored phases (setup, generation, fluency, metrics)
        "phases": phases.to_dict(), "job_s": phases.total, "job_cpu_s": phases.cpu_total,
        # around the worker's run_one: the job plus the worker's own bookkeeping
        "worker_s": record["wall_s"], "cpu_s": round(cpu_s, 3),
        "load": f"{record['load_start']}-{record['load_end']}",
        "sampling_s": summary.get("sampling_seconds"), "scoring_busy_s": summary.get("scoring_seconds"),
        "final_batch_rows": summary.get("final_batch_rows"),
        # scoring every continuation's fluency under the reference model, after sampling
        "quality_s": phases.fluency,
        "mean_toxicity": sum(s["toxicity"] for s in samples) / max(len(samples), 1),
        **memory_record})
    record.update(rates(record))
    return record, [s["completion"] for s in samples]


_ADDED = ("generations", "new_tokens", "phase_s", "generation_cpu_s", "job_s", "job_cpu_s", "worker_s",
          "cpu_s", "sampling_s", "scoring_busy_s", "quality_s")


def rates(r: dict) -> dict:
    """Rates recomputed from a record's sums: the generation phase per second (and the sampler
    alone), the whole job per second and per CPU-second, and the phases' shares."""
    n, phase_s, job_s = r["generations"], max(r["phase_s"], 1e-9), max(r["job_s"], 1e-9)
    return {
        "generations_per_s": n / phase_s, "tokens_per_s": r["new_tokens"] / phase_s,
        "sampler_generations_per_s": n / max(r["sampling_s"] or 0, 1e-9),
        "generations_per_cpu_s": n / max(r["generation_cpu_s"] or 0, 1e-9),
        "job_generations_per_s": n / job_s, "job_generations_per_cpu_s": n / max(r["job_cpu_s"] or 0, 1e-9),
        "generation_share": (r["sampling_s"] or 0) / phase_s, "scoring_share": (r["scoring_busy_s"] or 0) / phase_s,
        "fluency_share": r["quality_s"] / job_s}


def merge_jobs(records: list[dict]) -> dict:
    """One record for repeated compfair jobs: work, time and each phase summed, rates recomputed
    from the sums, memory peaks maxed; `jobs_generations_per_s` keeps each job's rate (the spread)."""
    if len(records) == 1:
        return records[0]
    merged = dict(records[0])
    for key in _ADDED:
        merged[key] = sum(r.get(key) or 0 for r in records)
    for key in ("peak_rss_bytes", "rss_growth_bytes", "peak_cuda_bytes"):
        values = [r[key] for r in records if r.get(key) is not None]
        merged[key] = max(values) if values else None
    merged["phases"] = _sum_phases([r["phases"] for r in records])
    merged.update(rates(merged))
    merged.update({
        "job_id": [r["job_id"] for r in records], "run_id": [r["run_id"] for r in records],
        "mean_toxicity": sum(r["mean_toxicity"] * r["generations"] for r in records) / max(merged["generations"], 1),
        "load": ", ".join(r["load"] for r in records),
        "jobs_generations_per_s": [round(r["generations_per_s"], 3) for r in records]})
    return merged


def _sum_phases(stored: list[dict]) -> dict:
    """The stored phase records of several jobs, summed (wall and CPU seconds)."""
    out: dict = {}
    for record in stored:
        for key, value in record.items():
            if key == "cpu":
                cpu = out.setdefault("cpu", {})
                for name, seconds in value.items():
                    cpu[name] = round(cpu.get(name, 0.0) + seconds, 3)
            elif isinstance(value, (int, float)):
                out[key] = round(out.get(key, 0.0) + value, 3)
    return out
