"""Results across runs: `compfair compare` (side by side, paired verdicts) and `export`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine import api
from engine.cli.common import open_store
from engine.terminal_output import fmt_ci, print_json, print_table, working
from engine.output_guard import check_output
from engine.report_verdict_text import MARKS as REPORT_MARKS
from engine.verdicts import (BETTER, CHANGED, EQUIVALENT, INCONCLUSIVE, NOT_EVIDENCE, UNVERIFIED,
                             VERDICTS, WORSE)

# The report's marks, so that a verdict reads the same in the table, the report and the TUI.
MARKS = {verdict: REPORT_MARKS.get(verdict, "").strip() for verdict in VERDICTS}
COLOURS = {BETTER: "green", WORSE: "red", EQUIVALENT: "blue", INCONCLUSIVE: "dim",
           NOT_EVIDENCE: "bold yellow", UNVERIFIED: "dim yellow", CHANGED: "cyan"}


def _items_needed(record: dict | None) -> str:
    """` ~1,234 items to decide` for an inconclusive verdict that more items would decide (none
    where the sizing asks no more than it had: then the observed change, not the count, keeps
    it undecided, as its sentence says)."""
    if not record or record.get("verdict") != INCONCLUSIVE or record.get("undecided_by_resampling"):
        return ""
    needed = record.get("items_for_equivalence")
    return f" ~{needed:,} items to decide" if needed and needed > (record.get("n") or 0) else ""


def cmd_compare(args: argparse.Namespace) -> int:
    """Runs side by side with deltas, paired verdicts and flips against a baseline."""
    store = open_store(args)
    with working(f"judging runs {', '.join(map(str, args.ids))}: paired bootstrap tests "
                 "(Ctrl-C stops)"):
        comparison = api.compare(store, args.ids, baseline_id=args.baseline)
    if args.json:
        print_json({"baseline_run": comparison.baseline_id, "warnings": comparison.warnings,
                    "rows": comparison.to_records(), "verdicts": comparison.verdicts,
                    "group_verdicts": comparison.group_verdicts, "flips": comparison.flips,
                    "settings": comparison.settings})
        return 0
    for warning in comparison.warnings:
        sys.stderr.write(f"warning: {warning}\n")
    columns = ["metric", "subset"] + [f"run {r['id']} {r['model']}" + (" (base)" if r["id"] == comparison.baseline_id else "")
                                      for r in comparison.runs]
    records = {(v.get("run_id"), v["metric"]): v for v in comparison.verdicts if not v.get("subset")}
    rows, styles = [], []
    for name, subset, cells in comparison.rows:
        row = [name, subset]
        for run, c in zip(comparison.runs, cells):
            record = records.get((run["id"], name)) if not subset else None
            row.append(fmt_ci(c.value, c.ci_low, c.ci_high)
                       + (f" ({c.delta:+.3f})" if c.delta is not None else "")
                       + (f" {MARKS[c.verdict]}" if c.verdict in MARKS else "")
                       + _items_needed(record))
        rows.append(row)
        styles.append([None, None] + [COLOURS.get(c.verdict) for c in cells])
    print_table(columns, rows, title="comparison (delta vs baseline; paired verdicts: "
                + "  ".join(f"{MARKS[v]} {v}" for v in VERDICTS) + ")", styles=styles)
    # every verdict but a plain "equivalent" in words (the margin, the test, what would decide)
    quiet = [v for v in comparison.verdicts if v["verdict"] == EQUIVALENT and not v.get("note")]
    for verdict in comparison.verdicts:
        if verdict not in quiet:
            sys.stdout.write(f"  {MARKS.get(verdict['verdict'], '*')} {verdict['sentence']}\n")
    if quiet:
        sys.stdout.write(f"  {MARKS[EQUIVALENT]} equivalent within their margins ({len(quiet)}, --json has each): "
                         + ", ".join(f"{v['model']} {v['metric']}" for v in quiet) + "\n")
    for f in comparison.flips:
        if f["n"]:
            sys.stdout.write(f"  flips run {f['run_id']} ({f['suite']}, {f['class']}): {f['became']} became, "
                             f"{f['stopped']} stopped of {f['n']} ({f['share_changed']:.0%}), "
                             f"McNemar p = {f['mcnemar_p']:.3f}\n")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Every metric (or those of --runs) as csv, json or Markdown."""
    store = open_store(args)
    if args.output:     # never the store, a log or a model's file (engine.output_guard)
        check_output(store.home, args.output)
    text = api.export_records(api.metric_records(store, args.runs), args.format)
    if args.output:
        path = Path(args.output).expanduser().resolve()
        try:
            path.write_text(text)
        except OSError as exc:      # named, so the command line says which path and why (faults)
            if exc.filename is None:    # a write cut short (a full disk, /dev/full) names none
                raise OSError(exc.errno, exc.strerror, str(path)) from None
            raise
        sys.stdout.write(f"wrote {path}\n")
    else:
        sys.stdout.write(text)
    return 0
