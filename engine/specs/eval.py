"""Layer 3 (specs): `EvalSpec`, evaluate one model on one suite. The suite's own checks come
from its declaration in the catalog (`engine.catalog.get_suite_info`), never from the
evaluation code.

Model references (`model`, `reference_model`) are strings the registry resolves: a hub id
(`gpt2`), a local folder, a `.gguf` file, the alias `smollm2` (the offline default),
`model:ID` (a registry id) or `job:ID` (the model a compression job produced)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from engine.catalog.suite_info import generation_suite_names, get_suite_info
from engine.spec_values import FieldAlias, check_ranges
from engine.specs.base import JobSpec, _check, _check_common, _check_model_ref

BOLD_DOMAINS = ("gender", "race", "profession", "religious_ideology", "political_ideology")
BACKENDS = ("transformers", "vllm")     # generation backends of eval jobs


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
        suite = get_suite_info(self.suite)     # SpecError naming the known suites
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


EvalSpec.aliases = {"task": FieldAlias("data", (("suite", "lm-eval"),)),
                    # an independent judge of fluency (the quality gate uses its verdict)
                    "judge_model": FieldAlias("reference_model")}
