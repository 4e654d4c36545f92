"""Commands that act on the queue or the machine: `compfair cancel`, `retry`, `worker`,
`doctor`, `bench` and `tui`. Heavy modules are imported inside the commands that need them."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from engine import api
from engine.cli.common import open_store
from engine.errors import StoreError, UsageError
from engine.terminal_output import error, print_json, print_table
from engine.paths import Home
from engine.bench import BenchSettings, run_bench, summary_tables
from engine.cli.scale import cmd_worker_devices, cmd_worker_ray
from engine.doctor import check_store, check_unopenable, report


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel jobs: queued ones at once, running ones after the current batch."""
    store = open_store(args, write=True)
    for job_id in args.ids:
        state = api.cancel(store, job_id)
        sys.stdout.write(f"job {job_id}: {state}\n")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    """Requeue failed or cancelled jobs; they resume from what was stored."""
    store = open_store(args, write=True)
    for job_id in args.ids:
        api.retry(store, job_id, start_worker=not args.no_worker)
        sys.stdout.write(f"job {job_id}: queued again (stored samples are kept)\n")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run jobs from the queue in this process (exit 1 when it stopped early); with
    --devices, start one detached worker per device instead; with --ray, run the jobs as Ray
    tasks."""
    if getattr(args, "ray", None) is not None or getattr(args, "ray_cpus", None) is not None:
        return cmd_worker_ray(args)
    if getattr(args, "devices", None) is not None:
        return cmd_worker_devices(args)
    from engine.worker import Worker  # on use: torch
    open_store(args, write=True).close()      # a newer compfair's store: exit 2, no worker
    logging.getLogger().setLevel(logging.INFO)
    worker = Worker(Home.resolve(args.home), once=args.once,
                    idle_exit_s=None if args.once else args.idle_exit)
    worker.run()
    if worker.stop_reason:
        error(f"worker stopped: {worker.stop_reason}")
        return 1
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Versions, devices and offline scorers; --check/--repair the store's integrity."""
    try:
        store = open_store(args, write=args.repair)
    except StoreError as exc:
        if not (args.check or args.repair):
            raise
        home = Home(Path(args.home).expanduser().resolve()) if args.home else Home.resolve()
        for problem in check_unopenable(home.db_path, str(exc.__cause__ or exc)):
            sys.stdout.write(f"problem: {problem}\n")
        return 1
    if args.repair:
        found = check_store(store, repair=True)
        remaining = check_store(store)          # what the repair could not fix
        if args.json:
            print_json({"found": found, "remaining": remaining})
        else:
            for problem in found:
                sys.stdout.write(f"{'problem' if problem in remaining else 'repaired'}: {problem}\n")
            for problem in remaining:
                if problem not in found:
                    sys.stdout.write(f"problem: {problem}\n")
            sys.stdout.write("store is healthy\n" if not remaining else "")
        return 1 if remaining else 0
    if args.check:
        problems = check_store(store)
        if args.json:
            print_json(problems)
        else:
            for problem in problems:
                sys.stdout.write(f"problem: {problem}\n")
            sys.stdout.write("store is healthy\n" if not problems else "")
        return 1 if problems else 0
    info = report(store)
    if args.json:
        print_json(info)
    else:
        print_table(["check", "result"], [[k, v] for k, v in info.items()], title="compfair doctor")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """The whole eval job and each phase against same-run batched `generate` (engine.bench)."""
    settings = BenchSettings(model=args.model, prompts=args.prompts, k=args.k,
                             new_tokens=args.new_tokens, scorer=args.scorer, data=args.data,
                             device=args.device, seed=args.seed, baseline_prompts=args.baseline_prompts,
                             skip_compression=args.skip_compression, detoxify=not args.no_detoxify,
                             repeat=args.repeat, pipeline_baseline=args.pipeline_baseline,
                             home=args.home)
    result = run_bench(settings, say=lambda message: sys.stderr.write(f"bench: {message}\n"))
    if args.json:
        print_json(result)
        return 0
    for title, columns, rows in summary_tables(result):
        print_table(columns, rows, title=title)
    sys.stdout.write(f"total {result['total_s']:.0f} s; load average at the end "
                     f"{result['load_average_end']}\n")
    return 0


def cmd_tui(args: argparse.Namespace) -> int:
    """Open the terminal app."""
    try:
        from tui.app import run_app  # on use: textual
    except ImportError as exc:
        raise UsageError(f"the terminal app cannot start: {exc}") from exc
    return run_app(Home.resolve(args.home)) or 0
