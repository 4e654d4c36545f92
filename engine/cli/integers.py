"""Integer command-line arguments with a range: ids, counts and priorities. Python's ints are
unbounded but SQLite's are 64-bit, so `compfair show 99999999999999999999` used to end in an
OverflowError deep in the store (exit 1). Every `type=int` argument of the parser is given one
of these (`bound_int_arguments`): a value outside its range is bad input, refused by argparse
as one line naming the value and the accepted range (exit 2)."""

from __future__ import annotations

import argparse

from engine.spec_values import SQLITE_MAX, NumberRange

SQLITE_MIN = -SQLITE_MAX - 1
MAX_PRIORITY = 2**31 - 1                # a job's priority: within +-(2**31 - 1)

# by argument `dest`: ids (jobs, runs, models) start at 1; a priority is a 32-bit number
RANGES: dict[str, NumberRange] = {
    "id": NumberRange(1, SQLITE_MAX),
    "ids": NumberRange(1, SQLITE_MAX),
    "after": NumberRange(1, SQLITE_MAX),
    "baseline": NumberRange(1, SQLITE_MAX),
    "runs": NumberRange(1, SQLITE_MAX),
    "run": NumberRange(1, SQLITE_MAX),
    "against": NumberRange(1, SQLITE_MAX),
    "priority": NumberRange(-MAX_PRIORITY, MAX_PRIORITY),
    "limit": NumberRange(0, SQLITE_MAX),
    "worst": NumberRange(0, SQLITE_MAX),
}
DEFAULT = NumberRange(SQLITE_MIN, SQLITE_MAX)       # what SQLite can hold at all


class BoundedInt:
    """An argparse `type`: an int inside `allowed`, else ArgumentTypeError (one line)."""

    __name__ = "int"                    # argparse's "invalid int value: 'x'" for non-numbers

    def __init__(self, allowed: NumberRange, what: str):
        self.allowed, self.what = allowed, what

    def __call__(self, text: str) -> int:
        value = int(text)               # ValueError: argparse says "invalid int value"
        if value not in self.allowed:
            raise argparse.ArgumentTypeError(
                f"{text} is out of range: {self.what} must be in {self.allowed.text()}")
        return value


def bound_int_arguments(parser: argparse.ArgumentParser) -> None:
    """Give every `type=int` argument of `parser` and its subcommands a range (RANGES by dest,
    else SQLite's 64-bit range), and say it in the argument's help."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                bound_int_arguments(sub)
        elif action.type is int:
            allowed = RANGES.get(action.dest, DEFAULT)
            what = {"id": "an id", "ids": "an id", "after": "a job id", "baseline": "a run id",
                    "runs": "a run id", "run": "a run id", "against": "a run id",
                    "priority": "a priority"}.get(action.dest, "--" + action.dest.replace("_", "-")
                                                  if action.option_strings else action.dest)
            action.type = BoundedInt(allowed, what)
            if action.help and allowed is not DEFAULT and action.help != argparse.SUPPRESS:
                action.help = f"{action.help} ({allowed.text()})".replace("%", "%%") \
                    if "%" not in action.help else action.help
