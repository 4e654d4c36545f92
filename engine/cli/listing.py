"""The read-only commands: `compfair jobs`, `runs`, `models`, `show` and `logs`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from engine import api, queue
from engine.cli.common import open_store, spec_title
from engine.errors import UsageError
from engine.evaluation.phases import JobPhases
from engine.formatting import fmt_bytes, fmt_count, fmt_storage, fmt_time
from engine.terminal_output import fmt_ci, fmt_value, print_json, print_table
from engine.settings import run_ci_label
from engine.store import loads
from engine.job_status import ENDED


def cmd_jobs(args: argparse.Namespace) -> int:
    """The queue as a table (or JSON): running, queued, then finished jobs."""
    store = open_store(args)
    statuses = args.status.split(",") if args.status else ()
    jobs = api.list_jobs(store, statuses, limit=args.limit)
    if args.json:
        print_json(jobs)
        return 0
    rows, styles = [], []
    colour = {"done": "green", "failed": "red", "running": "cyan", "cancelled": "yellow", "queued": None}
    for job in jobs:
        rows.append([job["id"], job["kind"], spec_title(job["spec"]), job["status"],
                     f"{(job['progress'] or 0) * 100:.0f}%", job["priority"],
                     ",".join(map(str, job["depends_on"])), fmt_time(job["created_at"]),
                     (job["error"] or job["progress_message"] or "")[:70]])
        styles.append([None, None, None, colour.get(job["status"]), None, None, None, None, None])
    print_table(["id", "kind", "what", "status", "progress", "prio", "after", "created", "note"],
                rows, title="jobs", styles=styles)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    """Evaluation runs with their headline metrics, filtered by words and sorted."""
    store = open_store(args)
    runs = api.list_runs(store, args.filter or "", sort=args.sort, limit=args.limit)
    if args.json:
        print_json([dataclasses.asdict(r) for r in runs])
        return 0
    rows = []
    for r in runs:
        headline = "  ".join(f"{n}={fmt_ci(v, lo, hi)}" for n, v, lo, hi in r.headline if v is not None)
        rows.append([r.run_id, r.model, r.method, r.suite, r.scorer, r.status, r.settings,
                     headline, fmt_time(r.created_at)])
    print_table(["run", "model", "method", "suite", "scorer", "status", "settings", "key metrics",
                 "date"], rows, title=f"runs ({api.count_runs(store, args.filter or '')})")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """The model registry: base and derived models with sizes and lineage."""
    store = open_store(args)
    models = api.models(store)
    if args.json:
        print_json(models)
        return 0
    rows = [[m["id"], m["name"], m["origin"], m["architecture"], m["n_layers"], fmt_count(m["n_params"]),
             fmt_count(m["n_nonzero"]), fmt_bytes(m["size_bytes"]), fmt_storage(m.get("extra")),
             m["parent_id"] or "", m["method"] or "", fmt_value(m["latency_ms"], 1)] for m in models]
    print_table(["id", "name", "origin", "architecture", "layers", "params", "non-zero", "disk",
                 "stored as", "parent", "method", "ms/token"], rows, title="models")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """One run in full (metrics, lineage, worst continuations), or with --job one job."""
    store = open_store(args)
    if args.job:
        detail = api.job_detail(store, args.id)
        if args.json:
            print_json(detail)
        else:
            for key in ("id", "kind", "status", "attempts", "progress", "error", "depends_on", "run_id"):
                sys.stdout.write(f"{key:>12}: {detail.get(key)}\n")
            sys.stdout.write(f"{'spec':>12}: {detail['spec']}\n{'result':>12}: {detail['result']}\n")
            _print_phases(store, args.id)
        return 0
    detail = api.run_detail(store, args.id, worst=args.worst)
    if args.json:
        print_json(detail)
        return 0
    run, model = detail["run"], detail["model"] or {}
    sys.stdout.write(f"run {run['id']}: {model.get('name')} on {run['suite']} [{run['status']}] "
                     f"scorer={run['scorer']} {run['scorer_version'] or ''} device={run['device']}\n")
    lineage = " <- ".join(f"{m['name']} ({m['method'] or 'base'})" for m in detail["lineage"])
    sys.stdout.write(f"lineage: {lineage}\nsettings: {run['settings']}\n")
    summary = run.get("summary") or {}
    if summary.get("reference_model"):
        ref = summary["reference_model"]
        sys.stdout.write(f"continuation fluency judged by: {ref.get('name')} ({ref.get('ref')})\n")
    for absent in summary.get("absent") or []:
        sys.stdout.write(f"absent: {absent['name']} {absent['subset']}: {absent['reason']}\n")
    print_table(["metric", "subset", "value", run_ci_label(run), "n"],
                [[m["name"], m["subset"], fmt_value(m["value"], 4),
                  f"[{fmt_value(m['ci_low'], 4)}, {fmt_value(m['ci_high'], 4)}]"
                  if m["ci_low"] is not None else "", m["n"] or ""] for m in detail["metrics"]],
                title="metrics")
    if detail["worst_samples"]:
        print_table(["toxicity", "group", "prompt", "continuation"],
                    [[fmt_value(s["toxicity"]), s["group_name"] or "", (s["prompt"] or "")[-50:],
                      (s["completion"] or "")[:60].replace("\n", " ")] for s in detail["worst_samples"]],
                    title="most toxic continuations")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    """A job's progress and log lines; --follow until it ends."""
    store = open_store(args)
    if queue.job(store, args.id) is None:
        raise UsageError(f"job {args.id} does not exist")
    last = 0
    while True:
        for event in api.events(store, args.id, after_id=last):
            last = event["id"]
            sys.stdout.write(f"{fmt_time(event['ts'])} {event['level']:<7} {event['message']}\n")
        sys.stdout.flush()
        if not args.follow or queue.job(store, args.id)["status"] in ENDED:
            _print_phases(store, args.id)
            return 0
        time.sleep(1.0)


def _print_phases(store, job_id: int) -> None:
    """Where a finished eval job spent its time (engine.evaluation.phases), when its run
    recorded it (runs stored before phases were recorded, and other job kinds, print nothing)."""
    run = store.run_for_job(job_id)
    phases = JobPhases.from_summary(loads(run["summary"], {})) if run else None
    if phases is None:
        return
    sys.stdout.write(f"job {job_id}: time per phase (run {run['id']}): {phases.line()}\n")
    print_table(["phase", "seconds", "share", "CPU-s"], phases.rows())
