"""A demo store for screenshots, snapshot tests and trying the app without a GPU.

Writes plausible-looking (synthetic, clearly labelled `demo`) models, jobs, runs, metrics,
samples and progress events through the engine's Store, with fixed timestamps so that
screenshots are reproducible. Not used by the app itself.

    python -m tui.demo --home /tmp/demo-home          # fill a home, then: compfair --home ...
    python -m tui.demo --home /tmp/h --screenshots docs   # also write docs/runs.svg, compare.svg
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

from engine import queue
from engine.paths import Home
from engine.specs import DistillSpec, EvalSpec, PruneSpec
from engine.store import Store

T0 = 1_750_000_000.0  # 2025-06-15, fixed so screenshots do not change
BOLD_GROUPS = {"gender": ("American_actors", "American_actresses"),
               "race": ("African_Americans", "Asian_Americans", "European_Americans")}
CROWS_TYPES = ("race-color", "gender", "religion", "age", "nationality")


def _metric(name, value, half, subset="", n=200, higher=None):
    return {"name": name, "subset": subset, "value": value, "ci_low": value - half,
            "ci_high": value + half, "n": n, "higher_is_better": higher}


def _set_times(store: Store, job_id: int, run_id: int | None, ts: float) -> None:
    with store.conn:
        store.conn.execute("UPDATE jobs SET created_at = ?, started_at = ?, finished_at = ? "
                           "WHERE id = ?", (ts, ts + 5, ts + 300, job_id))
        if run_id is not None:
            store.conn.execute("UPDATE runs SET created_at = ?, finished_at = ? WHERE id = ?",
                               (ts + 5, ts + 300, run_id))
        store.conn.execute("UPDATE events SET ts = ? WHERE job_id = ?", (ts + 10, job_id))


def _model(store: Store, name: str, source: str, n_params: int, n_nonzero: int, *,
           parent: int | None = None, method: str | None = None, params: dict | None = None,
           sparsity: float | None = None, n_layers: int = 12) -> int:
    return store.upsert_model({
        "name": name, "source": source, "origin": "derived" if parent else "hub",
        "path": f"/demo/models/{name}", "architecture": "GPT2LMHeadModel", "n_layers": n_layers,
        "n_params": n_params, "n_nonzero": n_nonzero, "size_bytes": n_params * 4,
        "parent_id": parent, "method": method, "method_params": params or {},
        "sparsity": sparsity, "created_at": T0})


def add_eval_run(store: Store, model_id: int, model_ref: str, suite: str, ts: float,
                 level: float, *, scorer: str = "detoxify", seed: int = 0, samples: bool = True,
                 label: str = "demo", quality: float = 1.0) -> tuple[int, int]:
    """A finished eval job and its run with metrics; `level` shifts the numbers, `quality`
    the continuations' perplexity and repetitiveness (1: the teacher's; 2.5: degraded)."""
    spec = EvalSpec(model=model_ref, suite=suite, samples_per_prompt=25, max_prompts=400,
                    label=label, seed=seed, data="builtin")
    job_id = queue.submit(store, spec)
    with store.conn:
        store.conn.execute("UPDATE jobs SET status='done', progress=1.0, attempts=1 WHERE id=?",
                           (job_id,))
    settings = {"samples_per_prompt": 25, "max_prompts": 400, "top_p": 0.9,
                "max_new_tokens": 20, "seed": seed, "data_source": "builtin"}
    run_id = store.start_run(job_id, model_id, suite, settings, scorer, "0.5.0", "builtin", "cpu")
    rng = random.Random(run_id)
    metrics = DEMO_RUNS[suite](store, run_id, level, quality, rng, samples)
    store.finish_run(run_id, metrics, {"demo": True})
    store.add_event(job_id, "finished")
    _set_times(store, job_id, run_id, ts)
    return job_id, run_id


def _toxicity_run(store: Store, run_id: int, level: float, quality: float, rng: random.Random,
                  samples: bool) -> list[dict]:
    metrics = []
    for name, base in (("expected_max_toxicity", 0.30), ("toxicity_probability", 0.22)):
        for subset, shift in (("", 0.0), ("toxic", 0.25), ("nontoxic", -0.08)):
            metrics.append(_metric(name, base * level + shift, 0.02 + rng.random() * 0.01,
                                   subset, higher=0))
    metrics += [_metric("continuation_perplexity", 18.0 * quality, 0.9 * quality, higher=0),
                _metric("distinct_2", 0.78 / quality, 0.02, higher=1),
                _metric("degenerate_share", 0.02 * quality, 0.01, higher=0)]
    if samples:
        rows = []
        for i in range(8):
            for k in range(2):
                tox = round(0.95 - 0.07 * i - 0.02 * k, 3) * level
                rows.append({"key": f"{i}:{k}", "item_index": i, "sample_index": k,
                             "prompt": f"Demo prompt number {i} about the people who",
                             "completion": f" live there said something {'rude' if i < 3 else 'kind'} ({k})",
                             "prompt_toxicity": round(0.6 - 0.05 * i, 3), "toxicity": tox,
                             "continuation_nll": math.log(18.0 * quality) + 0.01 * i,
                             "continuation_tokens": 8})
        store.add_samples(run_id, rows)
    return metrics


def _bold_run(store: Store, run_id: int, level: float, quality: float, rng: random.Random,
                  samples: bool) -> list[dict]:
    metrics = []
    for domain, groups in BOLD_GROUPS.items():
        values = []
        for j, group in enumerate(groups):
            value = 0.35 + 0.08 * j * level + rng.random() * 0.02
            values.append(value)
            metrics.append(_metric("positive_rate", value, 0.04, f"{domain}/{group}", higher=1))
        metrics.append(_metric("sentiment_mean_gap", (max(values) - min(values)), 0.03, domain, higher=0))
    metrics.append(_metric("sentiment_mean_gap", 0.12 * level, 0.03, "", higher=0))
    metrics.append(_metric("toxicity_mean", 0.03 * level, 0.01, "", higher=0))
    return metrics


def _crows_run(store: Store, run_id: int, level: float, quality: float, rng: random.Random,
                  samples: bool) -> list[dict]:
    metrics = []
    metrics.append(_metric("stereotype_score", 50 + 12 * level, 2.0, "", n=1508))
    for j, bias in enumerate(CROWS_TYPES):
        metrics.append(_metric("stereotype_score", 50 + (8 + 3 * j) * level, 4.0, bias, n=150))
    return metrics


def _perplexity_run(store: Store, run_id: int, level: float, quality: float, rng: random.Random,
                  samples: bool) -> list[dict]:
    metrics = []
    metrics.append(_metric("perplexity", 30 / level, 0.8, "", higher=0))
    return metrics


# what a demo run of each suite stores: suite -> (store, run id, level, quality, rng, samples) -> metric rows
DEMO_RUNS = {"toxicity": _toxicity_run, "bold": _bold_run, "crows_pairs": _crows_run,
             "perplexity": _perplexity_run}


def fill_demo(home: Home) -> dict:
    """Models gpt2 -> distilled -> pruned, their runs, one running and one queued job."""
    store = Store(home)
    try:
        base = _model(store, "gpt2", "gpt2", 124_439_808, 124_439_808)
        student = _model(store, "gpt2-distil-6L", "/demo/models/gpt2-distil-6L", 81_912_576,
                         81_912_576, parent=base, method="distill",
                         params={"temperature": 2.0, "alpha_ce": 0.5}, n_layers=6)
        pruned = {}
        for sparsity in (0.3, 0.5, 0.7):
            name = f"gpt2-wanda-{int(sparsity * 100)}"
            pruned[sparsity] = _model(store, name, f"/demo/models/{name}", 124_439_808,
                                      int(124_439_808 * (1 - sparsity * 0.68)), parent=base,
                                      method="prune", params={"method": "wanda"},
                                      sparsity=sparsity)
        student_pruned = _model(store, "gpt2-distil-6L-mag-50", "/demo/models/gpt2-distil-6L-mag-50",
                                81_912_576, 54_000_000, parent=student, method="prune",
                                params={"method": "magnitude"}, sparsity=0.5, n_layers=6)
        runs = {}
        ts = T0
        jobs = {}
        for key, model_id, ref, level in (("base", base, "gpt2", 1.0),
                                          ("student", student, f"model:{student}", 0.82),
                                          ("wanda30", pruned[0.3], f"model:{pruned[0.3]}", 0.97),
                                          ("wanda50", pruned[0.5], f"model:{pruned[0.5]}", 0.93),
                                          ("wanda70", pruned[0.7], f"model:{pruned[0.7]}", 1.08),
                                          ("student_pruned", student_pruned,
                                           f"model:{student_pruned}", 0.85)):
            # the distilled-then-pruned model writes broken text: its lower toxicity is no evidence
            quality = 2.5 if key == "student_pruned" else 1.0
            for suite in ("toxicity", "bold", "crows_pairs", "perplexity"):
                ts += 3600
                jobs[(key, suite)], runs[(key, suite)] = add_eval_run(
                    store, model_id, ref, suite, ts, level, quality=quality)
        add_demo_study(store, jobs)
        # A run by another scorer, to show the compare warning.
        ts += 3600
        runs[("base", "toxicity-profanity")] = add_eval_run(store, base, "gpt2", "toxicity", ts, 0.7,
                                                            scorer="profanity")[1]
        # One running distillation with progress, one queued prune after it.
        running = queue.submit(store, DistillSpec(teacher="gpt2", intensity=0.5, steps=400, label="demo"))
        with store.conn:
            store.conn.execute("UPDATE jobs SET status='running', progress=0.45, attempts=1, "
                               "progress_message='step 180/400', worker_id='demo-worker' WHERE id=?",
                               (running,))
        store.add_event(running, "started distill job on worker demo-worker")
        store.add_event(running, "loading model gpt2")
        store.add_event(running, "step 180/400", kind="progress",
                        data={"done": 180, "total": 400, "fraction": 0.45, "eta_s": 262.0,
                              "loss": 3.412, "loss_ce": 2.95, "loss_kd": 3.87, "tokens_per_s": 4120.0})
        queued = queue.submit(store, PruneSpec(model=f"job:{running}", method="wanda", sparsity=0.5,
                                               label="demo"))
        ts += 3600
        for job_id in (running, queued):
            with store.conn:
                store.conn.execute("UPDATE jobs SET created_at = ?, started_at = CASE WHEN "
                                   "status='running' THEN ? END WHERE id = ?", (ts, ts + 5, job_id))
                store.conn.execute("UPDATE events SET ts = ? WHERE job_id = ?", (ts + 10, job_id))
        return {"runs": runs, "running": running, "queued": queued, "study": "demo-study",
                "models": {"base": base, "student": student, "pruned": pruned}}
    finally:
        store.close()


STUDY_MODELS = (("teacher", "base", "base"), ("distilled-6L", "student", "distill"),
                 ("wanda-30", "wanda30", "prune"), ("wanda-50", "wanda50", "prune"),
                 ("wanda-70", "wanda70", "prune"), ("distilled-mag-50", "student_pruned", "prune"))


def add_demo_study(store: Store, jobs: dict[tuple[str, str], int], name: str = "demo-study") -> None:
    """A study record (as `compfair study` writes it) over the demo's eval jobs."""
    models = {label: {"kind": kind, "params": {}, "ref": None, "node": None, "job_id": None}
              for label, _, kind in STUDY_MODELS}
    evals = [{"key": f"{label}/{suite}", "model": label, "suite": suite, "params": {},
              "job_id": job_id}
             for label, key, _ in STUDY_MODELS for (k, suite), job_id in jobs.items() if k == key]
    plan = {"teacher": "gpt2", "order": [label for label, _, _ in STUDY_MODELS],
            "models": models, "evals": evals}
    with store.conn:
        store.db["studies"].upsert({"name": name, "source": "demo", "description": "demo study",
                                    "plan": json.dumps(plan), "created_at": T0,
                                    "updated_at": T0}, pk="name")


def fill_many(home: Home, n: int, seed: int = 0) -> None:
    """`n` finished toxicity runs with headline metrics, inserted in bulk (for load tests)."""
    store = Store(home)
    rng = random.Random(seed)
    try:
        model_ids = [_model(store, f"model-{i}", f"/demo/models/model-{i}", 124_000_000,
                            124_000_000 - i * 1_000_000) for i in range(20)]
        with store.conn:
            jobs = [{"kind": "eval", "spec": json.dumps({"kind": "eval", "model": f"model-{i % 20}"}),
                     "spec_hash": f"h{i}", "status": "done", "priority": 0, "created_at": T0 + i,
                     "attempts": 1, "max_attempts": 3, "cancel_requested": 0, "progress": 1.0}
                    for i in range(n)]
            store.db["jobs"].insert_all(jobs, batch_size=1000)
            first_job = store.one("SELECT min(id) AS id FROM jobs WHERE spec_hash LIKE 'h%'")["id"]
            runs = [{"job_id": first_job + i, "model_id": model_ids[i % 20],
                     "suite": "toxicity", "status": "done", "scorer": "profanity",
                     "scorer_version": "1.5", "settings": json.dumps({"samples_per_prompt": 25}),
                     "data_source": "builtin", "device": "cpu", "created_at": T0 + i}
                    for i in range(n)]
            store.db["runs"].insert_all(runs, batch_size=1000)
            first_run = store.one("SELECT min(id) AS id FROM runs WHERE job_id >= ?", (first_job,))["id"]
            metrics = []
            for i in range(n):
                for name in ("expected_max_toxicity", "toxicity_probability"):
                    v = rng.random() * 0.5
                    metrics.append({"run_id": first_run + i, "name": name, "subset": "", "value": v,
                                    "ci_low": v - 0.02, "ci_high": v + 0.02, "n": 100,
                                    "higher_is_better": 0})
            store.db["metrics"].insert_all(metrics, batch_size=2000)
    finally:
        store.close()


def save_screenshots(home: Home, folder: Path, compare_ids: list[int]) -> list[Path]:
    """The runs screen and the compare screen of `compare_ids` (120x40) as SVG files."""
    import asyncio

    from tui.app import CompfairApp  # on use: numpy, rich, textual

    folder.mkdir(parents=True, exist_ok=True)
    written = []

    async def settle(pilot) -> None:
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    async def shoot() -> None:
        app = CompfairApp(home, start_worker=False, poll_s=None)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await pilot.press("slash", *"toxicity", "enter")  # the toxicity runs, two selected
            await pilot.pause(0.3)
            await pilot.press("down", "down", "space", "down", "down", "down", "space", "up")
            await settle(pilot)
            written.append(folder / "runs.svg")
            written[-1].write_text(app.export_screenshot(title="compfair: runs"), encoding="utf-8")
            app.open_compare(compare_ids)
            await settle(pilot)
            written.append(folder / "compare.svg")
            written[-1].write_text(app.export_screenshot(title="compfair: compare"), encoding="utf-8")

    asyncio.run(shoot())
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True, help="a new, empty compfair home to fill")
    parser.add_argument("--screenshots", help="folder to write runs.svg and compare.svg into")
    args = parser.parse_args(argv)
    home = Home.resolve(args.home)
    demo = fill_demo(home)
    print(f"demo store written to {home.db_path}")
    if args.screenshots:
        runs = demo["runs"]
        ids = [runs[(key, "toxicity")] for key in ("base", "student", "wanda30", "wanda50", "wanda70")]
        for path in save_screenshots(home, Path(args.screenshots), ids):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
