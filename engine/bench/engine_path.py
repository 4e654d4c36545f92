"""Phase 2, compfair's real path: an `eval` job through the queue and a real `Worker`, and the
merging of repeated jobs into one record."""

from __future__ import annotations

import time
from typing import Any

from engine.bench.measure import PeakMemory, phase
from engine.bench.settings import BenchSettings, Say


def compfair_job(worker, model_ref: str, lm, settings: BenchSettings, say: Say,
                 seed: int) -> tuple[dict, list[str]]:
    """A real eval job through the queue and the worker; returns its figures and texts."""
    from engine import queue
    from engine.results import JobResult
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
    record.update({
        "job_id": job_id, "run_id": run_id, "prompts": run["n_items"],
        "generations": generated, "new_tokens": tokens,
        "phase_s": generation_s, "job_s": record["wall_s"], "cpu_s": round(cpu_s, 3),
        "generations_per_cpu_s": generated / max(cpu_s, 1e-9),
        "load": f"{record['load_start']}-{record['load_end']}",
        "sampling_s": summary.get("sampling_seconds"), "scoring_busy_s": summary.get("scoring_seconds"),
        "generations_per_s": generated / generation_s, "tokens_per_s": tokens / generation_s,
        "generation_share": (summary.get("sampling_seconds") or 0) / generation_s,
        "scoring_share": (summary.get("scoring_seconds") or 0) / generation_s,
        "final_batch_rows": summary.get("final_batch_rows"),
        # scoring every continuation's fluency under the reference model, after sampling
        "quality_s": summary.get("quality_seconds") or 0.0,
        "mean_toxicity": sum(s["toxicity"] for s in samples) / max(len(samples), 1),
        **memory_record})
    return record, [s["completion"] for s in samples]


_ADDED = ("generations", "new_tokens", "phase_s", "job_s", "cpu_s", "sampling_s", "scoring_busy_s",
          "quality_s")


def merge_jobs(records: list[dict]) -> dict:
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

