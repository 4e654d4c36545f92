"""The interoperability commands: `export --format lm-eval`, `card`, `prefetch`, and the
`--log` option of `submit` (the handlers; `engine.cli.parser` wires them in)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.cli.common import UsageError, open_store

EXPORT_FORMATS = ("csv", "json", "md", "lm-eval")


def cmd_export(args: argparse.Namespace) -> int:
    """`compfair export`: lm-eval's results JSON (one per model, under the folder -o names),
    else the table formats of `engine.cli.results.cmd_export`."""
    if args.format != "lm-eval":
        from engine.cli.results import cmd_export as table_export
        return table_export(args)
    if not args.output:
        raise UsageError("--format lm-eval writes one results file per model: give the folder "
                         "with -o DIR")
    from engine.interop.lm_eval_format import export
    folder = Path(args.output).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"-o {args.output!r} is a file; --format lm-eval needs a folder")
    written = export(open_store(args), folder, args.runs)
    if not written:
        sys.stderr.write("no finished runs to export\n")
    for path in written:
        sys.stdout.write(f"wrote {path}\n")
    return 0
