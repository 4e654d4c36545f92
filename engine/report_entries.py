"""What a study's report is made of: the headline figures of its table (`Headline`, in the
registry's report order) and one `ModelEntry` per model with its runs and metric rows. Below
the report, its plots and its provenance lines, which all read them."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.evaluation.suites import MetricSpec, suites


@dataclass(frozen=True)
class Headline:
    """A figure of the report table: headline metric `metric` of a `suite` run (overall)."""

    suite: str
    metric: MetricSpec
    subset: str = ""

    @property
    def name(self) -> str:
        return self.metric.name

    @property
    def title(self) -> str:
        return self.metric.title

    @property
    def target(self) -> float | None:
        return self.metric.target


def headlines() -> tuple[Headline, ...]:
    """Every suite's headline metrics, quality suites first (the registry's report order)."""
    return tuple(Headline(s.name, m) for s in sorted(suites(), key=lambda s: s.order)
                 for m in s.headlines())


@dataclass
class ModelEntry:
    label: str
    kind: str
    params: dict
    model: dict | None = None
    compress_job: dict | None = None
    runs: dict[str, dict] = field(default_factory=dict)        # suite -> run row
    metrics: dict[str, dict] = field(default_factory=dict)     # suite -> {(name, subset): row}
