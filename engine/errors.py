"""Every exception class of compfair, in one place (the lowest layer: it imports nothing).

`UserError` is bad input from the user (a value, a file, a reference): the command line maps it
to exit code 2 with its one-line message, the TUI shows it beside the form, and nothing is
queued. Any other exception is a fault of compfair or of the machine (exit code 1, traceback in
the log). Subclasses that used to be `ValueError`s keep `ValueError` as a second base, so code
that catches `ValueError` still catches them."""

from __future__ import annotations


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first non-empty line of `exc`'s message (cut to `limit` characters), or its type's
    name when the message is empty: for one-line reasons built from another library's error.
    Never raises."""
    try:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    except Exception:  # noqa: BLE001 - a __str__ that raises
        lines = []
    text = lines[0] if lines else type(exc).__name__
    return text if limit is None else text[:limit]


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


class JobCancelled(Exception):
    """Raised inside a job when the user asked to cancel it."""


class JobFailed(Exception):
    """A job that cannot go on; the message is the one-line reason stored with the job."""


class DuplicateError(UserError, ValueError):
    """The spec already ran; re-running needs asking for it."""


class BackendUnavailable(RuntimeError):
    """vLLM cannot run here (not installed, or no CUDA device); the message says which."""


class ScorerError(RuntimeError):
    """A scorer that cannot be made or loaded; the message is one line naming the value."""


class Interrupted(BaseException):
    """SIGTERM/SIGINT: stop now and put the running job back in the queue."""


class ScoreInputError(UserError, ValueError):
    """Bad input for `compfair score`: one line, exit code 2."""


class ModelError(UserError, RuntimeError):
    """A model reference that cannot be resolved or loaded; the message is one line. A
    `UserError` (exit 2): the reference is the user's input."""


class GGUFProblem(ValueError):
    """What is wrong with the file, in a few words (the caller names the file)."""


class StudyError(UserError, ValueError):
    """A study file that cannot be planned; the message names the bad value."""


class DriverGone(RuntimeError):
    """The driver did not answer a store call: it died or was stopped; the task stops."""


class LeaseLost(Exception):
    """This worker no longer holds the job's lease: another worker took the job over (this
    one was presumed dead). The job is left to that worker; nothing more is written for it."""


class UnsupportedArchitecture(ValueError):
    """The model's layout is not one compression knows how to handle (one-line message)."""


class GGUFExportError(ValueError):
    """A model that cannot be written as GGUF (architecture or shape), with the reason."""


class UsageError(UserError):
    """A command-line slip (a malformed option value, an id that names nothing): exit code 2."""


class ProtectedPath(UserError):
    """A user-named output path that is one of the home's own files."""


class CompareError(UserError, ValueError):
    """Runs that cannot be compared as asked (too few, unknown, a baseline not among them)."""


class NewerStore(UserError):
    """The store holds a migration this version does not know: a newer compfair made it.
    Writing to it could break what the newer version relies on, so nothing is written (the
    store is opened query-only); reading it (listings) still works. Exit code 2."""


class StoreError(RuntimeError):
    """The store cannot be opened or written (corrupt file, full disk, permissions)."""


class PlanError(UserError, ValueError):
    """A plan asked of runs or options that cannot give one (exit code 2)."""


class AmbiguousName(UserError, ValueError):
    """A name shared by several models: the message lists their `model:ID`s."""
