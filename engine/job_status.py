"""A job's status (the `jobs.status` column) and the groups of statuses code asks about.

A job goes queued -> running -> done | failed | cancelled (engine.queue); a failed or
cancelled job can be retried (back to queued)."""

from __future__ import annotations

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATUSES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
ACTIVE = (QUEUED, RUNNING)                  # still to finish
ENDED = (DONE, FAILED, CANCELLED)           # will not change unless retried
UNSUCCESSFUL = (FAILED, CANCELLED)          # what `retry` takes back


def sql_list(statuses: tuple[str, ...]) -> str:
    """`('queued', 'running')`: statuses for an SQL `IN`, from these constants only."""
    assert set(statuses) <= set(STATUSES), statuses
    return "(" + ", ".join(f"'{s}'" for s in statuses) + ")"
