"""Error classes shared across the engine."""


class UserError(Exception):
    """Bad input from the user (a value, a file, a reference): exit code 2, nothing queued."""
