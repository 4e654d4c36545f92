"""Presenting a benchmark result: the tables `compfair bench` prints."""

from __future__ import annotations


def _mib(value) -> str:
    return "" if not value else f"{value / 2**20:,.0f} MiB"


def _compfair_label(record: dict, what: str) -> str:
    spread = record.get("jobs_generations_per_s")
    if not spread:
        return f"compfair {what}"
    return f"compfair {what} ({len(spread)} eval jobs, {min(spread):.2f}-{max(spread):.2f} gen/s)"


def _line(label: str, record: dict, seconds: float | None, cpu: float | None, load: str,
          memory: str = "") -> list[str]:
    """[path, generations, seconds, gen/s, CPU-s, gen/CPU-s, peak memory, load avg]."""
    n = record["generations"]
    return [label, str(n), f"{seconds:.1f}" if seconds else "",
            f"{n / seconds:.2f}" if seconds else "", f"{cpu:.1f}" if cpu else "",
            f"{n / cpu:.2f}" if cpu else "", memory, load]


def generation_tables(result: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """The baselines against the compfair job (whole job and each phase), and the ratios."""
    gen, fast = result["generate"], result["compfair"]
    s, machine = result["settings"], result["machine"]
    title = (f"{result['model']['ref']} on {machine.get('gpu') or machine['device']} "
             f"({machine['dtype']}, {machine['attention']} attention, {gen['torch_threads']} torch threads "
             f"for every line); {result['data']['prompts']} prompts x k={s['k']} x {s['new_tokens']} tokens, "
             f"scorer {s['scorer']}")

    def memory(record):
        return _mib(record.get("peak_cuda_bytes")) or _mib(record.get("peak_rss_bytes"))

    search = ", ".join(f"{b}: {v:.1f}" for b, v in gen["search_generations_per_s"].items() if b != "load")
    rows = [_line(f"generate, batched ({gen['batch_prompts']} prompts x k per call; search gen/s {search})",
                  gen, gen["generation_s"], gen["generation_cpu_s"], gen["load"], memory(gen)),
            _line("generate + batched scoring", gen, gen["total_s"], gen["cpu_s"], gen["load"], memory(gen))]
    if "pipeline" in result:
        naive = result["pipeline"]
        rows.append(_line("naive baseline: pipeline, one prompt per call, scorer per text", naive,
                          naive["total_s"], naive["cpu_s"], naive["load"], memory(naive)))
    phases, load = fast["phases"], fast["load"]
    rows += [_line(_compfair_label(fast, "sampler alone"), fast, fast["sampling_s"], None, load),
             _line("compfair generation phase (sampler, scoring overlapped, storing)", fast,
                   fast["phase_s"], fast["generation_cpu_s"], load),
             _line("compfair whole eval job (sum of its phases)", fast, fast["job_s"], fast["job_cpu_s"],
                   load, memory(fast))]
    columns = ["path", "generations", "seconds", "gen/s", "CPU-s", "gen/CPU-s", "peak memory", "load avg"]
    tables = [(title, columns, rows)]
    job = max(fast["job_s"], 1e-9)
    phase_rows = [[name, f"{phases[name]:.2f}", f"{phases[name] / job:.1%}",
                   f"{phases['cpu'].get(name, 0):.2f}", load]
                  for name in ("setup", "generation", "fluency", "metrics")]
    phase_rows.insert(2, ["  scoring (thread, overlapped with generation)", f"{fast['scoring_busy_s'] or 0:.2f}",
                          "", "", load])
    phase_rows.append(["whole job", f"{fast['job_s']:.2f}", "100%", f"{fast['job_cpu_s'] or 0:.2f}", load])
    tables.append(("the compfair eval job, phase by phase (stored with its run)",
                   ["phase", "seconds", "share of the job", "CPU-s", "load avg"], phase_rows))
    r = result["ratio"]
    tables.append(("ratios (same run)", ["what", "ratio"], [
        ["whole job / (generate + batched scoring), gen per CPU-s", f"{r['job_vs_generate_scoring_per_cpu_s']:.2f}x"],
        ["whole job / (generate + batched scoring), gen/s", f"{r['job_vs_generate_scoring_per_s']:.2f}x"],
        ["whole job / generate alone, gen per CPU-s", f"{r['job_vs_generate_per_cpu_s']:.2f}x"],
        ["sampler / generate, gen/s", f"{r['sampler_vs_generate_per_s']:.2f}x"],
        ["generation phase / (generate + batched scoring), gen per CPU-s",
         f"{r['generation_phase_vs_generate_scoring_per_cpu_s']:.2f}x"],
        ["fluency pass, share of the whole job", f"{r['fluency_share_of_job']:.1%}"]]))
    return tables


def summary_tables(result: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, columns, rows) for each table the CLI prints."""
    tables = generation_tables(result)

    def memory(record):
        return _mib(record.get("peak_cuda_bytes")) or _mib(record.get("peak_rss_bytes"))

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
