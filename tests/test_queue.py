"""The queue: atomic claims under concurrency, dependencies, cancellation, crash recovery."""

import multiprocessing as mp
import os
import time

import pytest

from engine import api, job_sweeps, queue
from engine.paths import Home
from engine.specs import EvalSpec, PruneSpec
from engine.store import Store


def _claim_all(root: str, worker: str, out) -> None:
    store = Store(Home.resolve(root))
    claimed = []
    while (row := queue.claim(store, worker)) is not None:
        claimed.append(row["id"])
        queue.finish(store, row["id"], "done")
    out.put(claimed)


def test_two_processes_never_claim_the_same_job(home, store):
    ids = [queue.submit(store, EvalSpec(model="gpt2", seed=i)) for i in range(120)]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(str(home.root), f"w{i}", out)) for i in range(3)]
    for p in procs:
        p.start()
    claimed = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    flat = [j for c in claimed for j in c]
    assert sorted(flat) == ids  # every job exactly once
    assert queue.counts(store) == {"done": 120}


def test_dependencies_wait_and_a_failed_dependency_fails_the_dependant(store):
    first = queue.submit(store, PruneSpec(model="gpt2"))
    second = queue.submit(store, EvalSpec(model=f"job:{first}"))
    assert queue.dependencies(store, second) == [first]
    assert queue.claim(store, "w")["id"] == first
    assert queue.claim(store, "w") is None  # the dependant waits
    queue.finish(store, first, "failed", error="boom")
    assert job_sweeps.fail_blocked(store) == [second]
    assert queue.job(store, second)["error"] == f"dependency job {first} failed"


def test_submit_rejects_a_missing_dependency(store):
    with pytest.raises(ValueError, match="job 99"):
        queue.submit(store, EvalSpec(model="job:99"))


def test_cancel_queued_and_running(store):
    a = queue.submit(store, EvalSpec(model="gpt2"))
    b = queue.submit(store, EvalSpec(model="gpt2", seed=1))
    assert queue.cancel(store, a) == "cancelled"
    assert queue.claim(store, "w")["id"] == b
    assert queue.cancel(store, b) == "cancelling"
    assert queue.cancel_requested(store, b)
    queue.finish(store, b, "cancelled")
    api.retry(store, b, start_worker=False)
    row = queue.job(store, b)
    assert (row["status"], row["cancel_requested"]) == ("queued", 0)


def test_a_job_of_a_dead_worker_is_requeued_then_failed_after_max_attempts(store):
    job_id = queue.submit(store, EvalSpec(model="gpt2"), max_attempts=2)
    dead_pid = 2 ** 22 - 3  # beyond pid_max defaults: never alive
    store.db["workers"].insert({"id": "dead", "pid": dead_pid, "host": os.uname().nodename,
                                "heartbeat_at": time.time(), "status": "busy"})
    for attempt in (1, 2):
        assert queue.claim(store, "dead")["attempts"] == attempt
        assert job_sweeps.recover_orphans(store) == [job_id]
    row = queue.job(store, job_id)
    assert row["status"] == "failed"
    assert "gave up after 2 attempts" in row["error"]


def test_priority_orders_claims(store):
    low = queue.submit(store, EvalSpec(model="gpt2"))
    high = queue.submit(store, EvalSpec(model="gpt2", seed=1))
    api.move(store, high, +5)
    assert queue.claim(store, "w")["id"] == high
    assert queue.claim(store, "w")["id"] == low


def test_sweep_expands_to_one_spec_per_value():
    specs = api.expand_sweep({"kind": "prune", "model": "gpt2"}, {"sparsity": ["0.3", "0.5", "0.7"]})
    assert [s.sparsity for s in specs] == [0.3, 0.5, 0.7]
