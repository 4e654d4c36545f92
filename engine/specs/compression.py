"""Layer 3 (specs): the compression job kinds, `DistillSpec`, `PruneSpec` and `QuantizeSpec`.
Method-specific checks come from the methods' declarations in the catalog
(`engine.catalog.get_method_info`), never from the compression code.

Model references (`teacher`, `student`, `model`) are strings the registry resolves: a hub id
(`gpt2`), a local folder, a `.gguf` file, the alias `smollm2` (the offline default),
`model:ID` (a registry id) or `job:ID` (the model a compression job produced)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from engine.catalog.method_info import get_method_info, method_names, parse_n_m
from engine.spec_values import check_ranges
from engine.specs.base import JobSpec, _check, _check_common, _check_model_ref

PRUNE_METHODS = method_names("prune")     # the declared pruning methods (engine.catalog)
MAX_PROCESSES = 64          # data-parallel training processes of one distillation job


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
        method = get_method_info(self.method, self.kind)   # SpecError naming the known methods
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
        method = get_method_info(self.method, self.kind)   # SpecError naming the known methods
        _check(self.group_size >= 1, f"group_size must be >= 1, got {self.group_size}")
        _check(self.calibration_samples >= 1, f"calibration_samples must be >= 1, got {self.calibration_samples}")
        _check(8 <= self.calibration_seq_len <= 8192,
               f"calibration_seq_len must be in [8, 8192], got {self.calibration_seq_len}")
        method.validate_spec(self)
        check_ranges(self)     # every numeric field in its documented range (FIELD_RANGES)

    def model_refs(self) -> dict[str, str]:
        return {"model": self.model}

    def title(self) -> str:
        return f"{self.model} {self.method} {get_method_info(self.method, self.kind).name_suffix(self)}"

    def summary(self) -> str:
        return f"quantize {self.model} with {self.method} ({get_method_info(self.method, self.kind).name_suffix(self)})"
