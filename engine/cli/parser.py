"""The `compfair` argument parser: one function per group of commands, each command's handler
set as `func` (the handlers live in the command modules beside this one)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from engine import api
from engine.cli.control import cmd_bench, cmd_cancel, cmd_doctor, cmd_retry, cmd_tui, cmd_worker
from engine.cli.listing import cmd_jobs, cmd_logs, cmd_models, cmd_runs, cmd_show
from engine.cli.results import cmd_compare, cmd_export
from engine.cli.studies import cmd_report, cmd_study
from engine.cli.submit import add_spec_options, cmd_submit
from engine.terminal_output import error
from engine.specs import SPEC_TYPES
from engine.cli.integers import bound_int_arguments
from engine.cli.interop import (EXPORT_FORMATS, cmd_export as export_any,
                                add_parsers as add_interop_parsers)
from engine.cli.plan import add_parser as add_plan_parser
from engine.cli.scale import add_parsers as add_scale_parsers
from engine.cli.score import add_parser as add_score_parser

if TYPE_CHECKING:                     # pragma: no cover - types only
    Subparsers = argparse._SubParsersAction


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error format: one `error: ...` line naming the bad value and
    where to find help, exit code 2 (argparse's own usage dump is several lines)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        error(f"{message} (see `{self.prog} --help`)")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = _Parser(prog="compfair", description=(
        "What did compression do to toxicity and social bias? Distil, prune and evaluate causal "
        "LMs; results in SQLite. With no command, opens the terminal app."))
    parser.add_argument("--home", default=None, help="state folder (default $COMPFAIR_HOME or the per-user data dir)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command")
    _add_submit(sub)
    _add_listings(sub)
    _add_queue_control(sub)
    _add_results(sub)
    add_plan_parser(sub)               # plan: items needed to decide, and the time
    _add_machine(sub)
    _add_studies(sub)
    _add_bench(sub)
    add_score_parser(sub)
    add_interop_parsers(sub)           # card, prefetch
    p = sub.add_parser("tui", help="open the terminal app (same as no command)")
    p.set_defaults(func=cmd_tui)
    bound_int_arguments(parser)        # ids and integers in SQLite's 64 bits and their own range
    return parser


def _add_submit(sub: Subparsers) -> None:
    p = sub.add_parser("submit", help="queue a job; prints its id")
    kinds = p.add_subparsers(dest="kind", required=True)
    for kind, spec_cls in SPEC_TYPES.items():
        k = kinds.add_parser(kind, help=(spec_cls.__doc__ or "").splitlines()[0],
                             description=spec_cls.__doc__)
        add_spec_options(k, spec_cls)
        k.add_argument("--sweep", action="append", metavar="NAME=V1,V2",
                       help="one job per value (repeat for a grid), e.g. --sweep sparsity=0.3,0.5,0.7")
        k.add_argument("--after", type=int, action="append", metavar="JOB", help="run after this job is done")
        k.add_argument("--priority", type=int, default=0, help="higher runs first")
        k.add_argument("--json", action="store_true", help='print {"job_id": N}')
        k.add_argument("--wait", action="store_true", help="follow the job(s) until they end")
        k.add_argument("--no-worker", action="store_true", help="do not start a worker")
        k.add_argument("--rerun", action="store_true",
                       help="queue it even when an identical job already finished (otherwise refused, exit 2)")
        k.add_argument("--log", action="append", metavar="TRACKER",
                       help="when the job finishes, log its spec and metrics to mlflow[=URI] or "
                            "wandb[=PROJECT] (repeatable; engine.interop.tracking)")
        if getattr(spec_cls, "shardable", False):
            k.add_argument("--shards", type=int, default=1, metavar="N",
                           help="split the items into N ranges that N workers produce at once "
                                "(one run, equal to the unsharded one)")
        k.set_defaults(func=cmd_submit)


def _add_listings(sub: Subparsers) -> None:
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


def _add_queue_control(sub: Subparsers) -> None:
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


def _add_results(sub: Subparsers) -> None:
    p = sub.add_parser("compare", help="runs side by side with deltas against a baseline")
    p.add_argument("ids", type=int, nargs="+")
    p.add_argument("--baseline", type=int, help="baseline run id (default: the first)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("export", help="every metric (or those of --runs) as csv, json or md; "
                                      "lm-eval: lm-evaluation-harness results JSON per model")
    p.add_argument("--format", default="csv", choices=EXPORT_FORMATS)
    p.add_argument("--runs", type=int, nargs="*")
    p.add_argument("-o", "--output", help="file to write (default stdout); the folder for lm-eval")
    p.set_defaults(func=export_any)


def _add_machine(sub: Subparsers) -> None:
    p = sub.add_parser("worker", help="run jobs from the queue (the TUI and submit start one detached)")
    p.add_argument("--once", action="store_true", help="drain the queue, then exit")
    p.add_argument("--idle-exit", type=float, default=600.0, help="exit after this many idle seconds")
    p.add_argument("--devices", metavar="LIST",
                   help="start one detached worker per device instead: all (every GPU), GPU "
                        "indices like 0,1,3, or cpu,cpu (engine.scale.device_workers)")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run each job as a Ray task on the cluster at ADDRESS (auto, HOST:PORT, "
                        "ray://HOST:PORT; none: a local cluster); this process stays the only "
                        "writer of the store. The compfair home must be on a shared filesystem "
                        "every node mounts at the same path: tasks write model files there. "
                        "Needs the ray extra: pip install 'compfair[ray]'")
    p.add_argument("--ray-cpus", type=int, metavar="N",
                   help="CPUs of the local Ray cluster that --ray without an address starts "
                        "(default: this machine's)")
    p.set_defaults(func=cmd_worker)
    add_scale_parsers(sub)

    p = sub.add_parser("doctor", help="device, versions, offline scorers and data, store health")
    p.add_argument("--check", action="store_true", help="integrity check, orphan rows, stuck jobs")
    p.add_argument("--repair", action="store_true", help="requeue or fail stuck jobs, drop orphan rows")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)


def _add_studies(sub: Subparsers) -> None:
    p = sub.add_parser("study", help="run a study preset or file: compress, evaluate, report")
    p.add_argument("study", help="preset name (quick, paper) or a .toml file")
    p.add_argument("--dry-run", action="store_true", help="print the jobs it would queue")
    p.add_argument("--no-wait", action="store_true", help="queue and return; jobs run in the background")
    p.add_argument("--inline", action="store_true", help="run the jobs in this process instead of a detached worker")
    p.add_argument("-o", "--output", help="report folder (default under the compfair home)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--log", action="append", metavar="TRACKER",
                   help="log each job it queues, and the report files, to mlflow[=URI] or "
                        "wandb[=PROJECT] (repeatable)")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("report", help="Markdown + CSV + plots for a study that has run")
    p.add_argument("study", help="the study's name")
    p.add_argument("-o", "--output", help="report folder (default under the compfair home)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_report)


def _add_bench(sub: Subparsers) -> None:
    p = sub.add_parser("bench", help="the whole eval job and each phase vs same-run batched "
                                     "model.generate; scoring, distillation and pruning speed")
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
                   help="run the baselines on the first N prompts only (default: all)")
    p.add_argument("--repeat", type=int, default=1,
                   help="compfair jobs to run (other seeds), interleaved with parts of the baseline")
    p.add_argument("--pipeline-baseline", action="store_true",
                   help="also the naive baseline: pipeline() one prompt at a time (slow)")
    p.add_argument("--skip-compression", action="store_true", help="no distillation/pruning timing")
    p.add_argument("--no-detoxify", action="store_true", help="no detoxify scoring comparison")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)
