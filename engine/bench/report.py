"""Presenting a benchmark result: the tables `compfair bench` prints."""

from __future__ import annotations


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
    if fast.get("job_s"):
        quality = fast.get("quality_s") or 0.0
        tables.append(("continuation quality in the eval job",
                       ["what", "seconds", "eval job seconds", "share of the job"],
                       [["fluency: NLL of every continuation under the reference model",
                         f"{quality:.2f}", f"{fast['job_s']:.1f}", f"{quality / fast['job_s']:.1%}"]]))
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
