"""Submitting and steering jobs: `submit_jobs`, the one way user-given jobs are queued (the
command line and the terminal app's form), and cancel, retry, move, the live workers."""

from __future__ import annotations

import logging
from typing import Any, Sequence

from engine import queue
from engine.already_ran import refuse_duplicates
from engine.errors import NotFound
from engine.interop.tracking import record_targets
from engine.launcher import alive_workers, ensure_worker
from engine.model_names import canonical_spec
from engine.scale.shards import check_shards, submit_sharded
from engine.scale.worker_view import worker_views as views_of
from engine.specs import JobSpec, spec_from_dict
from engine.store import Store
from engine.tracking_targets import Target
from engine.validation import validate

log = logging.getLogger(__name__)


def submit(store: Store, spec: JobSpec, *, depends_on: Sequence[int] = (), priority: int = 0,
           study: str | None = None, start_worker: bool = True) -> int:
    """Queue one spec as it is (no `validate`: callers that take user input validate first,
    or use `submit_all`); returns the job id."""
    job_id = queue.submit(store, spec, depends_on=list(depends_on), priority=priority, study=study)
    if start_worker:
        ensure_worker(store)
    return job_id


def submit_jobs(store: Store, specs: Sequence[JobSpec], *, depends_on: Sequence[int] = (),
                priority: int = 0, shards: int = 1, rerun: bool = False,
                log_to: Sequence[Target] = (), start_worker: bool = True) -> list[int]:
    """The one way user-given jobs are queued (`compfair submit`, the terminal app's form).

    Model names and study labels become the references they stand for first (`model:ID`,
    `job:ID`: `canonical_spec`, as the form does), so a job given by name is the same job as
    one given by its id. Checks everything next, so a bad spec is a `UserError` and nothing is
    queued: a spec that already ran (unless `rerun`; `engine.already_ran`), the shard count,
    then every spec (`validate`: references, scorers, data files). Then queues each (split into
    `shards` eval
    shards when > 1, `engine.scale.shards`), records the trackers each finished job is logged
    to before any worker can finish it, and starts a worker. Returns the job ids in order."""
    specs = [canonical_spec(store, spec) for spec in specs]   # AmbiguousName: a UserError
    if not rerun:
        refuse_duplicates(store, specs)
    for spec in specs if shards != 1 else ():
        check_shards(spec, shards)
    validate(store, specs)
    job_ids = []
    for spec in specs:
        if shards == 1:
            job_ids.append(queue.submit(store, spec, depends_on=list(depends_on), priority=priority))
            continue
        job_id, parts = submit_sharded(store, spec, shards, depends_on=depends_on, priority=priority)
        log.info("job %s: %d shards, jobs %s", job_id, len(parts), ", ".join(map(str, parts)))
        job_ids.append(job_id)
    record_targets(store, job_ids, log_to)
    if start_worker:
        ensure_worker(store)
    return job_ids


def submit_all(store: Store, specs: Sequence[JobSpec], *, depends_on: Sequence[int] = (),
               priority: int = 0, start_worker: bool = True) -> list[int]:
    """`submit_jobs` that queues a spec again even when it already ran (studies, tests)."""
    return submit_jobs(store, specs, depends_on=depends_on, priority=priority, rerun=True,
                       start_worker=start_worker)


def expand_sweep(base: dict[str, Any], sweep: dict[str, Sequence[Any]]) -> list[JobSpec]:
    """One spec per combination of the swept values (a sweep is one submission)."""
    specs = [dict(base)]
    for key, values in sweep.items():
        specs = [{**s, key: v} for s in specs for v in values]
    return [spec_from_dict(s) for s in specs]


def cancel(store: Store, job_id: int) -> str:
    return queue.cancel(store, job_id)


def retry(store: Store, job_id: int, start_worker: bool = True) -> None:
    queue.retry(store, job_id)
    if start_worker:
        ensure_worker(store)


def move(store: Store, job_id: int, by: int) -> int:
    """Raise (by > 0) or lower a queued job's priority; returns the new priority."""
    row = queue.job(store, job_id)
    if row is None:
        raise NotFound(f"job {job_id} does not exist")
    new = (row["priority"] or 0) + by
    queue.set_priority(store, job_id, new)
    return new


def workers(store: Store) -> list[dict]:
    return alive_workers(store)


def worker_views(store: Store):
    """Every live worker with its device, current job, progress and memory
    (engine.scale.worker_view.WorkerView rows): what `compfair workers` and the jobs screen show."""
    return views_of(store)
