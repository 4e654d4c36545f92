"""`compfair submit`: build specs from the command line (one per sweep value), validate them
(`engine.api.submit_jobs`: validated, duplicates refused, sharded, logged) and queue them; `--wait` follows them."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any, Sequence, get_type_hints

from engine import api, queue
from engine.cli.common import open_store, spec_title
from engine.errors import UsageError
from engine.terminal_output import error, is_terminal, print_json
from engine.spec_values import field_range
from engine.specs import SPEC_TYPES
from engine.store import Store
from engine.job_status import ENDED
from engine.tracking_targets import parse_targets


def add_spec_options(parser: argparse.ArgumentParser, spec_cls: type) -> None:
    """One `--field-name` option per field of the spec class (values parsed by the spec)."""
    hints = get_type_hints(spec_cls)
    for f in dataclasses.fields(spec_cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        kind = getattr(hints[f.name], "__name__", str(hints[f.name]))
        allowed = field_range(f.name)           # the documented range (engine.spec_values)
        parser.add_argument(flag, dest=f"spec_{f.name}", default=None, metavar=f.name.upper(),
                            help=f"{kind}; default {default!r}"
                                 + (f"; range {allowed.text()}".replace("%", "%%") if allowed else ""))
    for name, alias in getattr(spec_cls, "aliases", {}).items():
        needs = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in alias.requires)
        parser.add_argument("--" + name.replace("_", "-"), dest=f"spec_{name}", default=None,
                            metavar=name.upper(), help=f"the same as --{alias.field.replace('_', '-')}"
                            + (f" (with {needs})" if needs else ""))


def _spec_values(args: argparse.Namespace, spec_cls: type) -> dict[str, Any]:
    """The spec fields given on the command line ("none"/"null" mean None)."""
    values = {"kind": spec_cls.kind}
    names = [f.name for f in dataclasses.fields(spec_cls)] + list(getattr(spec_cls, "aliases", {}))
    for name in names:
        value = getattr(args, f"spec_{name}", None)
        if value is not None:
            values[name] = None if value.lower() in ("none", "null") else value
    return values


def _parse_sweep(items: Sequence[str] | None) -> dict[str, list[str]]:
    """`--sweep NAME=V1,V2` options as {field: [values]}."""
    sweep = {}
    for item in items or ():
        name, sep, values = item.partition("=")
        if not sep or not values:
            raise UsageError(f"--sweep {item!r} must look like NAME=V1,V2,...")
        parts = [v.strip() for v in values.split(",")]
        if not all(parts):
            raise UsageError(f"--sweep {item!r} has an empty value; give NAME=V1,V2,... with "
                             "every value written out")
        repeated = next((v for i, v in enumerate(parts) if v in parts[:i]), None)
        if repeated is not None:
            raise UsageError(f"--sweep {item!r} lists {repeated!r} twice; each value would "
                             "queue the same job again")
        sweep[name.replace("-", "_")] = parts
    return sweep


def _refuse_repeats(specs: Sequence) -> None:
    """Sweep values written differently but meaning the same (`seed=1,01`) would queue one job
    twice: refused, naming the job."""
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        key = repr(sorted(spec.to_dict().items()))
        if key in seen:
            raise UsageError(f"--sweep gives the same job twice (combinations {seen[key] + 1} and "
                             f"{i + 1}: {spec.kind} {spec_title(spec.to_dict())}); give distinct values")
        seen[key] = i


def cmd_submit(args: argparse.Namespace) -> int:
    """Queue one job per sweep combination after validating them all (exit 2, nothing queued,
    when one is bad); prints the job ids."""
    spec_cls = SPEC_TYPES[args.kind]
    base = _spec_values(args, spec_cls)
    specs = api.expand_sweep(base, _parse_sweep(args.sweep))
    _refuse_repeats(specs)
    targets = parse_targets(getattr(args, "log", None))    # a bad --log: exit 2, nothing queued
    store = open_store(args, write=True)
    job_ids = api.submit_jobs(store, specs, depends_on=args.after or (), priority=args.priority,
                              shards=getattr(args, "shards", 1), rerun=getattr(args, "rerun", False),
                              log_to=targets, start_worker=not args.no_worker)
    if args.json:
        print_json({"job_id": job_ids[0]} if len(job_ids) == 1 else {"job_ids": job_ids})
    else:
        for job_id, spec in zip(job_ids, specs):
            sys.stdout.write(f"{job_id}\n" if not is_terminal() else
                             f"queued job {job_id}: {spec.kind} {spec_title(spec.to_dict())}\n")
    if args.wait:
        return wait_for_jobs(store, job_ids)
    return 0


def wait_for_jobs(store: Store, job_ids: list[int]) -> int:
    """Follow jobs until they end, with a progress bar on a terminal."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    pending = set(job_ids)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeRemainingColumn(), disable=not is_terminal()) as progress:
        tasks = {j: progress.add_task(f"job {j}", total=1.0) for j in job_ids}
        while pending:
            for job_id in list(pending):
                row = queue.job(store, job_id)
                progress.update(tasks[job_id], completed=row["progress"] or 0.0,
                                description=f"job {job_id} {row['status']}: {row['progress_message'] or ''}"[:60])
                if row["status"] in ENDED:
                    pending.discard(job_id)
            time.sleep(0.5)
    failed = [queue.job(store, j) for j in job_ids]
    failed = [r for r in failed if r["status"] != "done"]
    for row in failed:
        error(f"job {row['id']} {row['status']}: {row['error']}")
    return 1 if failed else 0
