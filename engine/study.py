"""Studies in the queue and the store: a study's plan (engine.study_plan: the study file read
and turned into a DAG of job specs) is queued as jobs, reusing finished jobs with the same
content hash and resuming failed or cancelled ones, and recorded with its node -> job map (what
the report reads); and what a study needs that this machine may lack."""

from __future__ import annotations

import time
from dataclasses import dataclass

from engine import queue
from engine.errors import StudyError, UserError, ModelError
from engine.specs import JobSpec
from engine.store import Store, dumps, loads
from engine.study_plan import REF_PREFIX, StudyPlan, topological
from engine.validation import validate
from engine.model_refs import resolve_offline_status


def _bind(spec: JobSpec, job_ids: dict[str, int]) -> JobSpec:
    """Replace `@node` references with `job:ID` of the submitted node."""
    changes = {}
    for name, ref in spec.model_refs().items():
        if ref.startswith(REF_PREFIX):
            changes[name] = f"job:{job_ids[ref[len(REF_PREFIX):]]}"
    return spec.replace(**changes) if changes else spec


@dataclass(frozen=True)
class Submitted:
    key: str
    job_id: int
    action: str  # reused | resumed | queued


def submit_study(store: Store, plan: StudyPlan) -> list[Submitted]:
    """Queue every node of the plan, reusing finished jobs with the same content hash and
    resuming failed/cancelled ones. Records the study and its node -> job map.

    Every node is validated first (`engine.validation`: model references, data files, scorer
    names), so a bad value is refused with a `UserError` before anything is queued."""
    validate(store, [node.spec for node in plan.nodes], pending_prefixes=(REF_PREFIX,))
    job_ids: dict[str, int] = {}
    submitted = []
    # The reuse checks and the inserts are one transaction holding the write lock from its
    # start: two submissions of one study at once (two `compfair study --no-wait`) queue
    # each spec once, the second reusing what the first queued.
    with store.immediate():
        for node in topological(plan):
            spec = _bind(node.spec, job_ids)
            existing = queue.find_reusable(store, spec)
            if existing:
                job_ids[node.key] = existing["id"]
                submitted.append(Submitted(node.key, existing["id"], "reused" if existing["status"] == "done" else "running"))
                continue
            stopped = queue.find_stopped(store, spec)
            if stopped:
                queue.requeue_stopped(store, stopped["id"])
                job_ids[node.key] = stopped["id"]
                submitted.append(Submitted(node.key, stopped["id"], "resumed"))
                continue
            job_ids[node.key] = queue.insert(store, spec, study=plan.name)
            submitted.append(Submitted(node.key, job_ids[node.key], "queued"))
        now = time.time()
        store.conn.execute(
            "INSERT INTO studies (name, source, description, plan, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET source = excluded.source, "
            "description = excluded.description, plan = excluded.plan, "
            "updated_at = excluded.updated_at",
            (plan.name, plan.source, plan.description, dumps(plan_record(plan, job_ids)), now, now))
    return submitted


def plan_record(plan: StudyPlan, job_ids: dict[str, int]) -> dict:
    """What the report needs: each model's label, kind, params and the jobs behind it."""
    return {
        "teacher": plan.teacher,
        "margins": plan.margins,
        "order": list(plan.models),  # the store's JSON sorts keys; the report keeps this order
        "models": {label: m.to_record(job_ids.get(m.node) if m.node else None)
                   for label, m in plan.models.items()},
        "evals": [{"key": n.key, "model": n.model_label, "suite": n.spec.suite,
                   "params": dict(n.params), "job_id": job_ids[n.key]}
                  for n in plan.nodes if n.spec.kind == "eval"],
    }


def study_record(store: Store, name: str) -> dict:
    row = store.one("SELECT * FROM studies WHERE name = ?", (name,))
    if row is None:
        known = [r["name"] for r in store.query("SELECT name FROM studies ORDER BY name")]
        raise StudyError(f"study {name!r} has not been run here; run `compfair study {name}` "
                         f"first" + (f" (known: {', '.join(known)})" if known else ""))
    return {**row, "plan": loads(row["plan"], {})}


def requirements(plan: StudyPlan) -> list[str]:
    """What the study needs that this machine may lack (network for hub models/data), checked
    without network. Empty when everything is available locally."""
    notes = []
    refs = {plan.teacher} | {m.ref for m in plan.models.values() if m.ref}
    refs |= {n.spec.student for n in plan.nodes if n.spec.kind == "distill" and n.spec.student}
    for ref in sorted(refs):
        try:
            status = resolve_offline_status(ref)
        except ModelError as exc:
            notes.append(f"model {ref}: {exc}")
            continue
        if status != "local":
            notes.append(f"model {ref}: {status}")
    try:
        from engine.evaluation.data_sources import data_requirement  # on use: numpy
    except ImportError:
        data_requirement = None
    if data_requirement:
        seen = set()
        for node in plan.nodes:
            if node.spec.kind == "eval" and (node.spec.suite, node.spec.data) not in seen:
                seen.add((node.spec.suite, node.spec.data))
                note = data_requirement(node.spec.suite, node.spec.data)
                if note:
                    notes.append(f"{node.spec.suite} data {node.spec.data!r}: {note}")
    return notes
