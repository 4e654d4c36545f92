"""Layer 3 (specs): the base of every job spec (`JobSpec`: frozen, typed, validated on
construction, serialisable to JSON), the checks the kinds share, the table of kinds
(`SPEC_TYPES`, `INTERNAL_SPEC_TYPES`) and `spec_from_dict`.

A spec says *what* to compute; everything needed to reproduce a job is in it. Its content hash
(`spec_hash`) lets a study reuse a finished job whose spec is unchanged.

Every numeric field has a documented range (`engine.spec_values.FIELD_RANGES`, printed by
`compfair submit KIND --help`), checked when a spec is built and again by the one validation
entry (`engine.validation.validate`).

Imports nothing from engine but `engine.errors` and `engine.spec_values`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, get_type_hints

from engine.errors import SpecError
from engine.spec_values import coerce_value
from engine.catalog.registry import Registry

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# fields added after the first release: left out of spec_hash at their default value, so the
# hash of a job submitted before they existed is unchanged (finished jobs are still reused)
HASH_OMITS_DEFAULT = {"backend": "transformers", "reference_model": None, "processes": 1}


def _is_local_path(value: str) -> bool:
    return ("/" in value or value.endswith((".jsonl", ".json", ".txt", ".csv", ".gguf"))) and \
        Path(value).expanduser().exists()


def _fingerprint(value: str) -> list:
    path = Path(value).expanduser()
    files = [path] if path.is_file() else sorted(
        p for p in path.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors", ".bin",
                                                                   ".jsonl", ".txt", ".csv", ".gguf"))
    return [(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in files]


def _check(condition: bool, message: str, field: str | None = None) -> None:
    """Raise SpecError(message) unless `condition`. The field defaults to the message's first
    word when that names a spec field (every message here starts with the field it is about)."""
    if not condition:
        first = message.split(" ", 1)[0].strip("'\"")
        known = {f.name for cls in SPEC_TYPES.values() for f in fields(cls)}
        raise SpecError(message, field or (first if first in known else None))


def _check_common(spec: Any) -> None:
    _check(spec.device in DEVICES or spec.device.startswith("cuda:"),
           f"device {spec.device!r} is not one of {', '.join(DEVICES)} (or cuda:N)")
    _check(spec.dtype in DTYPES, f"dtype {spec.dtype!r} is not one of {', '.join(DTYPES)}")
    _check(spec.seed >= 0, f"seed {spec.seed} must be >= 0")


def _check_model_ref(name: str, value: str) -> None:
    _check(isinstance(value, str) and value.strip() != "", f"{name} must name a model, got {value!r}")


@dataclass(frozen=True)
class JobSpec:
    """Base of every job spec."""

    kind: ClassVar[str] = ""
    source_field: ClassVar[str] = "model"       # the field naming the model the job starts from
    produces_model: ClassVar[bool] = True       # a compression job: it registers a new model
    label: str = ""
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {"kind": self.kind, **{k: list(v) if isinstance(v, tuple) else v
                                      for k, v in data.items()}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def spec_hash(self) -> str:
        """Content hash of everything that changes the result: the settings (not the label)
        and a fingerprint (size, mtime) of every local file or folder the spec names, so an
        edited data file or retrained local model is never mistaken for the old one."""
        data = self.to_dict()
        data.pop("label", None)
        for name, default in HASH_OMITS_DEFAULT.items():   # fields added later: old hashes stay valid
            if name in data and data[name] == default:
                data.pop(name)
        data["_inputs"] = {k: _fingerprint(v) for k, v in sorted(data.items())
                           if isinstance(v, str) and _is_local_path(v)}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def model_refs(self) -> dict[str, str]:
        """The spec's model references by field name (used to find job dependencies)."""
        return {}

    def title(self) -> str:
        """A few words saying what the job does (listings)."""
        return self.kind

    def summary(self) -> str:
        """One sentence saying what the job does (forms, previews)."""
        return self.title()

    def replace(self, **changes: Any) -> "JobSpec":
        return dataclasses.replace(self, **changes)


def _kind(cls: type[JobSpec]) -> str:
    return cls.kind


# the public job kinds' spec types, registered by `engine.specs` in their order (eval, distill,
# prune, quantize)
SPEC_TYPES: Registry[type[JobSpec]] = Registry("job kind", "kind", key=_kind, instantiate=False)
# kinds the engine queues itself (a sharded eval's shards): read back from the queue like the
# others, never offered by `submit`, forms or studies; registered by their own modules
INTERNAL_SPEC_TYPES: Registry[type[JobSpec]] = Registry("internal job kind", "kind", key=_kind,
                                                        instantiate=False)


def spec_from_dict(data: dict[str, Any]) -> JobSpec:
    """Build a spec from a dict with a `kind` key; unknown keys and bad values raise SpecError."""
    data = dict(data)
    kind = data.pop("kind", None)
    cls = SPEC_TYPES.get(kind) or INTERNAL_SPEC_TYPES.get(kind)
    if cls is None:
        raise SpecError(f"job kind {kind!r} is unknown; choose from {', '.join(SPEC_TYPES)}")
    for name, alias in getattr(cls, "aliases", {}).items():
        if name in data:
            alias.resolve(name, data, cls)
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpecError(f"{kind} job has no setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
    values = {k: coerce_value(k, hints[k], v) for k, v in data.items()}
    return cls(**values)


def spec_from_json(text: str) -> JobSpec:
    return spec_from_dict(json.loads(text))
