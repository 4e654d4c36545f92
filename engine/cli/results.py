"""Results across runs: `compfair compare` (side by side, paired verdicts) and `export`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine import api
from engine.cli.common import open_store
from engine.output import fmt_ci, print_json, print_table


def cmd_compare(args: argparse.Namespace) -> int:
    """Runs side by side with deltas, paired verdicts and flips against a baseline."""
    store = open_store(args)
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


def cmd_export(args: argparse.Namespace) -> int:
    """Every metric (or those of --runs) as csv, json or Markdown."""
    store = open_store(args)
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
