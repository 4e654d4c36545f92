"""Sharded evaluation: one eval job's items split into contiguous ranges that different
workers produce at the same time, all into the job's one run.

`submit eval --shards N` queues the eval job P and N shard jobs (`eval_shard`, spec
`EvalShardSpec(parent=P, index=i, count=N)`) in one transaction; P waits for every shard.
A shard loads P's spec, data, scorer and model exactly as P would (`runner.open_run`), opens P's
run (the first shard creates it, the others find it), and produces and scores the samples of
its items only: items[i*n//N : (i+1)*n//N] in the data's order. When every shard is done, P
runs as a plain eval job: it finds every sample stored and computes the metrics, once.

Why the merged run equals the unsharded one: a sample's randomness is a function of (seed,
item, sample index) alone (engine.evaluation.sampler), sample keys are (item, sample), and
likelihoods are padded to width buckets so a row's value does not depend on its batch; so
which worker produced which rows, in which batches, changes nothing stored
(tests/test_scale_shards.py checks samples and metrics for equality).

Crash semantics are those of any job: a shard whose worker dies is requeued by the queue and
resumes, skipping every sample of its range already stored; a failed shard fails P (its
samples are kept; `compfair retry SHARD P` resumes both); cancelling P stops its running
shards at their next batch."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3

from engine import queue
from engine.context import JobContext, job_rows
from engine.errors import JobCancelled, JobFailed, UserError
from engine.specs.shard import MAX_SHARDS, EvalShardSpec
from engine.specs import EvalSpec
from engine.store import Store
from engine.evaluation.suites import get_suite, suites

log = logging.getLogger(__name__)


def shard_range(n_items: int, index: int, count: int) -> tuple[int, int]:
    """[start, stop) positions of shard `index` of `count` over `n_items` items: contiguous,
    sizes differing by at most one, together covering every item once."""
    return index * n_items // count, (index + 1) * n_items // count


def known_item_count(spec: EvalSpec) -> int | None:
    """How many items `spec` evaluates, as far as it is known before the job runs: counted for
    built-in and local data, at most `max_prompts` for hub data, else unknown (None)."""
    from engine.evaluation.data import DataError  # on use: numpy
    if spec.data in ("auto", "hub"):
        return spec.max_prompts
    try:
        return len(get_suite(spec.suite).load(spec).items)
    except (DataError, OSError, ValueError):
        return None                  # the spec's own validation reports unreadable data


def check_shards(spec: EvalSpec, shards: int) -> None:
    """UserError naming the value unless `spec` can be split into `shards` shards: a count in
    [1, MAX_SHARDS], a suite whose data is a list of items, and no more shards than items."""
    if not 1 <= shards <= MAX_SHARDS:
        raise UserError(f"--shards {shards} must be in [1, {MAX_SHARDS}]")
    if shards == 1:
        return
    if not get_suite(spec.suite).shards_by_item:
        able = ", ".join(s.name for s in suites() if s.shards_by_item)
        raise UserError(f"--shards {shards}: the {spec.suite} suite cannot be split into shards "
                        f"(its data is not a list of items); give --shards 1 or one of: {able}")
    n_items = known_item_count(spec)
    if n_items is not None and shards > n_items:
        raise UserError(f"--shards {shards} is more than the {n_items} items of this "
                        f"{spec.suite} evaluation; give --shards 1 to {n_items}")


def submit_sharded(store: Store, spec: EvalSpec, shards: int, *, depends_on=(), priority: int = 0,
                   study: str | None = None) -> tuple[int, list[int]]:
    """Queue `spec` split into `shards` shards; returns (the eval job's id, the shards' ids).
    The eval job's spec is unchanged, so its hash (and a study's reuse of it) is that of the
    same job unsharded."""
    check_shards(spec, shards)
    return queue.submit_group(
        store, spec, lambda parent: [EvalShardSpec(parent=parent, index=i, count=shards)
                                     for i in range(shards)],
        depends_on=depends_on, priority=priority, study=study)


class ShardStore:
    """The job's store, except that its continuation-scoring worklist holds only the shard's
    items, so two shards never score the same continuations. It wraps whatever store the job
    has (a worker's own, or a relay to a Ray driver: engine.scale.ray_remote)."""

    def __init__(self, store: Store, items: frozenset[int]):
        self.store = store
        self.items = items

    def __getattr__(self, name: str):
        if name == "store":             # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.store, name)

    def unscored_continuations(self, run_id: int) -> list[dict]:
        return [r for r in self.store.unscored_continuations(run_id)
                if int(r["key"].split(":", 1)[0]) in self.items]


@dataclasses.dataclass
class ShardContext(JobContext):
    """A shard's context: its job's own lease and progress, its parent's spec; it stops as
    cancelled when either it or its parent is cancelled."""

    parent: int = 0

    def check_cancelled(self) -> None:
        polled = self._last_cancel_poll
        super().check_cancelled()
        if self._last_cancel_poll != polled and job_rows(self.store).cancel_requested(self.parent):
            raise JobCancelled()


def _shard_context(ctx: JobContext, store: Store, eval_spec: EvalSpec, parent: int) -> ShardContext:
    """`ctx` (whatever fields it has: the worker may add some) as a ShardContext that reads
    and writes through `store` and evaluates `eval_spec`."""
    kept = {f.name: getattr(ctx, f.name) for f in dataclasses.fields(ctx) if f.init}
    return ShardContext(**{**kept, "store": store, "spec": eval_spec, "parent": parent})


def parent_spec(store: Store, spec: EvalShardSpec) -> EvalSpec:
    """The eval spec of the shard's parent job (JobFailed when it is not an eval job)."""
    row = job_rows(store).job(spec.parent)
    if row is None or row["kind"] != "eval":
        raise JobFailed(f"shard of job {spec.parent}: that job is not an eval job")
    if row["status"] == "cancelled" or row["cancel_requested"]:
        raise JobCancelled()
    if row["status"] in ("failed", "done"):
        raise JobFailed(f"shard of job {spec.parent}: that job is already {row['status']}")
    return queue.job_spec(row)


def _open_parent_run(ctx: JobContext, spec: EvalSpec, parent: int):
    from engine.evaluation.runner import open_run  # on use: torch, transformers, numpy
    try:
        return open_run(ctx, spec, parent)
    except sqlite3.IntegrityError:      # another shard created the run in the same instant
        return open_run(ctx, spec, parent)


def run_shard(ctx: JobContext) -> dict:
    """Produce one shard's samples into its parent's run; returns {"run_id", "parent",
    "items": [first, last + 1)} and the suite's record of the work."""
    spec = ctx.spec
    if not isinstance(spec, EvalShardSpec):
        raise JobFailed(f"run_shard got a {spec.kind!r} job")
    eval_spec = parent_spec(ctx.store, spec)
    probe = dataclasses.replace(ctx, spec=eval_spec)
    opened = _open_parent_run(probe, eval_spec, spec.parent)
    start, stop = shard_range(len(opened.data.items), spec.index, spec.count)
    items = opened.data.items[start:stop]
    ctx.set_result(run_id=opened.run_id, parent=spec.parent, items=[start, stop])
    ctx.log(f"shard {spec.index + 1}/{spec.count} of job {spec.parent}: items {start}-{stop - 1} "
            f"of {len(opened.data.items)} into run {opened.run_id}")
    store = ShardStore(ctx.store, frozenset(item.index for item in items))
    shard_ctx = _shard_context(ctx, store, eval_spec, spec.parent)
    part = dataclasses.replace(opened.data, items=items)
    extra = opened.suite.run(shard_ctx, eval_spec, opened.lm, opened.run_id, part, opened.scorer) \
        if items else {}
    return {"run_id": opened.run_id, "parent": spec.parent, "items": [start, stop],
            **{k: v for k, v in extra.items() if isinstance(v, (int, float, str)) or v is None}}

