"""Job specifications: frozen, typed, validated on construction, serialisable to JSON.

A spec says *what* to compute; everything needed to reproduce a job is in it. Its content hash
(`spec_hash`) lets a study reuse a finished job whose spec is unchanged.

Every numeric field has a documented range (`engine.spec_values.FIELD_RANGES`, printed by
`compfair submit KIND --help`), checked when a spec is built and again by the one validation
entry (`engine.validation.validate`).

Model references (`model`, `teacher`, `student`) are strings the registry resolves: a hub id
(`gpt2`), a local folder, a `.gguf` file, the alias `smollm2` (the offline default),
`model:ID` (a registry id) or `job:ID` (the model a compression job produced)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, get_type_hints

from engine.compression.methods import get_method, method_names
from engine.errors import SpecError  # noqa: F401 - defined with the other errors; imported from here
from engine.spec_values import FieldAlias, check_ranges, coerce_value, field_range  # noqa: F401 - part of this module's API
from engine.evaluation.suites import generation_suite_names, get_suite


BOLD_DOMAINS = ("gender", "race", "profession", "religious_ideology", "political_ideology")
PRUNE_METHODS = method_names("prune")     # the registered pruning methods (engine.compression.methods)
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")
BACKENDS = ("transformers", "vllm")     # generation backends of eval jobs
# fields added after the first release: left out of spec_hash at their default value, so the
# hash of a job submitted before they existed is unchanged (finished jobs are still reused)
HASH_OMITS_DEFAULT = {"backend": "transformers", "reference_model": None, "processes": 1}
MAX_PROCESSES = 64          # data-parallel training processes of one distillation job


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


@dataclass(frozen=True)
class EvalSpec(JobSpec):
    """Evaluate one model on one suite.

    `data`: where the prompts come from: "auto" (hub when reachable, else the shipped set),
    "builtin" (the sets in compfair's data/), "hub", or a local file/folder path."""

    kind: ClassVar[str] = "eval"
    produces_model: ClassVar[bool] = False
    shardable: ClassVar[bool] = True        # `submit eval --shards N` (engine.scale.shards)
    # `task = "hellaswag,arc_easy"` (CLI `--task`): the lm-eval suite's tasks, stored as `data`
    aliases: ClassVar[dict[str, "FieldAlias"]] = {}
    model: str = "smollm2"
    suite: str = "toxicity"
    data: str = "auto"
    samples_per_prompt: int = 25
    top_p: float = 0.9
    temperature: float = 1.0
    max_new_tokens: int = 20
    max_prompts: int | None = None
    batch_size: int | None = None
    scorer: str = "auto"
    scorer_label: str | None = None
    domains: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    prompts_per_group: int | None = None
    context_length: int = 512
    stride: int = 256
    bootstrap_samples: int = 1000
    confidence: float = 0.95
    backend: str = "transformers"
    # the model whose likelihood judges continuation fluency; None: the root of the evaluated
    # model's lineage (its uncompressed ancestor, or the model itself)
    reference_model: str | None = None

    def __post_init__(self) -> None:
        _check_common(self)
        _check_model_ref("model", self.model)
        _check(self.reference_model is None or self.reference_model.strip() != "",
               "reference_model must name a model or be left empty", "reference_model")
        _check(self.backend in BACKENDS,
               f"backend {self.backend!r} is unknown; choose from {', '.join(BACKENDS)}")
        suite = get_suite(self.suite)          # SpecError naming the known suites
        suite.validate(self)
        _check(self.backend == "transformers" or suite.generates_text,
               f"backend {self.backend!r} generates text: it serves the "
               f"{' and '.join(generation_suite_names())} suites, not {self.suite!r}", "backend")
        _check(self.samples_per_prompt >= 1, f"samples_per_prompt (k) must be >= 1, got {self.samples_per_prompt}")
        _check(0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1], got {self.top_p}")
        _check(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        _check(1 <= self.max_new_tokens <= 4096, f"max_new_tokens must be in [1, 4096], got {self.max_new_tokens}")
        _check(self.max_prompts is None or self.max_prompts >= 1, f"max_prompts must be >= 1, got {self.max_prompts}")
        _check(self.batch_size is None or self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check(self.prompts_per_group is None or self.prompts_per_group >= 1,
               f"prompts_per_group must be >= 1, got {self.prompts_per_group}")
        bad = [d for d in self.domains if d not in BOLD_DOMAINS]
        _check(not bad, f"BOLD domain {bad[0]!r} is unknown; choose from {', '.join(BOLD_DOMAINS)}"
               if bad else "", "domains")
        _check(self.context_length >= 8, f"context_length must be >= 8, got {self.context_length}")
        _check(1 <= self.stride <= self.context_length,
               f"stride must be in [1, context_length={self.context_length}], got {self.stride}")
        _check(self.bootstrap_samples >= 100, f"bootstrap_samples must be >= 100, got {self.bootstrap_samples}")
        _check(0.5 < self.confidence < 1.0, f"confidence must be in (0.5, 1), got {self.confidence}")
        check_ranges(self)     # every numeric field in its documented range (FIELD_RANGES)

    def model_refs(self) -> dict[str, str]:
        refs = {"model": self.model}
        if self.reference_model:
            refs["reference_model"] = self.reference_model
        return refs

    def title(self) -> str:
        return f"{self.model} on {self.suite}"

    def summary(self) -> str:
        return f"evaluate {self.model} on {self.suite}"


@dataclass(frozen=True)
class DistillSpec(JobSpec):
    """Knowledge distillation of `teacher` into a smaller student.

    Student: `student` (an existing model) or, when it is None, built from the teacher by
    keeping `intensity` of its layers (evenly spaced, DistilGPT2-style) or exactly
    `student_layers`. Loss = alpha_ce * T^2 * KL(teacher_T || student_T) + alpha_clm * CE
    (+ alpha_cos * hidden-state cosine). `distill=False` trains the same student on CE only:
    the no-distillation baseline. `data`: "teacher" (sequence-level KD on text sampled from
    the teacher), "builtin", a hub data set id, or a local text/JSONL file."""

    kind: ClassVar[str] = "distill"
    source_field: ClassVar[str] = "teacher"      # the model a study block derives from
    teacher: str = "smollm2"
    student: str | None = None
    intensity: float = 0.5
    student_layers: tuple[int, ...] = ()
    distill: bool = True
    temperature: float = 2.0
    alpha_ce: float = 0.5
    alpha_clm: float = 0.5
    alpha_cos: float = 0.0
    data: str = "teacher"
    steps: int = 200
    batch_size: int = 8
    grad_accum: int = 1
    seq_len: int = 128
    learning_rate: float = 5e-4
    warmup_steps: int = 20
    weight_decay: float = 0.01
    checkpoint_every: int = 50
    gradient_checkpointing: bool = False
    teacher_samples: int = 256
    name: str = ""
    # data-parallel training processes (DDP; engine.compression.distill_ddp): each takes
    # 1/processes of every effective batch; 1 trains in the job's own process
    processes: int = 1

    def __post_init__(self) -> None:
        _check_common(self)
        _check_model_ref("teacher", self.teacher)
        self._check_processes()
        _check(self.student is None or self.student.strip() != "", "student must be a model reference or empty")
        _check(0.0 < self.intensity < 1.0, f"intensity (student depth fraction) must be in (0, 1), got {self.intensity}")
        _check(all(i >= 0 for i in self.student_layers), f"student_layers must be >= 0, got {self.student_layers}")
        _check(len(set(self.student_layers)) == len(self.student_layers), f"student_layers repeat a layer: {self.student_layers}")
        _check(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        for name in ("alpha_ce", "alpha_clm", "alpha_cos"):
            _check(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        _check(self.alpha_clm > 0 or (self.distill and (self.alpha_ce > 0 or self.alpha_cos > 0)),
               "the loss is zero: give alpha_ce, alpha_clm or alpha_cos a positive weight")
        _check(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check(self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}")
        _check(8 <= self.seq_len <= 8192, f"seq_len must be in [8, 8192], got {self.seq_len}")
        _check(0 < self.learning_rate < 1, f"learning_rate must be in (0, 1), got {self.learning_rate}")
        _check(0 <= self.warmup_steps < self.steps or self.warmup_steps == 0,
               f"warmup_steps must be in [0, steps={self.steps}), got {self.warmup_steps}")
        _check(self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        _check(self.teacher_samples >= 1, f"teacher_samples must be >= 1, got {self.teacher_samples}")
        check_ranges(self)     # every numeric field in its documented range (FIELD_RANGES)

    def _check_processes(self) -> None:
        n = self.processes
        _check(isinstance(n, int) and 1 <= n <= MAX_PROCESSES,
               f"processes must be an integer in [1, {MAX_PROCESSES}], got {n!r}")
        if n == 1:
            return
        batch = self.batch_size * self.grad_accum
        _check(batch % n == 0, f"processes {n} must divide the effective batch "
               f"(batch_size x grad_accum = {batch}): each process takes an equal share")
        _check(self.device in ("auto", "cpu", "cuda"),
               f"processes {n} needs device auto, cpu or cuda (each process takes its own "
               f"GPU, or the CPU), got {self.device!r}")

    def model_refs(self) -> dict[str, str]:
        refs = {"teacher": self.teacher}
        if self.student:
            refs["student"] = self.student
        return refs

    def title(self) -> str:
        student = self.student or f"{self.intensity:.0%} depth"
        return f"{self.teacher} -> {student}" + ("" if self.distill else " (CE baseline)")

    def summary(self) -> str:
        student = self.student or f"{self.intensity:.0%}-depth student"
        return (f"distil {self.teacher} -> {student}" if self.distill
                else f"train {student} of {self.teacher} (CE only, no distillation)")


@dataclass(frozen=True)
class PruneSpec(JobSpec):
    """Prune `model` to `sparsity`.

    `method`: a registered pruning method (`engine.compression.methods`): "magnitude" (|W|;
    `scope` "layer" or "global"), "wanda" (|W| * ||X||_2 per input feature, compared within
    each output row, calibrated on `calibration_data`), or "heads" (structured: remove that
    fraction of attention heads by importance). `n_m` (e.g. "2:4") asks for N:M
    semi-structured sparsity instead of a free sparsity (methods with `supports_n_m`).
    `recovery_steps` > 0 fine-tunes briefly afterwards with the masks held fixed."""

    kind: ClassVar[str] = "prune"
    source_field: ClassVar[str] = "model"
    model: str = "smollm2"
    method: str = "magnitude"
    sparsity: float = 0.5
    scope: str = "layer"
    n_m: str | None = None
    calibration_data: str = "builtin"
    calibration_samples: int = 32
    calibration_seq_len: int = 128
    recovery_steps: int = 0
    recovery_learning_rate: float = 5e-5
    name: str = ""

    def __post_init__(self) -> None:
        _check_common(self)
        _check_model_ref("model", self.model)
        method = get_method(self.method, self.kind)   # SpecError naming the known methods
        _check(0.0 <= self.sparsity < 1.0, f"sparsity must be in [0, 1), got {self.sparsity}")
        _check(self.scope in ("layer", "global"), f"scope must be 'layer' or 'global', got {self.scope!r}")
        method.validate_spec(self)                    # N:M support and pattern
        _check(self.calibration_samples >= 1, f"calibration_samples must be >= 1, got {self.calibration_samples}")
        _check(8 <= self.calibration_seq_len <= 8192, f"calibration_seq_len must be in [8, 8192], got {self.calibration_seq_len}")
        _check(self.recovery_steps >= 0, f"recovery_steps must be >= 0, got {self.recovery_steps}")
        check_ranges(self)     # every numeric field in its documented range (FIELD_RANGES)

    def model_refs(self) -> dict[str, str]:
        return {"model": self.model}

    def title(self) -> str:
        return f"{self.model} {self.method} {self.n_m or f'{self.sparsity:.0%}'}"

    def summary(self) -> str:
        return f"prune {self.model} with {self.method} to {self.n_m or f'{self.sparsity:.0%}'}"

    @property
    def effective_sparsity(self) -> float:
        if self.n_m:
            n, m = parse_n_m(self.n_m)
            return 1 - n / m
        return self.sparsity


@dataclass(frozen=True)
class QuantizeSpec(JobSpec):
    """Quantize `model`'s weights with `method`.

    "rtn": round-to-nearest, weight-only, `bits` (2, 3, 4 or 8) per weight in groups of
    `group_size` input weights, `symmetric` or with a zero point; stored packed. "gguf": a GGUF
    file at `gguf_type` (q8_0, q4_0, q4_1, q5_0, q5_1) for llama.cpp, evaluated as that file.
    "gptq": calibrated, `bits` like rtn. "torchao": torchao weight-only, `bits` 8 (per channel)
    or 4 (groups of `group_size`). "bnb": bitsandbytes, `bits` 8 (LLM.int8()) or 4 (NF4).
    Calibrated methods read `calibration_data` like pruning does. Only the linear layers inside
    the transformer blocks are quantized (RTN); GGUF quantizes every 2-D weight it can."""

    kind: ClassVar[str] = "quantize"
    source_field: ClassVar[str] = "model"
    model: str = "smollm2"
    method: str = "rtn"
    bits: int = 8
    group_size: int = 128
    symmetric: bool = True
    gguf_type: str = "q8_0"
    calibration_data: str = "builtin"
    calibration_samples: int = 32
    calibration_seq_len: int = 128
    name: str = ""

    def __post_init__(self) -> None:
        _check_common(self)
        _check_model_ref("model", self.model)
        method = get_method(self.method, self.kind)   # SpecError naming the known methods
        _check(self.group_size >= 1, f"group_size must be >= 1, got {self.group_size}")
        _check(self.calibration_samples >= 1, f"calibration_samples must be >= 1, got {self.calibration_samples}")
        _check(8 <= self.calibration_seq_len <= 8192,
               f"calibration_seq_len must be in [8, 8192], got {self.calibration_seq_len}")
        method.validate_spec(self)
        check_ranges(self)     # every numeric field in its documented range (FIELD_RANGES)

    def model_refs(self) -> dict[str, str]:
        return {"model": self.model}

    def title(self) -> str:
        return f"{self.model} {self.method} {get_method(self.method, self.kind).name_suffix(self)}"

    def summary(self) -> str:
        return f"quantize {self.model} with {self.method} ({get_method(self.method, self.kind).name_suffix(self)})"


def parse_n_m(text: str) -> tuple[int, int]:
    """'2:4' -> (2, 4): keep N weights out of every M consecutive ones."""
    try:
        n_text, m_text = text.split(":")
        n, m = int(n_text), int(m_text)
    except ValueError:
        raise SpecError(f"N:M pattern {text!r} is not of the form N:M (e.g. 2:4)", "n_m") from None
    _check(0 < n < m <= 64, f"N:M pattern {text!r} needs 0 < N < M <= 64", "n_m")
    return n, m


EvalSpec.aliases = {"task": FieldAlias("data", (("suite", "lm-eval"),)),
                    # an independent judge of fluency (the quality gate uses its verdict)
                    "judge_model": FieldAlias("reference_model")}

SPEC_TYPES: dict[str, type[JobSpec]] = {cls.kind: cls for cls in (EvalSpec, DistillSpec, PruneSpec,
                                                                   QuantizeSpec)}
# kinds the engine queues itself (a sharded eval's shards): read back from the queue like the
# others, never offered by `submit`, forms or studies; registered by their own modules
INTERNAL_SPEC_TYPES: dict[str, type[JobSpec]] = {}


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


import engine.scale.shard_spec  # noqa: E402,F401 - registers the shard kind (it imports this module)
