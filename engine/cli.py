"""The `compfair` command line. With no arguments it opens the TUI.

Exit codes: 0 success, 1 a job or command failed at run time, 2 bad input (an impossible
parameter, an unknown model/suite/file), so scripts can tell the two apart."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence, get_type_hints

from engine import api, queue
from engine.formatting import fmt_bytes, fmt_count, fmt_time
from engine.output import error, fmt_ci, fmt_value, is_terminal, print_json, print_table
from engine.paths import Home
from engine.specs import SPEC_TYPES, SpecError, spec_from_dict
from engine.settings import run_ci_label
from engine.store import Store, StoreError

log = logging.getLogger("engine.cli")


class UsageError(Exception):
    """Bad input from the user: exit code 2."""


USER_ERRORS: tuple[type[BaseException], ...] = (UsageError, SpecError, ValueError, FileNotFoundError)
# (StudyError and DataError are ValueErrors too.)


def _user_errors() -> tuple[type[BaseException], ...]:
    from engine.model_refs import ModelError      # not engine.registry: that imports torch
    extra: list[type[BaseException]] = [ModelError]
    try:
        from engine.evaluation.data import DataError
        extra.append(DataError)
    except ImportError:
        pass
    return USER_ERRORS + tuple(extra)


def _store(args) -> Store:
    return Store(Home.resolve(args.home))


# -- submit -----------------------------------------------------------------------------------
def _add_spec_options(parser: argparse.ArgumentParser, spec_cls) -> None:
    hints = get_type_hints(spec_cls)
    for f in dataclasses.fields(spec_cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        kind = getattr(hints[f.name], "__name__", str(hints[f.name]))
        parser.add_argument(flag, dest=f"spec_{f.name}", default=None, metavar=f.name.upper(),
                            help=f"{kind}; default {default!r}")


def _spec_values(args, spec_cls) -> dict[str, Any]:
    values = {"kind": spec_cls.kind}
    for f in dataclasses.fields(spec_cls):
        value = getattr(args, f"spec_{f.name}", None)
        if value is not None:
            values[f.name] = None if value.lower() in ("none", "null") else value
    return values


def _parse_sweep(items: Sequence[str]) -> dict[str, list[str]]:
    sweep = {}
    for item in items or ():
        name, sep, values = item.partition("=")
        if not sep or not values:
            raise UsageError(f"--sweep {item!r} must look like NAME=V1,V2,...")
        sweep[name.replace("-", "_")] = [v.strip() for v in values.split(",") if v.strip()]
    return sweep


def cmd_submit(args) -> int:
    spec_cls = SPEC_TYPES[args.kind]
    base = _spec_values(args, spec_cls)
    specs = api.expand_sweep(base, _parse_sweep(args.sweep))
    store = _store(args)
    _check_model_refs(store, specs)
    _check_inputs(specs)
    job_ids = [api.submit(store, spec, depends_on=args.after or (), priority=args.priority,
                          start_worker=False) for spec in specs]
    if not args.no_worker:
        from engine.launcher import ensure_worker
        ensure_worker(store)
    if args.json:
        print_json({"job_id": job_ids[0]} if len(job_ids) == 1 else {"job_ids": job_ids})
    else:
        for job_id, spec in zip(job_ids, specs):
            sys.stdout.write(f"{job_id}\n" if not is_terminal() else
                             f"queued job {job_id}: {spec.kind} {_spec_title(spec.to_dict())}\n")
    if args.wait:
        return _wait(store, job_ids)
    return 0


def _check_model_refs(store: Store, specs) -> None:
    """Fail fast (exit 2) on references that can never resolve: missing paths, bad syntax,
    truncated weights, and (with HF_HUB_OFFLINE=1) hub ids that are not in the local cache.
    Uses engine.model_refs, which imports no torch: submitting stays quick."""
    from engine.model_refs import ModelError, resolve, resolve_offline_status
    for spec in specs:
        for ref in spec.model_refs().values():
            if ref.startswith("job:"):
                continue
            source = resolve(ref, store)
            if source.origin == "hub" and source.model_id is None and os.environ.get("HF_HUB_OFFLINE") == "1":
                status = resolve_offline_status(ref)
                if status != "local":
                    raise ModelError(f"model {ref!r} is not in the local Hugging Face cache and "
                                     "HF_HUB_OFFLINE=1 forbids downloading it; give a local folder, "
                                     "a .gguf file or 'smollm2', or download it first")


def _check_inputs(specs) -> None:
    """Read local data files and check scorer names before queueing (exit 2 on bad input), so
    a malformed file is reported now, not when the job runs. Only local inputs are read; hub
    data sets are left to the job. A job given a bad file anyway fails with the same reason."""
    checked: set[tuple] = set()
    for spec in specs:
        if spec.kind == "eval":
            _check_scorer_name(spec)
            if spec.data in ("auto", "hub"):
                continue
            key = ("eval", spec.suite, spec.data, spec.max_prompts, spec.domains, spec.groups,
                   spec.prompts_per_group, spec.seed)
            if key in checked:
                continue
            checked.add(key)
            from engine.evaluation.data import load_suite_data
            load_suite_data(spec.suite, spec.data, max_prompts=spec.max_prompts, domains=spec.domains,
                            groups=spec.groups, prompts_per_group=spec.prompts_per_group, seed=spec.seed)
            continue
        if spec.kind == "distill":
            value = spec.data
        elif spec.method in ("wanda", "heads") or spec.recovery_steps > 0:
            value = spec.calibration_data
        else:
            continue                       # magnitude pruning reads no text
        if ("text", value) in checked:
            continue
        checked.add(("text", value))
        from engine.compression.textdata import parse_source, read_file_texts
        from engine.context import JobFailed
        try:
            source = parse_source(value)
            if source.kind == "file":
                read_file_texts(Path(source.ref))
        except JobFailed as exc:
            raise UsageError(str(exc)) from None


def _check_scorer_name(spec) -> None:
    if spec.suite not in ("toxicity", "bold"):
        return
    name = (spec.scorer or "auto").strip()
    if name in ("auto", "profanity") or (name.startswith("hf:") and name[3:].strip()):
        return
    if name == "detoxify" or name.startswith("detoxify:"):
        from engine.evaluation.scorers import DETOXIFY_VARIANTS
        target = name.partition(":")[2] or "original"
        if target in DETOXIFY_VARIANTS or Path(target).expanduser().is_file():
            return
        raise UsageError(f"detoxify variant or checkpoint {target!r} is neither one of "
                         f"{', '.join(DETOXIFY_VARIANTS)} nor an existing file")
    raise UsageError(f"toxicity scorer {name!r} is unknown; use auto, profanity, "
                     "detoxify[:variant or checkpoint path] or hf:<model id or folder>")


def _spec_title(spec: dict) -> str:
    if spec.get("kind") == "eval":
        return f"{spec['model']} on {spec['suite']}"
    if spec.get("kind") == "distill":
        student = spec.get("student") or f"{spec['intensity']:.0%} depth"
        return f"{spec['teacher']} -> {student}" + ("" if spec.get("distill", True) else " (CE baseline)")
    if spec.get("kind") == "prune":
        amount = spec.get("n_m") or f"{spec['sparsity']:.0%}"
        return f"{spec['model']} {spec['method']} {amount}"
    return ""


def _wait(store: Store, job_ids: list[int]) -> int:
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
                if row["status"] in ("done", "failed", "cancelled"):
                    pending.discard(job_id)
            time.sleep(0.5)
    failed = [queue.job(store, j) for j in job_ids]
    failed = [r for r in failed if r["status"] != "done"]
    for row in failed:
        error(f"job {row['id']} {row['status']}: {row['error']}")
    return 1 if failed else 0


# -- listings ---------------------------------------------------------------------------------
def cmd_jobs(args) -> int:
    store = _store(args)
    statuses = args.status.split(",") if args.status else ()
    jobs = api.list_jobs(store, statuses, limit=args.limit)
    if args.json:
        print_json(jobs)
        return 0
    rows, styles = [], []
    colour = {"done": "green", "failed": "red", "running": "cyan", "cancelled": "yellow", "queued": None}
    for job in jobs:
        rows.append([job["id"], job["kind"], _spec_title(job["spec"]), job["status"],
                     f"{(job['progress'] or 0) * 100:.0f}%", job["priority"],
                     ",".join(map(str, job["depends_on"])), fmt_time(job["created_at"]),
                     (job["error"] or job["progress_message"] or "")[:70]])
        styles.append([None, None, None, colour.get(job["status"]), None, None, None, None, None])
    print_table(["id", "kind", "what", "status", "progress", "prio", "after", "created", "note"],
                rows, title="jobs", styles=styles)
    return 0


def cmd_runs(args) -> int:
    store = _store(args)
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


def cmd_models(args) -> int:
    store = _store(args)
    models = api.models(store)
    if args.json:
        print_json(models)
        return 0
    rows = [[m["id"], m["name"], m["origin"], m["architecture"], m["n_layers"], fmt_count(m["n_params"]),
             fmt_count(m["n_nonzero"]), fmt_bytes(m["size_bytes"]), m["parent_id"] or "",
             m["method"] or "", fmt_value(m["latency_ms"], 1)] for m in models]
    print_table(["id", "name", "origin", "architecture", "layers", "params", "non-zero", "disk",
                 "parent", "method", "ms/token"], rows, title="models")
    return 0


def cmd_show(args) -> int:
    store = _store(args)
    if args.job:
        detail = api.job_detail(store, args.id)
        if args.json:
            print_json(detail)
        else:
            for key in ("id", "kind", "status", "attempts", "progress", "error", "depends_on", "run_id"):
                sys.stdout.write(f"{key:>12}: {detail.get(key)}\n")
            sys.stdout.write(f"{'spec':>12}: {detail['spec']}\n{'result':>12}: {detail['result']}\n")
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


def cmd_cancel(args) -> int:
    store = _store(args)
    for job_id in args.ids:
        state = api.cancel(store, job_id)
        sys.stdout.write(f"job {job_id}: {state}\n")
    return 0


def cmd_retry(args) -> int:
    store = _store(args)
    for job_id in args.ids:
        api.retry(store, job_id, start_worker=not args.no_worker)
        sys.stdout.write(f"job {job_id}: queued again (stored samples are kept)\n")
    return 0


def cmd_logs(args) -> int:
    store = _store(args)
    if queue.job(store, args.id) is None:
        raise UsageError(f"job {args.id} does not exist")
    last = 0
    while True:
        for event in api.events(store, args.id, after_id=last):
            last = event["id"]
            sys.stdout.write(f"{fmt_time(event['ts'])} {event['level']:<7} {event['message']}\n")
        sys.stdout.flush()
        if not args.follow or queue.job(store, args.id)["status"] in ("done", "failed", "cancelled"):
            return 0
        time.sleep(1.0)


def cmd_compare(args) -> int:
    store = _store(args)
    comparison = api.compare(store, args.ids, baseline_id=args.baseline)
    if args.json:
        print_json({"baseline_run": comparison.baseline_id, "warnings": comparison.warnings,
                    "rows": comparison.to_records(), "verdicts": comparison.verdicts,
                    "flips": comparison.flips, "settings": comparison.settings})
        return 0
    for warning in comparison.warnings:
        sys.stderr.write(f"warning: {warning}\n")
    columns = ["metric", "subset"] + [f"run {r['id']} {r['model']}" + (" (base)" if r["id"] == comparison.baseline_id else "")
                                      for r in comparison.runs]
    rows, styles = [], []
    colour = {"better": "green", "worse": "red", "not evidence": "yellow"}
    mark = {"better": " +", "worse": " -", "not evidence": " !"}
    for name, subset, cells in comparison.rows:
        rows.append([name, subset] + [fmt_ci(c.value, c.ci_low, c.ci_high) +
                                      (f" ({c.delta:+.3f})" if c.delta is not None else "")
                                      + mark.get(c.verdict, "") for c in cells])
        styles.append([None, None] + [colour.get(c.verdict) for c in cells])
    print_table(columns, rows, title="comparison (delta vs baseline; paired tests: + better, - worse, "
                "! lower but continuations degraded: not evidence)", styles=styles)
    for verdict in comparison.verdicts:
        if verdict["verdict"] != "same":
            sys.stdout.write(f"  * {verdict['sentence']}\n")
    for f in comparison.flips:
        if f["n"]:
            sys.stdout.write(f"  flips run {f['run_id']} ({f['suite']}, {f['class']}): {f['became']} became, "
                             f"{f['stopped']} stopped of {f['n']} ({f['share_changed']:.0%}), "
                             f"McNemar p = {f['mcnemar_p']:.3f}\n")
    return 0


def cmd_export(args) -> int:
    store = _store(args)
    text = api.export_records(api.metric_records(store, args.runs), args.format)
    if args.output:
        path = Path(args.output).expanduser().resolve()
        path.write_text(text)
        sys.stdout.write(f"wrote {path}\n")
    else:
        sys.stdout.write(text)
    return 0


# -- worker and doctor --------------------------------------------------------------------------
def cmd_worker(args) -> int:
    from engine.worker import Worker
    logging.getLogger().setLevel(logging.INFO)
    worker = Worker(Home.resolve(args.home), once=args.once,
                    idle_exit_s=None if args.once else args.idle_exit)
    worker.run()
    if worker.stop_reason:
        error(f"worker stopped: {worker.stop_reason}")
        return 1
    return 0


def cmd_doctor(args) -> int:
    from engine.doctor import check_store, check_unopenable, report
    try:
        store = _store(args)
    except StoreError:
        if not (args.check or args.repair):
            raise
        home = Home(Path(args.home).expanduser().resolve()) if args.home else Home.resolve()
        for problem in check_unopenable(home.db_path):
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


def cmd_study(args) -> int:
    from engine import study as studies
    plan = studies.load_study(args.study)
    for note in studies.requirements(plan):
        sys.stderr.write(f"note: {note}\n")
    if args.dry_run:
        nodes = studies.describe_plan(plan)
        if args.json:
            print_json(nodes)
        else:
            print_table(["job", "kind", "model", "after"],
                        [[n["key"], n["kind"], n["model"], ", ".join(n["needs"])] for n in nodes],
                        title=f"study {plan.name}: {len(nodes)} jobs (dry run)")
        return 0
    store = _store(args)
    submitted = studies.submit_study(store, plan)
    actions: dict[str, int] = {}
    for item in submitted:
        actions[item.action] = actions.get(item.action, 0) + 1
    sys.stderr.write(f"study {plan.name}: {len(submitted)} jobs ("
                     + ", ".join(f"{n} {a}" for a, n in sorted(actions.items())) + ")\n")
    job_ids = [item.job_id for item in submitted]
    if args.inline:
        from engine.worker import Worker
        Worker(store.home, once=True, idle_exit_s=None).run()
    else:
        from engine.launcher import ensure_worker
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
    ended = ("done", "failed", "cancelled")
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


def _print_report(store: Store, name: str, args) -> int:
    from engine.report import build_report
    report = build_report(store, name, output_dir=getattr(args, "output", None))
    if getattr(args, "json", False):
        print_json(report.summary())
    else:
        report.print_table()
        sys.stdout.write(f"report: {report.folder}\n")
    return 0 if report.complete else 1


def cmd_report(args) -> int:
    return _print_report(_store(args), args.study, args)


def cmd_bench(args) -> int:
    """Throughput of the evaluation path against a same-run pipeline baseline (engine.bench)."""
    from engine.bench import BenchSettings, run_bench, summary_tables
    settings = BenchSettings(model=args.model, prompts=args.prompts, k=args.k,
                             new_tokens=args.new_tokens, scorer=args.scorer, data=args.data,
                             device=args.device, seed=args.seed, baseline_prompts=args.baseline_prompts,
                             skip_compression=args.skip_compression, detoxify=not args.no_detoxify,
                             repeat=args.repeat, home=args.home)
    result = run_bench(settings, say=lambda message: sys.stderr.write(f"bench: {message}\n"))
    if args.json:
        print_json(result)
        return 0
    for title, columns, rows in summary_tables(result):
        print_table(columns, rows, title=title)
    sys.stdout.write(f"total {result['total_s']:.0f} s; load average at the end "
                     f"{result['load_average_end']}\n")
    return 0


def cmd_tui(args) -> int:
    try:
        from tui.app import run_app
    except ImportError as exc:
        raise UsageError(f"the terminal app cannot start: {exc}") from exc
    return run_app(Home.resolve(args.home)) or 0


# -- parser -----------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error format: one `error: ...` line naming the bad value and
    where to find help, exit code 2 (argparse's own usage dump is several lines)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        error(f"{message} (see `{self.prog} --help`)")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="compfair", description=(
        "What did compression do to toxicity and social bias? Distil, prune and evaluate causal "
        "LMs; results in SQLite. With no command, opens the terminal app."))
    parser.add_argument("--home", default=None, help="state folder (default $COMPFAIR_HOME or the per-user data dir)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("submit", help="queue a job; prints its id")
    kinds = p.add_subparsers(dest="kind", required=True)
    for kind, spec_cls in SPEC_TYPES.items():
        k = kinds.add_parser(kind, help=(spec_cls.__doc__ or "").splitlines()[0],
                             description=spec_cls.__doc__)
        _add_spec_options(k, spec_cls)
        k.add_argument("--sweep", action="append", metavar="NAME=V1,V2",
                       help="one job per value (repeat for a grid), e.g. --sweep sparsity=0.3,0.5,0.7")
        k.add_argument("--after", type=int, action="append", metavar="JOB", help="run after this job is done")
        k.add_argument("--priority", type=int, default=0, help="higher runs first")
        k.add_argument("--json", action="store_true", help='print {"job_id": N}')
        k.add_argument("--wait", action="store_true", help="follow the job(s) until they end")
        k.add_argument("--no-worker", action="store_true", help="do not start a worker")
        k.set_defaults(func=cmd_submit)

    p = sub.add_parser("jobs", help="the queue: running, queued and finished jobs")
    p.add_argument("--status", help="comma-separated statuses to show")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("runs", help="evaluation runs with their key metrics")
    p.add_argument("filter", nargs="?", help="words that must all match (model, suite, scorer, ...)")
    p.add_argument("--sort", default="id", choices=sorted(api.SORT_COLUMNS))
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("models", help="the model registry (base and derived models)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("show", help="one run (or, with --job, one job) in full")
    p.add_argument("id", type=int)
    p.add_argument("--job", action="store_true", help="ID is a job id")
    p.add_argument("--worst", type=int, default=10, help="how many most toxic continuations to list")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    for name, func, text in (("cancel", cmd_cancel, "cancel jobs (running ones stop after the current batch)"),
                             ("retry", cmd_retry, "requeue failed or cancelled jobs; they resume")):
        p = sub.add_parser(name, help=text)
        p.add_argument("ids", type=int, nargs="+")
        if name == "retry":
            p.add_argument("--no-worker", action="store_true", help="do not start a worker")
        p.set_defaults(func=func)

    p = sub.add_parser("logs", help="a job's progress and log lines")
    p.add_argument("id", type=int)
    p.add_argument("-f", "--follow", action="store_true")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("compare", help="runs side by side with deltas against a baseline")
    p.add_argument("ids", type=int, nargs="+")
    p.add_argument("--baseline", type=int, help="baseline run id (default: the first)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("export", help="every metric (or those of --runs) as csv, json or md")
    p.add_argument("--format", default="csv", choices=("csv", "json", "md"))
    p.add_argument("--runs", type=int, nargs="*")
    p.add_argument("-o", "--output", help="file to write (default stdout)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("worker", help="run jobs from the queue (the TUI and submit start one detached)")
    p.add_argument("--once", action="store_true", help="drain the queue, then exit")
    p.add_argument("--idle-exit", type=float, default=600.0, help="exit after this many idle seconds")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("doctor", help="device, versions, offline scorers and data, store health")
    p.add_argument("--check", action="store_true", help="integrity check, orphan rows, stuck jobs")
    p.add_argument("--repair", action="store_true", help="requeue or fail stuck jobs, drop orphan rows")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("study", help="run a study preset or file: compress, evaluate, report")
    p.add_argument("study", help="preset name (quick, paper) or a .toml file")
    p.add_argument("--dry-run", action="store_true", help="print the jobs it would queue")
    p.add_argument("--no-wait", action="store_true", help="queue and return; jobs run in the background")
    p.add_argument("--inline", action="store_true", help="run the jobs in this process instead of a detached worker")
    p.add_argument("-o", "--output", help="report folder (default under the compfair home)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("report", help="Markdown + CSV + plots for a study that has run")
    p.add_argument("study", help="the study's name")
    p.add_argument("-o", "--output", help="report folder (default under the compfair home)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("bench", help="evaluation throughput vs a same-run pipeline baseline; "
                                     "scoring, distillation and pruning speed")
    p.add_argument("--model", default="smollm2",
                   help="model reference, or config:gpt2 / config:gpt2-medium (random weights)")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--k", type=int, default=8, help="samples per prompt")
    p.add_argument("--new-tokens", type=int, default=20)
    p.add_argument("--scorer", default="profanity")
    p.add_argument("--data", default="builtin", help="builtin, or a path such as ../shared/data/rtp")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline-prompts", type=int, default=None,
                   help="run the (slow) baseline on the first N prompts only (default: all)")
    p.add_argument("--repeat", type=int, default=1,
                   help="compfair jobs to run (other seeds), interleaved with parts of the baseline")
    p.add_argument("--skip-compression", action="store_true", help="no distillation/pruning timing")
    p.add_argument("--no-detoxify", action="store_true", help="no detoxify scoring comparison")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("tui", help="open the terminal app (same as no command)")
    p.set_defaults(func=cmd_tui)
    return parser



def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose or args.command == "worker" else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command is None:
        args.func = cmd_tui
    try:
        return args.func(args)
    except _user_errors() as exc:
        error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return 2
    except StoreError as exc:
        error(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
