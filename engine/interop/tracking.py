"""Experiment tracking: `compfair submit ... --log mlflow[=URI]` / `--log wandb[=PROJECT]`
(or `COMPFAIR_LOG=mlflow=URI,wandb` in the worker's environment) logs each finished job to
MLflow or Weights & Biases.

What is logged, per job: its spec as parameters (every field, plus `job_id` and `kind`), and
as metrics: for an eval job, each stored metric of its run as `<metric>` (all items) or
`<metric>/<subset>`, with `<metric>_ci_low` / `<metric>_ci_high` beside it where it has a
bootstrap CI; for a compression job, the numeric figures of its result (parameters before and
after, sparsity, bits per weight, ...). The job's full result goes along as a JSON artifact
(MLflow) or the run summary (W&B). The destinations chosen at submit are stored as `tracking`
events of the job, read back by the worker when the job finishes (`after_job`, called from
the worker's one finish point); a tracker that fails is a warning in the job's log, never a
failed job.

MLflow: URI as `mlflow.MlflowClient` takes it; none means `sqlite:///<home>/mlflow.db`. A
`file://` store is MLflow's deprecated file backend, allowed here (MLFLOW_ALLOW_FILE_STORE)
because the user named it. W&B: PROJECT (default "compfair"), honouring WANDB_MODE (offline
needs no network: `wandb sync` uploads later) and WANDB_DIR (default: the compfair home)."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from engine.errors import UserError
from engine.tracking_targets import TRACKERS, Target, parse_target, parse_targets  # noqa: F401 - the --log syntax
from engine.job_results import JobResult
from engine.settings import load_settings
from engine.store import Store, loads

log = logging.getLogger(__name__)
EVENT_KIND = "tracking"
ENV = "COMPFAIR_LOG"
EXPERIMENT = "compfair"


@dataclass(frozen=True)
class JobRecord:
    """What a tracker gets for one finished job: id, kind, title, params, metrics, result."""

    job_id: int
    kind: str
    title: str
    params: dict[str, str]
    metrics: dict[str, float]
    result: dict[str, Any]


def record_targets(store: Store, job_ids: Sequence[int], targets: Sequence[Target]) -> None:
    """Store the destinations of `job_ids` (before a worker can finish them)."""
    for job_id in job_ids:
        for target in targets:
            store.add_event(job_id, f"will log to {target.text}", kind=EVENT_KIND,
                            data={"backend": target.backend, "where": target.where})


def home_targets(store: Store) -> list[Target]:
    """The trackers of the home's settings file (`[tracking] log = [...]`), then COMPFAIR_LOG;
    a bad value is a warning here (the settings file is checked where it is loaded)."""
    found: list[Target] = []
    try:
        found += parse_targets(load_settings(store.home.root).tracking.log)
    except UserError as exc:
        log.warning("settings [tracking] ignored: %s", exc)
    try:
        found += parse_targets([os.environ.get(ENV, "")])
    except UserError as exc:
        log.warning("%s ignored: %s", ENV, exc)
    return found


def targets_for(store: Store, job_id: int) -> list[Target]:
    """The job's destinations: its `tracking` events, then the home's (settings file,
    COMPFAIR_LOG); each once."""
    rows = store.query("SELECT data FROM events WHERE job_id = ? AND kind = ? ORDER BY id",
                       (job_id, EVENT_KIND))
    found = [Target(d["backend"], d.get("where")) for d in (loads(r["data"], {}) or {} for r in rows)
             if d.get("backend") in BACKENDS]
    return list(dict.fromkeys(found + home_targets(store)))


def _flat(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, bool):
        out[prefix] = float(value)
    elif isinstance(value, (int, float)) and math.isfinite(value):
        out[prefix] = float(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)


def job_record(store: Store, job_id: int) -> JobRecord:
    """The finished job's params, metrics and result, read from the store."""
    row = store.one("SELECT id, kind, spec, result, label FROM jobs WHERE id = ?", (job_id,))
    spec = loads(row["spec"], {}) or {}
    result = JobResult.from_row(row)
    params = {k: json.dumps(v) if isinstance(v, (list, dict)) else str(v) for k, v in sorted(spec.items())}
    params.update({"job_id": str(job_id), "kind": row["kind"]})
    metrics: dict[str, float] = {}
    if result.run_id is not None:
        for m in store.metrics(result.run_id):
            for suffix, value in (("", m["value"]), ("_ci_low", m["ci_low"]), ("_ci_high", m["ci_high"])):
                if isinstance(value, (int, float)) and math.isfinite(value):
                    metrics[m["name"] + suffix + (f"/{m['subset']}" if m["subset"] else "")] = float(value)
    else:
        _flat("", {k: v for k, v in result.to_dict().items() if k not in ("model_id", "run_id")}, metrics)
    title = f"job {job_id} {row['kind']}" + (f" {row['label']}" if row["label"] else "")
    return JobRecord(job_id, row["kind"], title, params, metrics, result.to_dict())


def _mlflow_experiment(where: str | None, store: Store):
    """(MlflowClient for `where`, default the home's sqlite file; id of experiment "compfair")."""
    uri = where or f"sqlite:///{store.home.root / 'mlflow.db'}"
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow import MlflowClient
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client, (experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT))


def log_mlflow(record: JobRecord, where: str | None, store: Store) -> str:
    """One MLflow run in experiment "compfair"; returns its run id."""
    from mlflow.entities import Metric, Param
    client, experiment_id = _mlflow_experiment(where, store)
    run = client.create_run(experiment_id, run_name=record.title,
                            tags={"compfair.job_id": str(record.job_id), "compfair.kind": record.kind})
    now = int(time.time() * 1000)
    client.log_batch(run.info.run_id, metrics=[Metric(k, v, now, 0) for k, v in record.metrics.items()],
                     params=[Param(k, v[:6000]) for k, v in record.params.items()])
    client.log_dict(run.info.run_id, record.result, "result.json")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def log_wandb(record: JobRecord, where: str | None, store: Store) -> str:
    """One W&B run in project `where` (default "compfair"); returns its id."""
    import wandb
    run = wandb.init(project=where or EXPERIMENT, name=record.title, config=record.params,
                     dir=os.environ.get("WANDB_DIR") or str(store.home.root), job_type=record.kind,
                     tags=["compfair", record.kind], reinit="create_new")
    try:
        run.log(record.metrics)
        run.summary.update({**record.metrics, "result": record.result})
    finally:
        run.finish()
    return run.id


BACKENDS: dict[str, Callable[[JobRecord, str | None, Store], str]] = {
    "mlflow": log_mlflow, "wandb": log_wandb}
assert tuple(BACKENDS) == TRACKERS, "engine.tracking_targets.TRACKERS names these backends"


def after_job(store: Store, job_id: int) -> None:
    """Log a job that just finished to each of its destinations. Never raises: a tracker's
    failure is a warning in the job's log."""
    try:
        targets = targets_for(store, job_id)
        if not targets:
            return
        record = job_record(store, job_id)
    except Exception as exc:  # noqa: BLE001 - tracking never fails a job
        log.warning("job %s: tracking skipped: %s", job_id, exc)
        return
    for target in targets:
        try:
            ident = BACKENDS[target.backend](record, target.where, store)
            store.add_event(job_id, f"logged to {target.text} (run {ident})", kind="log")
        except Exception as exc:  # noqa: BLE001 - tracking never fails a job
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            log.warning("job %s: logging to %s failed: %s", job_id, target.text, first)
            store.add_event(job_id, f"logging to {target.text} failed: {first}", kind="log",
                            level="warning")


def _report_mlflow(name: str, folder, where: str | None, store: Store) -> str:
    client, experiment_id = _mlflow_experiment(where, store)
    run = client.create_run(experiment_id, run_name=f"study {name} report",
                            tags={"compfair.study": name, "compfair.kind": "report"})
    client.log_artifacts(run.info.run_id, str(folder))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _report_wandb(name: str, folder, where: str | None, store: Store) -> str:
    import wandb
    run = wandb.init(project=where or EXPERIMENT, name=f"study {name} report", job_type="report",
                     dir=os.environ.get("WANDB_DIR") or str(store.home.root),
                     tags=["compfair", "report"], reinit="create_new")
    try:
        artifact = wandb.Artifact(f"{name}-report", type="report")
        artifact.add_dir(str(folder))
        run.log_artifact(artifact)
    finally:
        run.finish()
    return run.id


REPORT_BACKENDS: dict[str, Callable[[str, Any, str | None, Store], str]] = {
    "mlflow": _report_mlflow, "wandb": _report_wandb}


def log_report(store: Store, name: str, folder, targets: Sequence[Target]) -> None:
    """Log a study's report folder (Markdown, CSV, plots) as artifacts of one run per
    destination. Never raises: a failure is a warning on stderr's log."""
    for target in targets:
        try:
            ident = REPORT_BACKENDS[target.backend](name, folder, target.where, store)
            log.info("report of study %s logged to %s (run %s)", name, target.text, ident)
        except Exception as exc:  # noqa: BLE001 - the report itself is written; tracking is extra
            log.warning("logging the report of study %s to %s failed: %s", name, target.text, exc)
