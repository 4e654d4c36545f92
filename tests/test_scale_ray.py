"""The Ray driver (engine.scale.ray_driver) through the real command line: `compfair worker
--ray --once` on a local Ray cluster runs the same jobs as the plain local worker (here in
the test's process) in another home, and what it stores (samples, metrics, the pruned model's record and weights) is equal;
bad Ray input exits 2 with one line and starts nothing."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import queue
from engine.cli import main
from engine.paths import Home
from engine.specs import EvalSpec, PruneSpec
from engine.store import Store
from engine.worker import Worker
from tests.test_scale_shards import FLUENCY_REL      # the one tolerance for fluency figures

pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[1]
TINY_EVAL = dict(suite="toxicity", data="builtin", scorer="profanity", max_prompts=6,
                 samples_per_prompt=2, max_new_tokens=8, bootstrap_samples=100, seed=3)


def cli(home_root: Path, *args: str, env: dict | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "engine.cli", "--home", str(home_root), *args],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=timeout)


def queue_jobs(root: Path, model: Path, *, prune: bool) -> list[int]:
    """Queue the tiny eval (and with `prune` a 50% magnitude prune and the eval of the pruned
    model after it) in the home at `root`; the job ids."""
    store = Store(Home.resolve(root))
    try:
        jobs = [queue.submit(store, EvalSpec(model=str(model), **TINY_EVAL))]
        if prune:
            jobs.append(queue.submit(store, PruneSpec(model=str(model), method="magnitude",
                                                      sparsity=0.5, name="tiny-mag")))
            jobs.append(queue.submit(store, EvalSpec(model=str(root / "models" / "tiny-mag"),
                                                     **TINY_EVAL), depends_on=[jobs[-1]]))
        return jobs
    finally:
        store.close()


def assert_same_but_fluency(got: dict, want: dict) -> None:
    """Equal, but for the fluency figures, which a shard's smaller fluency batches may round
    differently: equal to FLUENCY_REL relative (as tests/test_scale_shards.py and README's
    "One long evaluation over several workers" state)."""
    assert got.keys() == want.keys()
    for key in want:
        if not key.startswith(("samples", "metrics")):
            assert got[key] == want[key], key
            continue
        assert len(got[key]) == len(want[key]), key
        for a, b in zip(got[key], want[key]):
            fluency = ("continuation_nll",) if key.startswith("samples") else (
                ("value", "ci_low", "ci_high") if a.get("name") == "continuation_perplexity" else ())
            assert {k: v for k, v in a.items() if k not in fluency} == \
                {k: v for k, v in b.items() if k not in fluency}, (key, a, b)
            for field in fluency:
                assert (a[field] is None) == (b[field] is None), (key, field, a, b)
                if a[field] is not None:
                    assert a[field] == pytest.approx(b[field], rel=FLUENCY_REL), (key, field, a, b)


def stored(root: Path, jobs: list[int]) -> dict:
    """What the jobs stored, without ids, timestamps and paths (which differ by home)."""
    store = Store(Home.resolve(root))
    try:
        rows = [queue.job(store, j) for j in jobs]
        assert [r["status"] for r in rows] == ["done"] * len(jobs), [r["error"] for r in rows]
        out: dict = {}
        for job_id in jobs:
            run = store.run_for_job(job_id)
            if run is None:
                continue
            out[f"samples {job_id}"] = [{k: v for k, v in s.items()
                                         if k not in ("id", "run_id", "created_at")}
                                        for s in store.samples(run["id"])]
            out[f"metrics {job_id}"] = [{k: v for k, v in m.items() if k not in ("id", "run_id")}
                                        for m in store.metrics(run["id"])]
        for model in store.query("SELECT * FROM models WHERE method IS NOT NULL"):
            weights = root / "models" / model["name"] / "model.safetensors"
            out[f"model {model['name']}"] = (model["sparsity"], model["method_params"],
                                             hashlib.sha256(weights.read_bytes()).hexdigest())
        return out
    finally:
        store.close()


def run_both(tmp_path: Path, model: Path, *, prune: bool) -> tuple[dict, dict, str]:
    local, ray_home = tmp_path / "local", tmp_path / "ray"
    jobs = queue_jobs(local, model, prune=prune)
    assert queue_jobs(ray_home, model, prune=prune) == jobs
    Worker(Home.resolve(local), once=True, idle_exit_s=None).run()
    proc = cli(ray_home, "worker", "--ray", "--ray-cpus", "2", "--once")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return stored(local, jobs), stored(ray_home, jobs), proc.stderr


def test_ray_eval_stores_what_the_local_worker_stores(tmp_path, tiny_gpt2):
    """Also a job that fails in its task: it is recorded with the local worker's reason."""
    for root in (tmp_path / "local", tmp_path / "ray"):
        store = Store(Home.resolve(root))
        assert queue.submit(store, EvalSpec(model=str(tmp_path / "missing"), **TINY_EVAL)) == 1
        store.close()
    local, via_ray, log = run_both(tmp_path, tiny_gpt2, prune=False)
    errors = []
    for root in (tmp_path / "local", tmp_path / "ray"):
        store = Store(Home.resolve(root))
        errors.append(queue.job(store, 1))
        store.close()
    assert [e["status"] for e in errors] == ["failed", "failed"] and errors[0]["error"]
    assert errors[0]["error"] == errors[1]["error"], errors
    assert "running as a Ray task (0 GPUs)" in log, log[-3000:]
    assert len(via_ray["samples 2"]) == 12 and via_ray["metrics 2"]
    assert via_ray == local
    store = Store(Home.resolve(tmp_path / "ray"))
    try:
        (worker,) = store.query("SELECT device, status FROM workers")
        assert worker == {"device": "ray local", "status": "stopped"}
        events = [e["message"] for e in store.events(2)]
        assert "running as a Ray task (0 GPUs)" in events and events[-1] == "finished"
    finally:
        store.close()


@pytest.mark.slow
def test_ray_prune_then_eval_stores_what_the_local_worker_stores(tmp_path, tiny_gpt2):
    local, via_ray, _ = run_both(tmp_path, tiny_gpt2, prune=True)
    assert set(via_ray) == {"samples 1", "metrics 1", "samples 3", "metrics 3", "model tiny-mag"}
    assert via_ray == local


@pytest.mark.slow
def test_ray_shards_store_what_the_unsharded_local_eval_stores(tmp_path, tiny_gpt2):
    from engine.scale.shards import submit_sharded
    spec = EvalSpec(model=str(tiny_gpt2), **{**TINY_EVAL, "batch_size": 4})
    local, ray_home = Home.resolve(tmp_path / "local"), Home.resolve(tmp_path / "ray")
    with_store = Store(local)
    queue.submit(with_store, spec)
    with_store.close()
    assert Worker(local, once=True, idle_exit_s=None).run() == 1
    with_store = Store(ray_home)
    assert submit_sharded(with_store, spec, 2) == (1, [2, 3])
    with_store.close()
    proc = cli(ray_home.root, "worker", "--ray", "--ray-cpus", "2", "--once")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_but_fluency(stored(ray_home.root, [1, 2, 3]), stored(local.root, [1]))


@pytest.mark.parametrize("args, expected", [
    (("--ray", "not an address"), "--ray 'not an address' is not a cluster address"),
    (("--ray", "127.0.0.1:1"), "--ray '127.0.0.1:1': no Ray cluster answers there"),
    (("--ray", "--devices", "cpu"), "--ray and --devices exclude each other"),
    (("--ray", "--ray-cpus", "0"), "--ray-cpus 0: give a positive number"),
    (("--ray-cpus", "2"), "--ray-cpus 2 needs --ray"),
    (("--ray",), "pip install 'compfair[ray]'"),          # with Ray hidden: not installed
])
def test_bad_ray_input_exits_2_and_starts_nothing(args, expected, home, store, capsys,
                                                   monkeypatch):
    if expected.startswith("pip"):
        monkeypatch.setitem(sys.modules, "ray", None)     # `import ray` fails as if absent
    queue.submit(store, EvalSpec(model="x", **TINY_EVAL))
    assert main(["--home", str(home.root), "worker", "--once", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err
    assert store.query("SELECT id FROM workers") == []
    assert [r["status"] for r in store.query("SELECT status FROM jobs")] == ["queued"]


def _ray_task_pids() -> set[int]:
    """The pids of the processes running a compfair Ray task (Ray names them after it)."""
    out = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True).stdout
    return {int(line.split()[0]) for line in out.splitlines()
            if "ray::run_remote" in line and not line.split()[1].startswith("Z")}


@pytest.mark.slow
def test_a_killed_driver_loses_no_stored_sample_and_its_task_stops(tmp_path, tiny_gpt2):
    """SIGKILL the driver mid-eval: the samples stored stay, nothing more is written (its Ray
    task dies with it), and a plain worker resumes the job to the uninterrupted run's samples."""
    spec = EvalSpec(model=str(tiny_gpt2), **{**TINY_EVAL, "max_prompts": 40,
                                             "max_new_tokens": 16, "batch_size": 4})
    roots = tmp_path / "reference", tmp_path / "crashed"
    for root in roots:
        store = Store(Home.resolve(root))
        assert queue.submit(store, spec) == 1
        store.close()
    assert Worker(Home.resolve(roots[0]), once=True, idle_exit_s=None).run() == 1
    store = Store(Home.resolve(roots[1]))
    log = open(tmp_path / "driver.log", "wb")
    driver = subprocess.Popen([sys.executable, "-m", "engine.cli", "--home", str(roots[1]),
                               "worker", "--once", "--ray", "--ray-cpus", "2"], cwd=REPO,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        def stored_now() -> int:
            return store.one("SELECT count(*) AS n FROM samples")["n"]
        deadline = time.time() + 240
        while stored_now() < 10 and driver.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        assert 10 <= stored_now() < 80, "killed too late"
        tasks = _ray_task_pids()
        assert tasks, "no process runs the Ray task"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        at_kill = stored_now()
        deadline = time.time() + 30
        while tasks & _ray_task_pids() and time.time() < deadline:
            time.sleep(0.2)
        assert not tasks & _ray_task_pids(), "the Ray task outlived its driver"
        assert stored_now() == at_kill                    # nothing written after the kill
    finally:
        if driver.poll() is None:
            driver.kill()
        try:
            os.killpg(driver.pid, signal.SIGKILL)         # Ray's agents the driver left
        except ProcessLookupError:
            pass
        log.close()
    assert queue.job(store, 1)["status"] == "running"     # until a worker finds it orphaned
    store.close()
    assert Worker(Home.resolve(roots[1]), once=True, idle_exit_s=None).run() == 1
    reference, resumed = stored(roots[0], [1]), stored(roots[1], [1])
    assert len(resumed["samples 1"]) == 80 and resumed == reference
