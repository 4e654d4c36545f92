"""Studies: a TOML file that describes a whole experiment (which models to compress and how,
and which suites to run on every model) becomes a DAG of jobs in the queue.

File format (see data/studies/*.toml):

    name = "quick"
    description = "..."
    teacher = "smollm2"            # any model reference
    [settings]                     # applied to every job: device, dtype, seed
    [margins]                      # equivalence margins for this study's verdicts (engine.margins)
    expected_max_toxicity = 0.02; perplexity = "5%"
    [[models]]                     # existing models evaluated as they are
    label = "distilgpt2"; ref = "distilgpt2"
    [[distill]]                    # DistillSpec fields; `of` = teacher label (default "teacher")
    label = "distil"; intensity = [0.5, 0.25]
    [[prune]]                      # PruneSpec fields; `of` = the label of the model to prune
    label = "wanda"; method = "wanda"; sparsity = [0.3, 0.5]
    [[quantize]]                   # QuantizeSpec fields; `of` = the label of the model to quantize
    label = "int4"; method = "rtn"; bits = 4
    [[eval]]                       # EvalSpec fields, run on every model (reference_model too)
    suite = "toxicity"; samples_per_prompt = 4

A list value in a block is a sweep: one job per value. Re-running a study reuses every job
whose spec (and input files) is unchanged, and resumes failed or cancelled ones.

This module reads a study file and plans it (no store access, no network): its models and the
DAG of job specs, each node naming the nodes whose models it uses. engine.study queues a plan
and records it."""

from __future__ import annotations

import itertools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from engine.errors import StudyError
from engine.margins import parse_margins
from engine.specs import SPEC_TYPES, JobSpec, SpecError, spec_from_dict
from engine.study_shape import shape_problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

STUDIES_DIR = Path(__file__).resolve().parent.parent / "data" / "studies"
REF_PREFIX = "@"  # a model reference to another node of the study, resolved to job:ID


@dataclass(frozen=True)
class Node:
    """One job of the study: `key` is unique, `model_label` names the model it produces or
    evaluates, `needs` are the keys of the nodes whose models it uses."""

    key: str
    spec: JobSpec
    model_label: str
    needs: tuple[str, ...] = ()
    params: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class StudyModel:
    """A model of the study: `kind` "base" (evaluated as it is, from `ref`) or the compression
    kind whose node (`node`, a plan key) produces it; `params` are its swept settings."""

    kind: str
    node: str | None = None
    ref: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_record(self, job_id: int | None) -> dict[str, Any]:
        """The JSON form stored with the study (what the report reads)."""
        return {"kind": self.kind, "node": self.node, "ref": self.ref, "params": dict(self.params),
                "job_id": job_id}


@dataclass
class StudyPlan:
    name: str
    description: str
    source: str
    teacher: str
    models: dict[str, StudyModel] = field(default_factory=dict)  # by label, in study order
    nodes: list[Node] = field(default_factory=list)
    margins: dict[str, Any] = field(default_factory=dict)        # the study's [margins], as written

    def node(self, key: str) -> Node:
        return next(n for n in self.nodes if n.key == key)


def find_study_file(name_or_path: str) -> Path:
    """A preset name (data/studies/NAME.toml) or a path to a TOML file."""
    path = Path(name_or_path).expanduser()
    if path.suffix == ".toml" or path.exists():
        if not path.exists():
            raise StudyError(f"study file {str(path)!r} does not exist")
        return path.resolve()
    preset = STUDIES_DIR / f"{name_or_path}.toml"
    if not preset.exists():
        raise StudyError(f"study {name_or_path!r} is neither a preset ({', '.join(presets())}) "
                         "nor a .toml file")
    return preset


def presets() -> list[str]:
    return sorted(p.stem for p in STUDIES_DIR.glob("*.toml"))


def load_study(name_or_path: str) -> StudyPlan:
    path = find_study_file(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StudyError(f"study file {str(path)!r} is not valid TOML: {exc}") from None
    return plan_study(data, source=str(path))


# the compression job kinds a study may hold as [[kind]] blocks (distill, prune, quantize, ...)
COMPRESSION_KINDS = tuple(kind for kind, cls in SPEC_TYPES.items() if cls.produces_model)
_TOP_KEYS = {"name", "description", "teacher", "settings", "margins", "models", "eval", *COMPRESSION_KINDS}


def _sweep(kind: str, block: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """Expand list values into one dict per combination (tuple-typed fields stay lists)."""
    hints = get_type_hints(SPEC_TYPES[kind])
    fixed, swept = {}, {}
    for key, value in block.items():
        hint = hints.get(key)
        is_tuple = hint is not None and (get_origin(hint) is tuple or any(
            get_origin(a) is tuple for a in get_args(hint)))
        if isinstance(value, list) and not is_tuple:
            if not value:
                raise StudyError(f"{where}: {key} is an empty list")
            swept[key] = value
        else:
            fixed[key] = value
    combos = [dict(zip(swept, values)) for values in itertools.product(*swept.values())] or [{}]
    return [{**fixed, **combo, "_swept": combo} for combo in combos]


def _param_suffix(combo: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in combo.items())


def plan_study(data: dict[str, Any], source: str = "<memory>") -> StudyPlan:
    """Validate a parsed study file and build its DAG (no store access, no network)."""
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise StudyError(f"study has no section {unknown[0]!r}; known: {', '.join(sorted(_TOP_KEYS))}")
    problem = shape_problem(data, ("models", "eval", *COMPRESSION_KINDS))
    if problem:
        raise StudyError(problem)
    name = data.get("name") or Path(source).stem
    teacher = data.get("teacher")
    if not isinstance(teacher, str) or not teacher:
        raise StudyError("study needs `teacher = \"<model reference>\"`")
    settings = data.get("settings", {})
    margins = data.get("margins", {})
    if not isinstance(margins, dict):
        raise StudyError(f"study [margins] must be a table such as expected_max_toxicity = 0.02, got {margins!r}")
    parse_margins(margins, f"study {name}")          # refused now, not when the report is built
    plan = StudyPlan(name, data.get("description", ""), source, teacher, margins=dict(margins))
    plan.models["teacher"] = StudyModel("base", ref=teacher)

    def spec(kind: str, values: dict[str, Any], where: str) -> JobSpec:
        try:
            return spec_from_dict({"kind": kind, **settings, **values})
        except SpecError as exc:
            raise StudyError(f"{where}: {exc}") from None

    for i, block in enumerate(data.get("models", [])):
        label = block.get("label") or block.get("ref")
        if not block.get("ref"):
            raise StudyError(f"models[{i}] needs `ref = \"<model reference>\"`")
        _new_label(plan, label, f"models[{i}]")
        plan.models[label] = StudyModel("base", ref=block["ref"])

    pending: list[tuple[str, str, dict]] = []  # (kind, label, values) of compression nodes
    for kind in COMPRESSION_KINDS:
        for i, block in enumerate(data.get(kind, [])):
            where = f"{kind}[{i}]"
            block = dict(block)
            label = block.pop("label", None) or f"{kind}{i}"
            of = block.pop("of", "teacher")
            for values in _sweep(kind, block, where):
                combo = values.pop("_swept")
                full = f"{label}({_param_suffix(combo)})" if combo else label
                _new_label(plan, full, where)
                values[SPEC_TYPES[kind].source_field] = REF_PREFIX + of
                pending.append((kind, full, {**values, "_of": of, "_params": combo, "_where": where}))
                plan.models[full] = StudyModel(kind, node=f"{kind}:{full}", params={"of": of, **combo})
    for kind, label, values in pending:
        of, params, where = values.pop("_of"), values.pop("_params"), values.pop("_where")
        if of not in plan.models:
            raise StudyError(f"{where}: `of = {of!r}` names no model of the study; known: "
                             f"{', '.join(plan.models)}")
        if kind == "distill" and values.get("student", "").startswith(REF_PREFIX):
            raise StudyError(f"{where}: student must be a model reference, not a study label")
        placeholder = {**values, SPEC_TYPES[kind].source_field: _ref_for(plan, of)}
        needs = (plan.models[of].node,) if plan.models[of].node else ()
        built = spec(kind, {**placeholder, "label": f"{plan.name}:{label}"}, where)
        plan.nodes.append(Node(f"{kind}:{label}", built, label, needs, tuple(params.items())))
    _check_acyclic(plan)

    evals = data.get("eval", [])
    if not evals:
        raise StudyError("study has no [[eval]] block: nothing would be measured")
    for label, model in plan.models.items():
        # (key, block index, spec, swept values) per eval of this model; evals sharing a key
        # (one suite, the same swept values) are told apart by their whole spec below
        built_evals: list[tuple[str, int, JobSpec, dict[str, Any]]] = []
        for i, block in enumerate(evals):
            for values in _sweep("eval", dict(block), f"eval[{i}]"):
                combo = values.pop("_swept")
                values["model"] = _ref_for(plan, label)
                suite = values.get("suite", "toxicity")
                key = f"eval:{label}:{suite}"
                built = spec("eval", {**values, "label": f"{plan.name}:{label}"}, f"eval[{i}]")
                built_evals.append((key, i, built, combo))
        needs = (model.node,) if model.node else ()
        for key, built, params in _distinct_evals(built_evals):
            plan.nodes.append(Node(key, built, label, needs, tuple(params.items())))
    return plan


def _distinct_evals(built: list[tuple[str, int, JobSpec, dict[str, Any]]]
                    ) -> list[tuple[str, JobSpec, dict[str, Any]]]:
    """(key, spec, params) of one model's evals, in order. The evals of one suite are compared
    by their whole spec (its hash): the same spec twice is refused. Their params are the swept
    values plus every other setting that differs between them, so two blocks that differ only
    in a setting that is not swept (context_length 16 and 17) stay two evals with two keys, and
    pair across models in the study's record like swept values do. A suite evaluated once, or
    by one block, keeps its swept values alone (the keys of such studies are unchanged)."""
    groups: dict[str, list[int]] = {}
    for n, (key, _, _, _) in enumerate(built):
        groups.setdefault(key, []).append(n)
    params_of: dict[int, dict[str, Any]] = {}
    for members in groups.values():
        specs = {n: built[n][2].to_dict() for n in members}
        seen: dict[str, int] = {}
        for n in members:
            _, i, spec, _ = built[n]
            digest = spec.spec_hash()
            if digest in seen:
                raise StudyError(f"eval[{i}]: suite {spec.suite!r} is evaluated twice with the same "
                                 f"settings (as eval[{seen[digest]}]); give the blocks different "
                                 "settings")
            seen[digest] = i
        first = specs[members[0]]
        differing = [f for f in first if len({_json_value(specs[n].get(f)) for n in members}) > 1]
        for n in members:
            combo = built[n][3]
            params_of[n] = {**combo, **{f: specs[n][f] for f in differing if f not in combo}}
    return [(key + (f"({_param_suffix(params_of[n])})" if params_of[n] else ""), spec, params_of[n])
            for n, (key, _, spec, _) in enumerate(built)]


def _json_value(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _new_label(plan: StudyPlan, label: str, where: str) -> None:
    if label in plan.models:
        raise StudyError(f"{where}: label {label!r} is used twice")


def _ref_for(plan: StudyPlan, label: str) -> str:
    model = plan.models[label]
    return model.ref if model.node is None else REF_PREFIX + model.node


def _check_acyclic(plan: StudyPlan) -> None:
    graph = {n.key: n.needs for n in plan.nodes}
    state: dict[str, int] = {}

    def visit(key: str, path: list[str]) -> None:
        if state.get(key) == 2:
            return
        if state.get(key) == 1:
            cycle = path[path.index(key):] + [key]
            raise StudyError(f"study has a cycle: {' -> '.join(cycle)}")
        state[key] = 1
        for need in graph.get(key, ()):
            visit(need, path + [key])
        state[key] = 2

    for key in graph:
        visit(key, [])
    for node in plan.nodes:
        for need in node.needs:
            if need not in graph:
                raise StudyError(f"{node.key} needs {need}, which is not in the study")


def topological(plan: StudyPlan) -> list[Node]:
    done, ordered = set(), []
    remaining = list(plan.nodes)
    while remaining:
        ready = [n for n in remaining if all(need in done for need in n.needs)]
        for node in ready:
            ordered.append(node)
            done.add(node.key)
        remaining = [n for n in remaining if n.key not in done]
    return ordered


def describe_plan(plan: StudyPlan) -> list[dict]:
    return [{"key": n.key, "kind": n.spec.kind, "model": n.model_label, "needs": list(n.needs),
             "spec": json.loads(n.spec.to_json())} for n in topological(plan)]
