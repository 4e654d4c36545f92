"""Model references by the names the app shows: a registered model's name (`gpt2-distil-6L`),
a study's label for one of its models (`demo-study:distilled-6L`, or the bare label when only
one study uses it), turned into the canonical reference a spec stores (`model:ID`, `job:ID`
for a study model still being made, or the study's own reference for its teacher); and the
other way, the names to show for `model:ID` / `job:ID` in job descriptions. No torch; reads
the store only."""

from __future__ import annotations

import re

from engine.errors import AmbiguousName
from engine.job_results import JobResult
from engine.store import Store, loads

_REF_ID = re.compile(r"\b(model|job):(\d+)\b")


def _study_labels(store: Store) -> dict[tuple[str, str], str]:
    """(study, label) -> the canonical reference of that study model."""
    out = {}
    for row in store.query("SELECT name, plan FROM studies ORDER BY name"):
        plan = loads(row["plan"], {}) or {}
        for label, model in (plan.get("models") or {}).items():
            if model.get("job_id"):
                out[(row["name"], label)] = _job_ref(store, int(model["job_id"]))
            elif model.get("ref"):
                out[(row["name"], label)] = str(model["ref"])
            else:                            # the model its evaluations ran on
                evaluated = _evaluated_model(store, plan, label)
                if evaluated is not None:
                    out[(row["name"], label)] = f"model:{evaluated}"
    return out


def _evaluated_model(store: Store, plan: dict, label: str) -> int | None:
    """The registry id of the model the study's evaluations of `label` ran on (None if none)."""
    for entry in plan.get("evals") or []:
        if entry.get("model") == label and entry.get("job_id"):
            run = store.one("SELECT model_id FROM runs WHERE job_id = ? AND model_id IS NOT NULL "
                            "ORDER BY id DESC LIMIT 1", (entry["job_id"],))
            if run is not None:
                return run["model_id"]
    return None


def _job_ref(store: Store, job_id: int) -> str:
    """`model:ID` of the model job `job_id` made, else `job:ID` (made when it finishes)."""
    row = store.one("SELECT result FROM jobs WHERE id = ?", (job_id,))
    model_id = JobResult.from_row(row).model_id if row else None
    return f"model:{model_id}" if model_id is not None else f"job:{job_id}"


def canonical_ref(store: Store, ref: str) -> str | None:
    """The reference a name stands for (None: `ref` is no name the app shows). A registered
    model's name -> `model:ID` (AmbiguousName when several share it); `study:label` or a label
    one study alone uses -> that study model's reference."""
    ref = ref.strip()
    if not ref or ref.startswith(("model:", "job:")):
        return None
    rows = store.query("SELECT id, source FROM models WHERE name = ? ORDER BY id", (ref,))
    if len(rows) == 1:
        return rows[0]["source"] if rows[0]["source"] == ref else f"model:{rows[0]['id']}"
    if len(rows) > 1:
        ids = ", ".join(f"model:{r['id']}" for r in rows)
        raise AmbiguousName(f"model name {ref!r} is shared by {ids}: give one of those")
    labels = _study_labels(store)
    study, sep, label = ref.partition(":")
    if sep and (study, label) in labels:
        return labels[(study, label)]
    found = {canonical for (_, name), canonical in labels.items() if name == ref}
    if len(found) == 1:
        return found.pop()
    if len(found) > 1:
        studies = ", ".join(f"{s}:{name}" for (s, name) in labels if name == ref)
        raise AmbiguousName(f"label {ref!r} is used by several studies: give {studies}")
    return None


def canonical_spec(store: Store, spec):
    """`spec` with every model field that holds a name replaced by its canonical reference."""
    changes = {}
    for field, ref in spec.model_refs().items():
        canonical = canonical_ref(store, ref)
        if canonical is not None and canonical != ref:
            changes[field] = canonical
    return spec.replace(**changes) if changes else spec


def ref_names(store: Store, text: str) -> dict[str, str]:
    """For each `model:ID` / `job:ID` in `text`, the name to show: the model's name; for a job,
    the name of the model it made, else its study label (absent when neither: `job:6` it
    stays until the job has made its model)."""
    out = {}
    for prefix, number in set(_REF_ID.findall(text)):
        name = _model_name(store, int(number)) if prefix == "model" else _job_name(store, int(number))
        if name:
            out[f"{prefix}:{number}"] = name
    return out


def _model_name(store: Store, model_id: int) -> str | None:
    row = store.one("SELECT name FROM models WHERE id = ?", (model_id,))
    return row["name"] if row and row["name"] else None


def _job_name(store: Store, job_id: int) -> str | None:
    row = store.one("SELECT label, result, study FROM jobs WHERE id = ?", (job_id,))
    if row is None:
        return None
    model_id = JobResult.from_row(row).model_id
    if model_id is not None and _model_name(store, model_id):
        return _model_name(store, model_id)
    if row["study"]:
        plan = loads((store.one("SELECT plan FROM studies WHERE name = ?", (row["study"],))
                      or {}).get("plan"), {}) or {}
        for label, model in (plan.get("models") or {}).items():
            if model.get("job_id") == job_id:
                return f"{row['study']}:{label}"
    return None


def with_names(text: str, names: dict[str, str]) -> str:
    """`text` with each `model:ID` / `job:ID` that has a name in `names` written as the name."""
    return _REF_ID.sub(lambda m: names.get(m.group(0), m.group(0)), text)
