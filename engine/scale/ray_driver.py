"""`compfair worker --ray [ADDRESS]`: a worker whose jobs run as Ray tasks on a cluster.

The driver is an ordinary worker (engine.worker.Worker: it registers, beats, claims one job or
shard at a time under a lease, records the outcome), except that `execute` ships the job to a
Ray task (engine.scale.ray_remote) with `num_gpus` from the job's device and serves the task's
store calls until it ends. The driver is the only writer of the SQLite store; every write is
applied by its own connection under its lease, so fencing (engine.fencing) is unchanged.

Crash semantics are those of a local worker: a sample is acknowledged to the task only once
the driver stored it, so a dead driver loses no stored sample; its job is requeued as orphaned
by the next worker and resumes. A Ray task is never retried by Ray (`max_retries=0`) and is
cancelled when its driver stops, so nothing runs twice.

Model artifacts (derived models, checkpoints, caches) are files the task writes under the
compfair home: the home must be on a filesystem every Ray node mounts at the same path.
Several drivers may share one cluster, one job each at a time."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from engine.context import JobContext, QueueRows
from engine.errors import JobFailed, UserError, first_line
from engine.paths import Home
from engine.scale.ray_options import check_address, import_ray
from engine.scale.ray_remote import RELAYED, ROW_OPERATIONS, RemoteJob, RemoteOutcome, run_remote
from engine.worker import DEFAULT_IDLE_EXIT_S, Worker
from engine import worker_rows

log = logging.getLogger(__name__)

POLL_S = 0.2                        # how often the driver looks whether its task ended
# environment a task needs to behave like a local worker (offline hub, thread counts, compfair)
PASSED_ENV = ("HF_", "TRANSFORMERS_", "COMPFAIR_", "TOKENIZERS_PARALLELISM", "OMP_NUM_THREADS",
              "MKL_NUM_THREADS")


def task_env() -> dict[str, str]:
    """The driver's environment a task gets, with this checkout first on its import path."""
    env = {k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV)}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return env


class RayWorker(Worker):
    """A worker that runs each claimed job as a Ray task and writes what it sends back."""

    def __init__(self, home: Home | None = None, *, address: str | None = None,
                 cpus: int | None = None, once: bool = False,
                 idle_exit_s: float | None = DEFAULT_IDLE_EXIT_S):
        super().__init__(home, once=once, idle_exit_s=idle_exit_s)
        self.address, self.cpus = address, cpus
        self._ray = None
        self._joined = False         # this driver called ray.init (and so ray.shutdown)
        self._queues = None          # (requests, answers): reused by job after job

    def connect(self) -> None:
        """Join the cluster at `address`, or start a local one (`cpus` CPUs); UserError when
        Ray is missing or the address is bad."""
        ray = import_ray()
        check_address(self.address)
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
            if self.address is None and self.cpus is not None:
                kwargs["num_cpus"] = self.cpus
            try:
                ray.init(address=self.address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise UserError(f"--ray {self.address or 'local'}: cannot start or join the "
                                f"Ray cluster: {first_line(exc)}") from exc
            self._joined = True
        self._ray = ray
        log.info("Ray driver %s on %s: %s", self.id, self.address or "a local cluster",
                 ray.cluster_resources())

    def run(self) -> int:
        self.connect()
        try:
            return super().run()
        finally:
            self._close_channel()
            if self._joined:
                self._ray.shutdown()

    def _register(self) -> None:
        worker_rows.register_worker(self.store, self.id, os.getpid(), status="idle",
                                    log_path=str(self.home.logs_dir / "worker.log"),
                                    device=f"ray {self.address or 'local'}")

    def gpus_for(self, ctx: JobContext) -> int:
        """GPUs the job's task asks Ray for: 1 for a CUDA device, 0 for the CPU, and for
        "auto" 1 when the cluster has a GPU. The task sees its GPU as cuda:0."""
        device = str(getattr(ctx.spec, "device", "auto") or "auto")
        if device.startswith("cuda:") and device != "cuda:0":
            raise JobFailed(f"device {device!r}: a Ray task gets the GPU Ray assigns it; give "
                            "device cuda or auto (or run this job on a plain worker)")
        if device.startswith("cuda"):
            return 1
        if device == "auto":
            return 1 if self._ray.cluster_resources().get("GPU", 0) >= 1 else 0
        return 0

    def execute(self, ctx: JobContext) -> dict:
        """Run the job as a Ray task, applying its store calls here; returns its result or
        raises what it raised (so the outcome is recorded as a local worker would)."""
        ray = self._ray
        gpus = self.gpus_for(ctx)
        requests, answers = self._channel()
        job = RemoteJob(str(self.home.root), ctx.job_id, ctx.spec, ctx.lease, self.id)
        task = ray.remote(run_remote).options(
            num_cpus=1, num_gpus=gpus, max_retries=0, retry_exceptions=False,
            runtime_env={"env_vars": task_env()})
        ref = task.remote(job, requests, answers)
        ctx.log(f"running as a Ray task ({gpus} GPU{'s' if gpus != 1 else ''})")
        finished = False
        try:
            outcome = self._serve(ctx, ref, requests, answers)
            finished = True
        finally:
            if not finished:          # interrupted or lost: the task must not go on, and a
                ray.cancel(ref, force=True)     # call it left half-answered must not be read
                self._close_channel()
        if outcome.error is not None:
            self._close_channel()     # whatever the task left half-said goes with it
            log.info("job %s: the Ray task raised:\n%s", ctx.job_id, outcome.traceback)
            raise outcome.error
        return outcome.result

    def _channel(self):
        """The two Ray queues a task and the driver talk over (each queue is an actor, a
        process of its own: made once, and again only after a task ended abnormally)."""
        if self._queues is None:
            from ray.util.queue import Queue
            self._queues = (Queue(actor_options={"num_cpus": 0}),
                            Queue(actor_options={"num_cpus": 0}))
        return self._queues

    def _close_channel(self) -> None:
        if self._queues is not None:
            for q in self._queues:
                q.shutdown()
            self._queues = None

    def _serve(self, ctx: JobContext, ref, requests, answers) -> RemoteOutcome:
        """Answer the task's store calls until it ends; its outcome."""
        from ray.exceptions import RayError
        from ray.util.queue import Empty
        ray = self._ray
        while True:
            try:
                name, args, kwargs = requests.get(timeout=POLL_S)
            except Empty:
                if ray.wait([ref], timeout=0)[0]:
                    break
                continue
            answers.put(self._apply(ctx, name, args, kwargs))
        try:
            return ray.get(ref)
        except RayError as exc:       # the task's process died (killed, out of memory)
            raise JobFailed(f"the Ray task died: {first_line(exc)}") from exc

    def _apply(self, ctx: JobContext, name: str, args: tuple, kwargs: dict) -> tuple[str, Any]:
        """One relayed call on the driver's store: ("ok", value) or ("raised", exception)."""
        row_op = name.removeprefix("row:")
        if name not in RELAYED and not (name.startswith("row:") and row_op in ROW_OPERATIONS):
            return "raised", RuntimeError(f"the Ray driver does not relay {name!r}")
        target = QueueRows(ctx.store) if name.startswith("row:") else ctx.store
        try:
            return "ok", getattr(target, row_op)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - raised in the task, where the job handles it
            return "raised", exc
