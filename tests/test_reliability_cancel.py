"""Cancel and stuck jobs through real processes (issue 20.3): `compfair cancel` is honoured while
an evaluation computes its metrics (a long bootstrap stops within seconds, not minutes), the
cancellation hook leaves every metric as it was, and `compfair doctor --check` reports what no
worker would ever fix by itself (a queued job whose cancellation was asked for, a run marked
"running" while its job waits in the queue or has ended), one line each, which `--repair`
puts right."""

from __future__ import annotations

import subprocess
import sys
import time

from engine import queue
from engine.cli import main
from engine.evaluation import aggregate
from engine.evaluation.metrics import between_blocks
from engine.paths import Home
from engine.specs import EvalSpec
from engine.store import Store
from tests.test_reliability_faults import (REPO, assert_store_ok, run_inline, start_cli_worker,
                                           wait_until, worker_env)

# 40 prompts x 2 samples: ~30 estimates of 20M resamples each would take minutes on 2 cores
HUGE_BOOTSTRAP = 1_000_000      # the largest accepted (FIELD_RANGES): a bootstrap of many seconds
CANCEL_WITHIN_S = 15.0          # from starting `compfair cancel` (its own start-up included)


def cli(home: Home, *args: str) -> subprocess.CompletedProcess:
    """`python -m engine.cli ARGS` on `home` (the real command line)."""
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=REPO,
                          env=worker_env(home), capture_output=True, text=True, timeout=120)


def _eval(tiny_gpt2, **changes) -> EvalSpec:
    spec = EvalSpec(model=str(tiny_gpt2), suite="toxicity", data="builtin", scorer="profanity",
                    max_prompts=40, samples_per_prompt=2, max_new_tokens=4, batch_size=16,
                    bootstrap_samples=1000, seed=7, device="cpu")
    return spec.replace(**changes)


# -- the hook changes nothing ---------------------------------------------------------------------
def test_metrics_with_the_cancellation_hook_equal_metrics_without(home, store, tiny_gpt2):
    job_id = queue.submit(store, _eval(tiny_gpt2, max_prompts=12))
    run_inline(home)
    run_id = store.run_for_job(job_id)["id"]
    rows = store.samples(run_id)
    calls = []
    plain = aggregate.suite_metrics("toxicity", rows, n_boot=3000, seed=7)
    with between_blocks(lambda: calls.append(1)):
        hooked = aggregate.suite_metrics("toxicity", rows, n_boot=3000, seed=7)
    assert hooked == plain
    assert len(calls) >= 3                      # polled: at least once per bootstrap estimate
    stored = {(r["name"], r["subset"]): (r["value"], r["ci_low"], r["ci_high"])
              for r in store.query("SELECT * FROM metrics WHERE run_id = ?", (run_id,))}
    stored_spec = aggregate.suite_metrics("toxicity", rows, n_boot=1000, seed=7)[0]
    assert stored == {(r["name"], r["subset"]): (r["value"], r["ci_low"], r["ci_high"])
                      for r in stored_spec}     # what the job stored, computed under the hook


# -- cancel during the metrics phase --------------------------------------------------------------
def test_cancel_is_honoured_while_metrics_are_computed(home, store, tiny_gpt2):
    job_id = queue.submit(store, _eval(tiny_gpt2, bootstrap_samples=HUGE_BOOTSTRAP))
    proc = start_cli_worker(home)
    try:
        wait_until(lambda: queue.job(store, job_id)["progress_message"] == "computing metrics",
                   120, "the metrics phase", proc, poll=0.05)
        time.sleep(1.0)                                      # well inside the bootstrap
        assert queue.job(store, job_id)["status"] == "running"
        asked = time.monotonic()
        done = cli(home, "cancel", str(job_id))           # a fresh process: ~2-4 s to start
        assert done.returncode == 0 and done.stdout.strip(), done.stderr
        answered_s = time.monotonic() - asked
        wait_until(lambda: queue.job(store, job_id)["status"] != "running", 120,
                   "the job stopping", proc, poll=0.05)
        stopped_s = time.monotonic() - asked
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    job = queue.job(store, job_id)
    assert job["status"] == "cancelled", dict(job)
    assert stopped_s < CANCEL_WITHIN_S, f"cancel took {stopped_s:.1f} s"
    run = store.run_for_job(job_id)
    assert run["status"] == "cancelled"
    assert store.query("SELECT * FROM metrics WHERE run_id = ?", (run["id"],)) == []
    assert store.one("SELECT count(*) AS n FROM samples WHERE run_id = ?", (run["id"],))["n"] == 80
    print(f"cancel during the bootstrap: `compfair cancel` answered in {answered_s:.2f} s, "
          f"the job was cancelled {stopped_s:.2f} s after it was started")


# -- doctor: stuck cancellations and runs that do not follow their job -----------------------------
def _doctor(home: Home, flag: str) -> tuple[int, list[str]]:
    done = cli(home, "doctor", flag)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout.strip().splitlines()


def _healthy(home: Home, capsys) -> bool:
    """`compfair doctor --check` in this process (quicker than a new one) says healthy."""
    code = main(["--home", str(home.root), "doctor", "--check"])
    return (code, capsys.readouterr().out) == (0, "store is healthy\n")


def _left_by_an_older_worker(store: Store, tiny_gpt2) -> dict[str, int]:
    """What workers of earlier versions left after `cancel` then SIGTERM, and after a plain
    SIGTERM: a queued job with its cancellation asked for (no worker claims it) whose run says
    "running"; a requeued job whose run says "running"; a cancelled job whose run says so."""
    ids = {}
    for name, seed in (("stuck", 1), ("requeued", 2), ("cancelled", 3)):
        ids[name] = queue.submit(store, _eval(tiny_gpt2, max_prompts=4, seed=seed))
        ids[f"{name}_run"] = store.start_run(ids[name], None, "toxicity", {}, None, None, "builtin", "cpu")
    with store.conn:
        store.conn.execute("UPDATE runs SET status = 'running' WHERE id IN (?, ?, ?)",
                           [ids[f"{n}_run"] for n in ("stuck", "requeued", "cancelled")])
        store.conn.execute("UPDATE jobs SET cancel_requested = 1, attempts = 1 WHERE id = ?", (ids["stuck"],))
        store.conn.execute("UPDATE jobs SET status = 'cancelled', cancel_requested = 1, "
                           "error = 'cancelled by user' WHERE id = ?", (ids["cancelled"],))
    return ids


def test_doctor_reports_and_repairs_stuck_cancels_and_runs_not_following_their_job(home, store, tiny_gpt2,
                                                                                    capsys):
    healthy = queue.submit(store, _eval(tiny_gpt2, max_prompts=4))
    run_inline(home)
    assert queue.job(store, healthy)["status"] == "done"
    assert _healthy(home, capsys)

    ids = _left_by_an_older_worker(store, tiny_gpt2)
    expected = [f"job {ids['stuck']} is queued with its cancellation asked for; no worker will take it",
                f"run {ids['stuck_run']} is marked running but its job {ids['stuck']} is queued",
                f"run {ids['requeued_run']} is marked running but its job {ids['requeued']} is queued",
                f"run {ids['cancelled_run']} is marked running but its job {ids['cancelled']} has ended"]
    code, lines = _doctor(home, "--check")
    assert code == 1
    assert sorted(lines) == sorted(f"problem: {p}" for p in expected), lines

    code, lines = _doctor(home, "--repair")
    assert code == 0, lines
    assert sorted(lines[:-1]) == sorted(f"repaired: {p}" for p in expected)
    assert lines[-1] == "store is healthy"
    assert queue.job(store, ids["stuck"])["status"] == "cancelled"
    assert [store.run(ids[f"{n}_run"])["status"] for n in ("stuck", "requeued", "cancelled")] == \
        ["cancelled", "queued", "cancelled"]
    assert _healthy(home, capsys)

    run_inline(home)                              # the requeued job runs; nothing else is claimed
    assert [queue.job(store, ids[n])["status"] for n in ("stuck", "requeued", "cancelled")] == \
        ["cancelled", "done", "cancelled"]
    assert store.run(ids["requeued_run"])["status"] == "done"
    assert _healthy(home, capsys)
    assert_store_ok(home)
