"""The `compfair` command line. With no arguments it opens the TUI.

Exit codes: 0 success, 1 a job or command failed at run time, 2 bad input (an impossible
parameter, an unknown model/suite/file), so scripts can tell the two apart. Bad input is any
`engine.errors.UserError`. A damaged, read-only or full store, a path that cannot be written or
input nested too deeply is one line naming the path and cause (`engine.cli.faults`: exit 2 when
the input is at fault, 1 when the environment is). Anything else is a fault of compfair: one
line on stderr, the traceback in `<home>/logs/cli.log`. COMPFAIR_DEBUG=1 prints tracebacks.

The commands live in the modules of this package: `submit`, `listing` (jobs, runs, models,
show, logs), `results` (compare, export), `plan` (items needed to decide
a comparison, and the time), `control` (cancel, retry, worker, doctor, bench,
tui), `studies` (study, report); `parser` builds the argument parser."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Sequence

from engine.errors import StoreError, UsageError, UserError, first_line
from engine.cli.control import cmd_tui
from engine.cli.faults import describe
from engine.cli.parser import build_parser
from engine.terminal_output import error
from engine.paths import Home, default_home, owner_only_file

__all__ = ["UsageError", "build_parser", "main"]

log = logging.getLogger("engine.cli")
CRASH_LOG = "cli.log"
DEBUG_ENV = "COMPFAIR_DEBUG"       # "1": tracebacks on stderr as well


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (argparse's own errors raise SystemExit(2))."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose or args.command == "worker" else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command is None:
        args.func = cmd_tui
    try:
        return args.func(args)
    except UserError as exc:
        _debug_traceback()
        error(first_line(exc))
        return 2
    except StoreError as exc:
        _debug_traceback()
        known = describe(exc.__cause__, _db_path(args)) if exc.__cause__ is not None else None
        error(known[0] if known else str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - a fault, not bad input: say so, keep the traceback
        _debug_traceback()
        known = describe(exc, _db_path(args))
        if known is not None:          # the machine or the input, not compfair: one line
            error(known[0])
            return known[1]
        where = _log_traceback(args)
        error(f"internal error: {type(exc).__name__}: {first_line(exc)}"
              + (f" (traceback in {where})" if where else ""))
        return 1


def _debug_traceback() -> None:
    """With COMPFAIR_DEBUG=1 the traceback of the exception being handled goes to stderr too."""
    if os.environ.get(DEBUG_ENV) == "1":
        traceback.print_exc(file=sys.stderr)


def _db_path(args: argparse.Namespace) -> Path | None:
    """The store file of the command's home, without creating anything; None if unknown."""
    try:
        return Home(Path(args.home).expanduser().resolve() if args.home else default_home()).db_path
    except Exception:  # noqa: BLE001 - the home itself may be the problem
        return None


def _log_traceback(args: argparse.Namespace) -> Path | None:
    """Write the exception being handled, with its traceback, to the home's CLI log (the
    temporary folder when the home cannot be used); returns the log's path, or None."""
    try:
        folder = Home.resolve(args.home).logs_dir
    except Exception:  # noqa: BLE001 - the home may be the problem
        folder = Path(tempfile.gettempdir())
    path = folder / CRASH_LOG
    crash = logging.getLogger("engine.cli.crash")
    crash.propagate = args.verbose          # with -v the traceback goes to stderr as well
    try:
        owner_only_file(path)        # 0600 whatever the umask: tracebacks hold paths and names
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        log.exception("compfair %s failed", args.command or "tui")
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s pid " + str(os.getpid())
                                           + ": %(message)s"))
    crash.addHandler(handler)
    try:
        crash.exception("compfair %s failed (argv %s)", args.command or "tui", sys.argv[1:])
    finally:
        crash.removeHandler(handler)
        handler.close()
    return path
