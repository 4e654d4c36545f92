"""`compfair study` (plan, queue, follow and report a study) and `compfair report`."""

from __future__ import annotations

import argparse
import sys
import time

from engine import queue, study as studies
from engine.cli.common import open_store
from engine.terminal_output import error, is_terminal, print_json, print_table, working
from engine.store import Store
from engine.job_status import ENDED
from engine.interop.tracking import home_targets, log_report, record_targets
from engine.launcher import ensure_worker
from engine.output_guard import check_folder, check_outputs
from engine.report import build_report
from engine.study_plan import describe_plan, load_study
from engine.tracking_targets import parse_targets


def cmd_study(args: argparse.Namespace) -> int:
    """Plan a study, queue it (validated first), follow it and print its report."""
    plan = load_study(args.study)
    for note in studies.requirements(plan):
        sys.stderr.write(f"note: {note}\n")
    if args.dry_run:
        nodes = describe_plan(plan)
        if args.json:
            print_json(nodes)
        else:
            print_table(["job", "kind", "model", "after"],
                        [[n["key"], n["kind"], n["model"], ", ".join(n["needs"])] for n in nodes],
                        title=f"study {plan.name}: {len(nodes)} jobs (dry run)")
        return 0
    targets = parse_targets(getattr(args, "log", None))    # a bad --log: exit 2, nothing queued
    store = open_store(args, write=True)
    _check_report_folder(store, getattr(args, "output", None))     # before anything is queued
    submitted = studies.submit_study(store, plan)
    record_targets(store, [i.job_id for i in submitted if i.action != "reused"], targets)
    actions: dict[str, int] = {}
    for item in submitted:
        actions[item.action] = actions.get(item.action, 0) + 1
    sys.stderr.write(f"study {plan.name}: {len(submitted)} jobs ("
                     + ", ".join(f"{n} {a}" for a, n in sorted(actions.items())) + ")\n")
    job_ids = [item.job_id for item in submitted]
    if args.inline:
        from engine.worker import Worker  # on use: torch
        Worker(store.home, once=True, idle_exit_s=None).run()
    else:
        ensure_worker(store)
        if args.no_wait:
            sys.stderr.write(f"jobs run in the background; follow with `compfair jobs`, then "
                             f"`compfair report {plan.name}`\n")
            return 0
        try:
            _follow_study(store, job_ids)
        except KeyboardInterrupt:
            sys.stderr.write(f"\nstopped following; the jobs keep running. Run `compfair study "
                             f"{args.study}` again to follow, `compfair report {plan.name}` when done\n")
            return 130
    return _print_report(store, plan.name, args)


def _follow_study(store: Store, job_ids: list[int]) -> None:
    """One progress bar for the study and one for the running job, until all jobs end."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    ended = ENDED
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), disable=not is_terminal(), transient=False) as progress:
        overall = progress.add_task("study", total=len(job_ids))
        current = progress.add_task("", total=1.0)
        last_logged = None
        while True:
            rows = [queue.job(store, j) for j in job_ids]
            finished = sum(r["status"] in ended for r in rows)
            running = [r for r in rows if r["status"] == "running"]
            progress.update(overall, completed=finished,
                            description=f"study: {finished}/{len(rows)} jobs ended")
            if running:
                r = running[0]
                text = f"job {r['id']} {r['kind']}: {r['progress_message'] or ''}"[:70]
                progress.update(current, completed=r["progress"] or 0.0, description=text)
                if not is_terminal() and r["id"] != last_logged:
                    sys.stderr.write(f"running job {r['id']} ({r['kind']}, {r['label'] or ''})\n")
                    last_logged = r["id"]
            if finished == len(rows):
                break
            time.sleep(1.0)
    failed = [r for r in (queue.job(store, j) for j in job_ids) if r["status"] != "done"]
    for row in failed:
        error(f"job {row['id']} ({row['label'] or row['kind']}) {row['status']}: {row['error']}")


# what `engine.report.build_report` writes into its folder (checked before it writes)
REPORT_FILES = ("report.md", "models.csv", "metrics.csv", "significance.csv", "flips.csv",
                "quality_gate.csv", "fairness_vs_compression.png", "tradeoff.png")


def _check_report_folder(store: Store, output: str | None) -> None:
    """A `-o DIR` report folder may not be (or be inside) the home's logs, checkpoints or a
    registered model's folder, nor may its files be the home's own (engine.output_guard)."""
    if output:
        from pathlib import Path
        folder = Path(output).expanduser()
        check_folder(store.home, folder)
        check_outputs(store.home, [folder / name for name in REPORT_FILES])


def _print_report(store: Store, name: str, args: argparse.Namespace) -> int:
    _check_report_folder(store, getattr(args, "output", None))
    with working(f"judging study {name}: paired bootstrap tests of every model (Ctrl-C stops)"):
        report = build_report(store, name, output_dir=getattr(args, "output", None))
    targets = list(dict.fromkeys(parse_targets(getattr(args, "log", None)) + home_targets(store)))
    if targets:                         # --log, [tracking] log in settings.toml, COMPFAIR_LOG
        log_report(store, name, report.folder, targets)
    if getattr(args, "json", False):
        print_json(report.summary())
    else:
        report.print_table()
        sys.stdout.write(f"report: {report.folder}\n")
    return 0 if report.complete else 1


def cmd_report(args: argparse.Namespace) -> int:
    """The report of a study that has run (Markdown, CSV, plots)."""
    return _print_report(open_store(args), args.study, args)
