"""Identical submissions: a spec whose identical twin (same `JobSpec.spec_hash`, the hash a
study uses to reuse a job) already finished. Queueing it again would only repeat that run, so
the CLI refuses it unless asked to re-run on purpose (`submit --rerun`) and the TUI's form
shows the finished run (open it, or queue again to re-run)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from engine.errors import DuplicateError, UserError
from engine.specs import JobSpec
from engine.store import Store


@dataclass(frozen=True)
class Duplicate:
    """A finished job identical to a spec about to be queued, and its run (eval jobs)."""

    job_id: int
    status: str
    run_id: int | None

    def describe(self) -> str:
        run = f", run {self.run_id}" if self.run_id is not None else ""
        return f"job {self.job_id} ({self.status}{run})"


def finished_duplicates(store: Store, spec: JobSpec) -> list[Duplicate]:
    """The done jobs with exactly this spec, newest first."""
    rows = store.query("SELECT j.id, j.status, r.id AS run_id FROM jobs j "
                       "LEFT JOIN runs r ON r.job_id = j.id "
                       "WHERE j.spec_hash = ? AND j.status = 'done' ORDER BY j.id DESC",
                       (spec.spec_hash(),))
    return [Duplicate(r["id"], r["status"], r["run_id"]) for r in rows]


def refuse_duplicates(store: Store, specs: Iterable[JobSpec]) -> None:
    """Raise `DuplicateError` naming the first spec that already ran (nothing is queued)."""
    for spec in specs:
        found = finished_duplicates(store, spec)
        if found:
            what = "see it with `compfair show " + (f"{found[0].run_id}`" if found[0].run_id is not None
                                                    else f"{found[0].job_id} --job`")
            raise DuplicateError(f"{spec.kind} {spec.summary()} already ran as {found[0].describe()}; "
                                 f"{what}, or pass --rerun to run it again")
