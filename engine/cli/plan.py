"""`compfair plan RUN [--against RUN2]`: how many items would decide the comparison, and the
time that takes (the logic lives in `engine.planning`)."""

from __future__ import annotations

import argparse
import math
import sys

from engine.cli.common import open_store
from engine.terminal_output import print_json, print_table
from engine.planning import NOISE_FLOOR, MetricPlan, plan

NOISE_NOTE = ("sigma is the baseline's own noise: each prompt's k samples split in two halves, one "
              "against the other, i.e. two independent draws of the same model at k/2 samples each, "
              "a conservative stand-in for the paired variance of an unchanged model at k; "
              "--against RUN2 measures the real paired difference")


def add_parser(sub) -> None:
    """Add `plan` to the CLI's subparsers."""
    p = sub.add_parser("plan", help="items needed to decide equivalence (or a change) at a margin, "
                                    "and the time that takes")
    p.add_argument("run", type=int, help="a finished run (the baseline)")
    p.add_argument("--against", type=int, metavar="RUN2",
                   help="a finished run of the same suite on the same items (e.g. the compressed "
                        "model): sigma from the observed paired difference")
    p.add_argument("--margin", action="append", default=[], metavar="METRIC=VALUE",
                   help="equivalence margin of a metric (absolute, or a share such as 5%%); "
                        "repeatable; default: settings.toml [margins], else the metric's own")
    p.add_argument("--power", type=float, default=None,
                   help="the power to plan for, in [0.5, 1) (default: settings' statistics.power, 0.8)")
    p.add_argument("--json", action="store_true", help="one record per metric")
    p.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the plan of each headline metric of a run, as a table and sentences or JSON."""
    store = open_store(args)
    plans = plan(store, args.run, against=args.against, margins=args.margin, power=args.power)
    if args.json:
        print_json([p.record() for p in plans])
        return 0
    columns = ["metric", "n now", "sigma", "margin", "for equivalence", "to detect the margin",
               "time (both models)"]
    rows = [[p.metric, f"{p.n:,}", _num(p.sigma), p.margin_words, _count(p.items_for_equivalence),
             _count(p.items_for_difference), duration(p.seconds(p.items_for_equivalence))]
            for p in plans]
    title = (f"plan for run {args.run}" + (f" against run {args.against}" if args.against else "")
             + f" (alpha {plans[0].alpha:g}, power {plans[0].power:.0%})" if plans else "")
    print_table(columns, rows, title=title or None)
    for p in plans:
        sys.stdout.write(f"  * {sentence(p)}\n")
    if plans and plans[0].sigma_source == NOISE_FLOOR:
        sys.stdout.write(f"  note: {NOISE_NOTE}.\n")
    if plans:
        sys.stdout.write(f"  time per item: {plans[0].seconds_source}.\n")
    return 0


def sentence(p: MetricPlan) -> str:
    """One metric's plan in words."""
    if p.margin is None:
        return f"{p.title}: no sizing: its relative margin {p.margin_words} has no baseline value to scale"
    if not math.isfinite(p.sigma):
        return f"{p.title}: no sizing: the paired difference has no measurable spread"
    if p.items_for_equivalence is None:
        return f"{p.title}: more {p.unit} than anyone can run would be needed (now {p.n:,})"
    unit = p.unit if p.items_for_equivalence != 1 else p.unit.rstrip("s")
    text = (f"{p.title}: ~{p.items_for_equivalence:,} {unit} (now {p.n:,}) would show equivalence "
            f"within {p.margin_words} at {p.power:.0%} power if the true change is 0")
    if p.items_for_difference is not None:
        text += f"; ~{p.items_for_difference:,} would detect a change of {p.margin:.3g}"
    seconds = p.seconds(p.items_for_equivalence)
    if seconds is not None:
        text += (f"; at {p.seconds_per_item:.3g} s per {p.unit.rstrip('s')} per model on {p.device} "
                 f"that is ~{duration(seconds)} for both models")
        if p.samples_per_item > 1:
            text += f" ({p.items_for_equivalence * p.samples_per_item:,} generations per model at k={p.samples_per_item})"
    return text + "."


def duration(seconds: float | None) -> str:
    """Seconds in words: 45 s, 12 min, 2 h 8 min, 3 d 4 h ('' when unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def _num(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "n/a"


def _count(value: int | None) -> str:
    return f"{value:,}" if value is not None else "n/a"
