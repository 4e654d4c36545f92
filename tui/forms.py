"""The New-job form's model, free of Textual: which fields a spec kind has, their defaults and
choices, and how the typed-in strings become specs (validated by the spec classes themselves).

A form is a dict of field name -> text as typed. An empty text means "use the default".
The sweep text is `name=v1,v2 name2=v3,v4` (a grid: one job per combination)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, get_args, get_origin, get_type_hints

from engine import api
from engine.api import suite_names, BACKENDS, DEVICES, DTYPES, SPEC_TYPES, JobSpec, SpecError

# Fields offered as a closed list (the spec validates the value again on construction).
CHOICES: dict[str, tuple[str, ...]] = {
    "suite": suite_names(),
    "bits": tuple(str(b) for b in api.RTN_BITS),
    "gguf_type": api.GGUF_FORMATS,
    "scope": ("layer", "global"),
    "dtype": DTYPES,
    "backend": BACKENDS,
}
# Free text with suggestions (device also takes cuda:N).
SUGGESTIONS: dict[str, tuple[str, ...]] = {"device": DEVICES}
MODEL_FIELDS = ("model", "teacher", "student", "reference_model")
# Placeholders (shown while a box is empty) where the type alone says too little.
HINTS: dict[str, str] = {
    "model": "hub id, folder, .gguf, smollm2, a model's name, study:label, model:ID, job:ID "
             "(ctrl+o: pick)",
    "teacher": "hub id, folder, smollm2, a model's name, study:label, model:ID, job:ID "
               "(ctrl+o: pick)",
    "student": "empty: built from the teacher's layers (or a model's name, ctrl+o: pick)",
    "reference_model": "empty: the model's uncompressed ancestor judges fluency (ctrl+o: pick)",
    "label": "optional; shown in lists and searchable",
    "name": "optional name of the model it makes",
    "max_prompts": "empty: all prompts",
    "batch_size": "empty: automatic",
    "prompts_per_group": "empty: all",
    "scorer_label": "optional",
    "n_m": "e.g. 2:4 (instead of a free sparsity)",
    "domains": "comma-separated; empty: all",
    "groups": "comma-separated; empty: all",
    "student_layers": "comma-separated layer indices; empty: use intensity",
    "processes": "1; N > 1: DDP over N processes (one GPU each on CUDA)",
}
# Shown first, in this order; the rest follow in declaration order.
FIRST = ("model", "teacher", "student", "suite", "method", "sparsity", "intensity", "label")


@dataclass(frozen=True)
class FormField:
    name: str
    type_name: str           # int, float, str, bool, list, ...
    default: Any
    optional: bool           # None is allowed (an empty box means None / the default)
    choices: tuple[str, ...] = ()
    suggestions: tuple[str, ...] = ()
    hint: str = ""

    @property
    def is_bool(self) -> bool:
        return self.type_name == "bool"

    @property
    def is_model(self) -> bool:
        return self.name in MODEL_FIELDS

    @property
    def default_text(self) -> str:
        return to_text(self.default)

    @property
    def placeholder(self) -> str:
        """What the box says while empty: the field's hint, else what an empty box means (the
        default it stands for, or none), never a type name."""
        if self.hint:
            return self.hint
        if self.default_text:
            return f"empty: {self.default_text}"
        return "empty: none" if self.optional else "optional"


def to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


def _type_name(annotation: Any) -> tuple[str, bool]:
    args = get_args(annotation)
    optional = type(None) in args
    inner = [a for a in args if a is not type(None)]
    if get_origin(annotation) is tuple:
        return "list", optional
    if optional and inner:
        return _type_name(inner[0])[0], True
    return getattr(annotation, "__name__", str(annotation)), optional


def form_fields(kind: str) -> list[FormField]:
    """The fields of a spec kind, important ones first, with defaults from the dataclass."""
    cls = SPEC_TYPES[kind]
    hints = get_type_hints(cls)
    result = []
    for f in dataclasses.fields(cls):
        type_name, optional = _type_name(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        choices = api.method_names(kind) if f.name == "method" else CHOICES.get(f.name, ())
        hint = HINTS.get(f.name, "")
        if hint.startswith("empty:") and default not in (None, "", ()):
            hint = ""           # (eval's optional batch_size, not distill's batch_size = 8)
        result.append(FormField(f.name, type_name, default, optional, choices,
                                SUGGESTIONS.get(f.name, ()), hint))
    order = {name: i for i, name in enumerate(FIRST)}
    return sorted(result, key=lambda f: order.get(f.name, len(FIRST)))


def parse_sweep(text: str) -> dict[str, list[str]]:
    """`sparsity=0.3,0.5 seed=0,1` -> {"sparsity": ["0.3", "0.5"], "seed": ["0", "1"]}."""
    sweep: dict[str, list[str]] = {}
    for item in text.replace(";", " ").split():
        name, sep, values = item.partition("=")
        name = name.strip().replace("-", "_")
        listed = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not name or not listed:
            raise SpecError(f"sweep item {item!r} must look like NAME=V1,V2", field="sweep")
        sweep[name] = listed
    return sweep


def build_specs(kind: str, values: dict[str, str], sweep_text: str = "") -> list[JobSpec]:
    """The specs a form describes (one, or one per sweep combination); raises SpecError."""
    base: dict[str, Any] = {"kind": kind}
    for name, text in values.items():
        if text is None or str(text).strip() == "":
            continue
        base[name] = str(text).strip()
    sweep = parse_sweep(sweep_text)
    known = {f.name for f in dataclasses.fields(SPEC_TYPES[kind])}
    for name in sweep:
        if name not in known:
            raise SpecError(f"cannot sweep {name!r}: a {kind} job has no such setting", field="sweep")
    return api.expand_sweep(base, sweep)


def spec_title(spec: JobSpec) -> str:
    """One line saying what a spec does (the spec's own summary)."""
    return spec.summary()


def changed_settings(spec: JobSpec) -> dict[str, Any]:
    """The settings of `spec` that differ from its class defaults."""
    default = type(spec)().to_dict()
    return {k: v for k, v in spec.to_dict().items() if k != "kind" and default.get(k) != v}


def path_warnings(spec: JobSpec) -> list[str]:
    """Model references that look like local paths but do not exist (the job would fail)."""
    warnings = []
    for field_name, ref in spec.model_refs().items():
        if ref.startswith((".", "/", "~")) and not os.path.exists(os.path.expanduser(ref)):
            warnings.append(f"{field_name}: no such path {ref}")
    return warnings


def settings_text(spec: JobSpec) -> str:
    """The settings that differ from the defaults and that the title does not say
    (`seed=1 max_prompts=50`): what tells apart two jobs with the same title."""
    return " ".join(f"{k}={to_text(v)}" for k, v in changed_settings(spec).items()
                    if k not in ("model", "teacher", "suite", "method", "sparsity"))


def preview_lines(specs: list[JobSpec]) -> list[str]:
    lines = []
    for i, spec in enumerate(specs, 1):
        extra = settings_text(spec)
        lines.append(f"{i}. {spec_title(spec)}" + (f"  ({extra})" if extra else ""))
    return lines
