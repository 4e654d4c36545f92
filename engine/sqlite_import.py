"""sqlite-utils, imported without pandas (see `_import_sqlite_utils`)."""

from __future__ import annotations

import sys


def _import_sqlite_utils():
    """sqlite-utils imports pandas when it is installed (about half a second) only to map
    pandas.Timestamp values, which compfair never stores: keep pandas out of every CLI call
    and TUI start by importing sqlite-utils while pandas reads as absent."""
    if "pandas" in sys.modules or "sqlite_utils" in sys.modules:
        import sqlite_utils
        return sqlite_utils
    sys.modules["pandas"] = None          # type: ignore[assignment]  # import pandas -> ImportError
    try:
        import sqlite_utils
    finally:
        del sys.modules["pandas"]
    return sqlite_utils


sqlite_utils = _import_sqlite_utils()
