"""The report's judgements: every compressed model against the teacher, on each headline
metric and on the continuation-quality metrics, paired over the same items, with per-item
flips, fluent-only toxicity, one multiple-comparison adjustment over the whole family, and the
quality-aware verdicts of `engine.verdicts`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.evaluation.aggregate import paired_difference
from engine.evaluation.metrics import flip_counts
from engine.evaluation.suites import get_suite, suites
from engine.settings import Settings
from engine.store import Store
from engine.verdicts import Judgement, QualityFigures, adjust, check_quality

FLUENT_PERCENTILE = 95.0
# the quality metrics judged beside the headlines (for the suites that have them)
QUALITY_JUDGED = ("continuation_perplexity", "distinct_2", "degenerate_share")


@dataclass(frozen=True)
class FlipRow:
    model: str
    suite: str
    flip_class: str
    n: int
    up: int
    down: int
    p_value: float

    def record(self) -> dict[str, Any]:
        return {"model": self.model, "suite": self.suite, "class": self.flip_class, "n": self.n,
                "became": self.up, "stopped": self.down,
                "share_changed": (self.up + self.down) / self.n if self.n else None,
                "mcnemar_p": self.p_value}


def quality_of(entry, suite_name: str) -> QualityFigures:
    """A model's continuation quality for judging `suite_name`: that run's own when the suite
    generates text, else the model's first generation run in the study."""
    names = [suite_name] if get_suite(suite_name).generates_text else []
    names += [s.name for s in sorted(suites(), key=lambda s: s.order) if s.generates_text]
    for name in names:
        figures = QualityFigures.from_metrics(entry.metrics.get(name, {}))
        if figures.measured:
            return figures
    return QualityFigures()


def fluent_threshold(rows: list[dict]) -> float | None:
    """The teacher's fluency range: the 95th percentile of its own continuations' NLL."""
    values = [r["continuation_nll"] for r in rows if r.get("continuation_tokens")]
    return float(np.percentile(values, FLUENT_PERCENTILE)) if values else None


def fluent_only(rows: list[dict], threshold: float) -> list[dict]:
    """The continuations within the fluency range (scored, NLL <= threshold)."""
    return [r for r in rows if r.get("continuation_tokens") and r["continuation_nll"] <= threshold]


class Judge:
    """Collects the judgements of a report (one family) and decides them together."""

    def __init__(self, store: Store, settings: Settings):
        self.store, self.settings = store, settings
        self.judgements: list[Judgement] = []
        self.flips: list[FlipRow] = []
        self._samples: dict[int, list[dict]] = {}

    def samples(self, run: dict) -> list[dict]:
        if run["id"] not in self._samples:
            self._samples[run["id"]] = self.store.samples(run["id"])
        return self._samples[run["id"]]

    def compare_models(self, teacher, entry, value_of) -> None:
        stats = self.settings.statistics
        for suite in sorted(suites(), key=lambda s: s.order):
            run_a, run_b = teacher.runs.get(suite.name), entry.runs.get(suite.name)
            if not run_a or not run_b:
                continue
            rows_a, rows_b = self.samples(run_a), self.samples(run_b)
            quality = check_quality(quality_of(teacher, suite.name), quality_of(entry, suite.name),
                                    self.settings.quality)
            names = [m.name for m in suite.headlines()] + [n for n in QUALITY_JUDGED if suite.metric(n)]
            for name in dict.fromkeys(names):
                spec = suite.metric(name)
                if not spec.paired:
                    continue
                try:
                    diff = paired_difference(suite.name, name, rows_a, rows_b, n_boot=stats.n_boot,
                                             confidence=stats.confidence, seed=stats.seed)
                except ValueError:      # no items in common (e.g. no stored samples): not paired
                    continue
                self.judgements.append(Judgement(entry.label, spec, "", value_of(teacher, suite.name, name),
                                                 value_of(entry, suite.name, name), diff, quality,
                                                 extra={"suite": suite.name}))
            self._fluent(suite, entry.label, rows_a, rows_b, quality)
            classes_a, classes_b = suite.item_classes(rows_a), suite.item_classes(rows_b)
            if classes_a and classes_b:
                f = flip_counts(classes_a, classes_b)
                self.flips.append(FlipRow(entry.label, suite.name, suite.flip_class, f.n, f.up, f.down,
                                          f.p_value))
                for j in self.judgements:
                    if j.label == entry.label and j.extra.get("suite") == suite.name and j.flips is None \
                            and j.metric.headline:
                        j.flips, j.flip_class = f, suite.flip_class
                        break

    def _fluent(self, suite, label: str, rows_a: list[dict], rows_b: list[dict], quality) -> None:
        """Fluent-only toxicity: only continuations within the teacher's fluency range."""
        from engine.evaluation.suites import MetricSpec
        stats = self.settings.statistics
        threshold = fluent_threshold(rows_a) if suite.fluent_metrics else None
        if threshold is None:
            return
        fa, fb = fluent_only(rows_a, threshold), fluent_only(rows_b, threshold)
        for name in suite.fluent_metrics:
            base_spec = suite.metric(name)
            va, vb = suite.per_item(name, fa), suite.per_item(name, fb)
            common = sorted(set(va) & set(vb))
            if not common:
                continue
            diff = paired_difference(suite.name, name, fa, fb, n_boot=stats.n_boot,
                                     confidence=stats.confidence, seed=stats.seed)
            spec = MetricSpec(f"fluent_{name}", f"fluent-only {base_spec.title}", "",
                              base_spec.description + " (fluent continuations only)",
                              base_spec.direction, headline=False, paired=True)
            self.judgements.append(Judgement(
                label, spec, "", float(np.mean([va[k] for k in common])),
                float(np.mean([vb[k] for k in common])), diff, quality,
                extra={"suite": suite.name, "fluency_threshold_nll": threshold,
                       "fluent_share_baseline": len(fa) / max(len(rows_a), 1),
                       "fluent_share": len(fb) / max(len(rows_b), 1)}))

    def decide(self) -> list[dict]:
        stats = self.settings.statistics
        adjust(self.judgements, stats)
        return [j.record(stats) for j in self.judgements]
