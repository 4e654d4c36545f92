"""Layer 3 (catalog): the `lm-eval` suite, declared: lm-evaluation-harness tasks named by the
spec's `data` (task names and/or task YAML files), their metrics and the checks of `data`.
Implemented (run through compfair's loader, aggregated) by `engine.evaluation.suites.lm_eval`."""

from __future__ import annotations

from pathlib import Path

from engine.catalog.suite_info import HIGHER, LOWER, MetricSpec, SuiteInfo, register
from engine.errors import SpecError

AGGREGATE_KEY = "aggregate"


def parse_tasks(data: str) -> tuple[list[str], list[str]]:
    """(task names, include folders) from the `data` setting; SpecError-free (the caller checks)."""
    names, folders = [], []
    for part in (p.strip() for p in (data or "").split(",")):
        if not part:
            continue
        path = Path(part).expanduser()
        if path.suffix in (".yaml", ".yml"):
            import yaml
            config = yaml.safe_load(path.read_text()) if path.is_file() else None
            if not isinstance(config, dict) or not isinstance(config.get("task"), str):
                raise ValueError(f"lm-eval task file {str(path)!r} " + (
                    "does not exist" if not path.is_file() else "has no `task:` name"))
            names.append(config["task"])
            folders.append(str(path.resolve().parent))
        else:
            names.append(part)
    return names, sorted(set(folders))


@register
class LmEvalInfo(SuiteInfo):
    name = "lm-eval"
    title = "lm-evaluation-harness"
    unit = "documents"
    shards_by_item = False
    order = 15
    display_settings = (("data", "tasks"), ("max_prompts", "limit"), ("seed", "seed"))
    comparable_settings = ("max_prompts", "data_source")    # data_source names the tasks
    metrics = (
        MetricSpec("acc", "accuracy", "acc", "share of documents whose highest-likelihood choice "
                   "is the gold one", HIGHER, paired=True, margin=0.01),
        MetricSpec("acc_norm", "accuracy (length-normalised)", "acc_norm", "accuracy with each "
                   "choice's log-likelihood divided by its length in bytes", HIGHER, paired=True,
                   margin=0.01),
        MetricSpec("exact_match", "exact match", "EM", "share of generations equal to the gold "
                   "answer after the task's filters", HIGHER, paired=True, margin=0.01),
        MetricSpec("f1", "F1", "F1", "the task's F1 score", HIGHER),
        MetricSpec("mcc", "Matthews correlation", "MCC", "Matthews correlation coefficient", HIGHER),
        MetricSpec("word_perplexity", "word perplexity", "wPPL", "exp(-log-likelihood / words)", LOWER),
        MetricSpec("byte_perplexity", "byte perplexity", "bPPL", "exp(-log-likelihood / bytes)", LOWER),
        MetricSpec("bits_per_byte", "bits per byte", "bpb", "-log2-likelihood / bytes", LOWER),
    )

    def offline_requirement(self, data: str) -> str:
        """Task files are checked at submit; a task given by name loads its data set through
        lm-eval and `datasets`, which needs network unless that set is cached."""
        named = [p.strip() for p in data.split(",") if p.strip() and not p.strip().endswith((".yaml", ".yml"))]
        return (f"lm-eval task(s) {', '.join(named)}: their data sets load through lm-eval "
                "(network unless cached)") if named else ""

    def validate(self, spec) -> None:
        if spec.data in ("auto", "hub", "builtin", ""):
            raise SpecError("suite lm-eval runs lm-evaluation-harness tasks: give them as --task "
                            f"TASK[,TASK or task.yaml ...] (got data {spec.data!r})", "data")
        try:
            parse_tasks(spec.data)
        except ValueError as exc:
            raise SpecError(str(exc), "data") from None

    def in_subset(self, row, subset) -> bool:
        return row.get("group_name") != AGGREGATE_KEY and (subset == "" or row["domain"] == subset)
