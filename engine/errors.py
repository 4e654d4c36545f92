"""Error classes shared across the engine.

`UserError` is bad input from the user (a value, a file, a reference): the command line maps it
to exit code 2 with its one-line message, the TUI shows it beside the form, and nothing is
queued. Any other exception is a fault of compfair or of the machine (exit code 1, traceback in
the log). Subclasses that used to be `ValueError`s keep `ValueError` as a second base, so code
that catches `ValueError` still catches them."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (a value, a file, a reference): exit code 2, nothing queued.

    `field` names the spec field the input was given in, where one is known (a form marks
    it); None otherwise. `SpecError` sets it when raised, validation when it knows better."""

    field: str | None = None


class NotFound(UserError, ValueError):
    """A job, run, study or file named by the user does not exist."""


class InvalidState(UserError, ValueError):
    """The request does not apply to the object as it is now (e.g. retrying a running job)."""


class DataError(UserError, ValueError):
    """Input data (evaluation prompts, calibration or distillation text) that cannot be used;
    the message is one line naming the file, line or value. Raised by the data modules at
    submit time (checked up front) and in jobs alike; `engine.evaluation.data` re-exports it."""


class SpecError(UserError, ValueError):
    """A job spec with an impossible or unknown value; the message names the value and
    `field` the spec field it is about (None when it concerns several), so a form can mark it."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class SettingsError(UserError):
    """A settings file (or a study's `[margins]`) with an unknown key or an impossible value;
    `engine.settings` re-exports it."""
