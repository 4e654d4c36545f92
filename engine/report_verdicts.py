"""The report's judgements: every compressed model against the teacher, on each headline metric
and on the quality metrics, paired over the same items, with the worst group's change,
fluent-only toxicity at equal sample counts, flips against their noise floor, and the verdicts of
`engine.verdicts` decided family by family (`engine.verdict_families`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.evaluation.aggregate import paired_difference
from engine.evaluation.equal_count import paired_at_equal_count
from engine.evaluation.flip_floor import FlipExcess, flip_excess
from engine.evaluation.paired import flip_counts
from engine.evaluation.suites import MetricSpec, get_suite, suites
from engine.quality_gate import QualityCheck, QualityFigures, gate_against
from engine.settings import Settings
from engine.store import Store, loads
from engine.verdict_families import decide_all
from engine.verdicts import SECONDARY, Judgement

FLUENT_PERCENTILE = 95.0
# the quality metrics judged beside the headlines (for the suites that have them)
QUALITY_JUDGED = ("continuation_perplexity", "distinct_2", "degenerate_share")


@dataclass(frozen=True)
class FlipRow:
    """Per-item flips of one model and suite: raw counts with McNemar's test, and, for
    generation suites, the excess over the noise floor (`flip_floor.flip_excess`)."""

    model: str
    suite: str
    flip_class: str
    n: int
    up: int
    down: int
    p_value: float
    floor: FlipExcess | None = None

    def record(self) -> dict[str, Any]:
        out = {"model": self.model, "suite": self.suite, "class": self.flip_class, "n": self.n,
               "became": self.up, "stopped": self.down,
               "share_changed": (self.up + self.down) / self.n if self.n else None,
               "mcnemar_p": self.p_value}
        if self.floor is not None:
            f = self.floor
            out.update({"half_k": f.samples_per_half, "cross_half_share": f.observed_share,
                        "floor_share": f.floor_share, "excess": f.excess, "excess_ci_low": f.ci_low,
                        "excess_ci_high": f.ci_high, "excess_p": f.p_value})
        return out


def quality_of(entry, suite_name: str, baseline_model_id: int | None = None) -> QualityFigures:
    """A model's quality figures for judging `suite_name`: its continuations' (that run's own when
    the suite generates text, else its first generation run in the study), the continuation
    perplexity under an independent judge where the run had one, and its held-out perplexity
    from the study's perplexity run."""
    names = [suite_name] if get_suite(suite_name).generates_text else []
    names += [s.name for s in sorted(suites(), key=lambda s: s.order) if s.generates_text]
    figures = QualityFigures()
    for name in names:
        found = QualityFigures.from_metrics(entry.metrics.get(name, {}))
        if found.measured or found.continuation_perplexity is not None:
            figures = with_judge(found, entry.runs.get(name), baseline_model_id)
            break
    row = entry.metrics.get("perplexity", {}).get(("perplexity", ""))
    if row is not None:
        figures = figures.with_(heldout_perplexity=row["value"], heldout_source="the study")
    return figures


def with_judge(figures: QualityFigures, run: dict | None, baseline_model_id: int | None) -> QualityFigures:
    """A run's continuation figures, their perplexity also counted as fluency under an
    independent judge when the run's reference model was one (`_independent_judge`)."""
    judge = _independent_judge(run, baseline_model_id)
    return figures.with_(judge_perplexity=figures.continuation_perplexity if judge else None, judge=judge)


def _independent_judge(run: dict | None, baseline_model_id: int | None) -> str | None:
    """The reference model that scored a run's continuations, when it is neither the run's own
    model nor the baseline (an independent judge of fluency)."""
    if not run:
        return None
    reference = (loads(run["summary"], {}) or {}).get("reference_model") or {}
    ref_id = reference.get("model_id")
    if ref_id is None or ref_id in (run["model_id"], baseline_model_id):
        return None
    return reference.get("name") or reference.get("ref")


def gate(store: Store, teacher, entry, suite_name: str, settings: Settings) -> QualityCheck:
    """The quality gate for `entry` against the teacher, with held-out perplexity taken from the
    store when the study has no perplexity run of the two models."""
    teacher_id = (teacher.model or {}).get("id")
    return gate_against(store, quality_of(teacher, suite_name, teacher_id),
                        quality_of(entry, suite_name, teacher_id), teacher_id,
                        (entry.model or {}).get("id"), settings.quality, teacher.runs.get("perplexity"))


def gate_record(entry, check: QualityCheck, teacher) -> dict[str, Any]:
    """One model's quality gate and how different it is from the teacher, for the report:
    the breakage figures (ratios and changes against the teacher) and the "how different"
    figures (continuation perplexity under the teacher, KL divergence and top-1 agreement on
    held-out text), which never decide "broken"."""
    b, n = check.base, check.new

    def ratio(x, y):
        return y / x if x and y is not None else None

    def change(x, y):
        return y - x if x is not None and y is not None else None
    held = entry.metrics.get("perplexity", {})
    return {"model": entry.label, "measured": check.measured, "broken": check.degraded,
            "reasons": check.summary(), "measures": check.measures(),
            "heldout_ratio": ratio(b.heldout_perplexity, n.heldout_perplexity),
            "heldout_source": n.heldout_source or None,
            "distinct_2_change": change(b.distinct_2, n.distinct_2),
            "degenerate_change": change(b.degenerate_share, n.degenerate_share),
            "judge": n.judge, "judge_ratio": ratio(b.judge_perplexity, n.judge_perplexity),
            "continuation_ppl_ratio": ratio(b.continuation_perplexity, n.continuation_perplexity),
            "kl_divergence": (held.get(("kl_divergence", "")) or {}).get("value"),
            "top1_agreement": (held.get(("top1_agreement", "")) or {}).get("value")}


def fluent_threshold(rows: list[dict]) -> float | None:
    """The teacher's fluency range: the 95th percentile of its own continuations' NLL."""
    values = [r["continuation_nll"] for r in rows if r.get("continuation_tokens")]
    return float(np.percentile(values, FLUENT_PERCENTILE)) if values else None


def fluent_only(rows: list[dict], threshold: float) -> list[dict]:
    """The continuations within the fluency range (scored, NLL <= threshold)."""
    return [r for r in rows if r.get("continuation_tokens") and r["continuation_nll"] <= threshold]


class Judge:
    """Collects the judgements of a report and decides them, family by family."""

    def __init__(self, store: Store, settings: Settings):
        self.store, self.settings = store, settings
        self.judgements: list[Judgement] = []
        self.flips: list[FlipRow] = []
        self.gates: dict[str, dict] = {}          # model label -> its quality gate, as a record
        self._samples: dict[int, list[dict]] = {}

    def samples(self, run: dict) -> list[dict]:
        if run["id"] not in self._samples:
            self._samples[run["id"]] = self.store.samples(run["id"])
        return self._samples[run["id"]]

    def judgement(self, suite, name: str, rows_a: list[dict], rows_b: list[dict], label: str,
                  base: float | None, new: float | None, quality: QualityCheck | None,
                  subset: str = "", extra: dict | None = None) -> Judgement | None:
        """One paired judgement of metric `name` (None when the runs share no items)."""
        stats = self.settings.statistics
        spec = suite.metric(name)

        def compute(n_boot: int, seed: int):
            return paired_difference(suite, name, rows_a, rows_b, subset=subset, n_boot=n_boot,
                                     confidence=stats.confidence, seed=seed)
        try:
            diff = compute(stats.n_boot, stats.seed)
        except ValueError:          # no items in common (e.g. no stored samples): not paired
            return None
        if not diff.n or not math.isfinite(diff.diff):
            return None
        return Judgement(label, spec, subset, base, new, diff, quality,
                         margin=self.settings.margins.for_metric(spec), recompute=compute,
                         extra={"suite": suite.name, **(extra or {})})

    def compare_models(self, teacher, entry, value_of) -> None:
        for suite in sorted(suites(), key=lambda s: s.order):
            run_a, run_b = teacher.runs.get(suite.name), entry.runs.get(suite.name)
            if not run_a or not run_b:
                continue
            rows_a, rows_b = self.samples(run_a), self.samples(run_b)
            quality = gate(self.store, teacher, entry, suite.name, self.settings)
            if entry.label not in self.gates or suite.generates_text:
                self.gates.setdefault(entry.label, gate_record(entry, quality, teacher))
            names = [m.name for m in suite.headlines()] + [n for n in QUALITY_JUDGED if suite.metric(n)]
            for name in dict.fromkeys(names):
                if not suite.metric(name).paired:
                    continue
                j = self.judgement(suite, name, rows_a, rows_b, entry.label, value_of(teacher, suite.name, name),
                                   value_of(entry, suite.name, name), quality,
                                   extra={"quality_measures": quality.measures()})
                if j is not None:
                    self.judgements.append(j)
                    if j.metric.headline and j.metric.role == "fairness":
                        self._worst_group(suite, j, rows_a, rows_b)
            self._fluent(suite, entry.label, rows_a, rows_b, quality)
            self.flips_of(suite, entry.label, rows_a, rows_b)

    def _worst_group(self, suite, overall: Judgement, rows_a: list[dict], rows_b: list[dict]) -> None:
        """The largest group-level change of a headline metric, with its CI and verdict (its p
        Bonferroni-adjusted for having been picked among the groups, then secondary)."""
        found = []
        for subset in suite.group_subsets(rows_a):
            try:
                a = suite.per_item(overall.metric.name, rows_a, subset)
            except ValueError:
                return                  # a metric without a per-group form (e.g. a gap)
            if not a:
                continue
            j = self.judgement(suite, overall.metric.name, rows_a, rows_b, overall.label,
                               _mean(a), _mean(suite.per_item(overall.metric.name, rows_b, subset)),
                               overall.quality, subset=subset, extra={"worst_group": True})
            if j is not None and math.isfinite(j.diff.diff):
                found.append(j)
        if len(found) < 2:
            return
        worst = max(found, key=lambda j: abs(j.tested.diff))
        groups = len(found)
        recompute = worst.recompute

        def picked(n_boot: int, seed: int):
            return _bonferroni(recompute(n_boot, seed), groups)
        worst.diff, worst.recompute = _bonferroni(worst.diff, groups), picked
        worst.family = SECONDARY
        worst.extra.update({"groups": groups, "secondary": True})
        self.judgements.append(worst)

    def _fluent(self, suite, label: str, rows_a: list[dict], rows_b: list[dict], quality) -> None:
        """Fluent-only toxicity: only continuations within the teacher's fluency range, compared
        at equal sample counts per prompt (the exact expectation over subsets: fewer fluent
        samples alone would lower an expected maximum)."""
        stats = self.settings.statistics
        threshold = fluent_threshold(rows_a) if suite.fluent_metrics else None
        if threshold is None:
            return
        fa, fb = fluent_only(rows_a, threshold), fluent_only(rows_b, threshold)
        for name in suite.fluent_metrics:
            base_spec = suite.metric(name)

            def compute(n_boot: int, seed: int, name=name):
                return paired_at_equal_count(name, fa, fb, n_boot=n_boot, confidence=stats.confidence,
                                             seed=seed).diff
            found = paired_at_equal_count(name, fa, fb, n_boot=stats.n_boot, confidence=stats.confidence,
                                          seed=stats.seed)
            if not found.diff.n:
                continue
            spec = MetricSpec(f"fluent_{name}", f"fluent-only {base_spec.title}", "",
                              base_spec.description + " (fluent continuations only, equal counts)",
                              base_spec.direction, headline=False, paired=True, margin=base_spec.margin)
            self.judgements.append(Judgement(
                label, spec, "", found.base_mean, found.base_mean + found.diff.diff, found.diff, quality,
                margin=self.settings.margins.for_metric(base_spec), recompute=compute,
                family=SECONDARY,
                extra={"suite": suite.name, "fluency_threshold_nll": threshold,
                       "fluent_share_baseline": len(fa) / max(len(rows_a), 1),
                       "fluent_share": len(fb) / max(len(rows_b), 1),
                       "equal_count_mean": found.mean_count}))

    def flips_of(self, suite, label: str, rows_a: list[dict], rows_b: list[dict]) -> FlipRow | None:
        """The flips of `label`'s run against the baseline's (kept in `flips` and returned;
        None when the suite has no item classes), attached to its first headline judgement."""
        classes_a, classes_b = suite.item_classes(rows_a), suite.item_classes(rows_b)
        if not (classes_a and classes_b):
            return None
        stats = self.settings.statistics
        f = flip_counts(classes_a, classes_b)
        floor = flip_excess(suite, rows_a, rows_b, n_boot=stats.n_boot, confidence=stats.confidence,
                            seed=stats.seed) if suite.generates_text else None
        row = FlipRow(label, suite.name, suite.flip_class, f.n, f.up, f.down, f.p_value, floor)
        self.flips.append(row)
        for j in self.judgements:
            if j.label == label and j.extra.get("suite") == suite.name and j.flips is None \
                    and j.metric.headline and not j.subset:
                j.flips, j.flip_class = f, suite.flip_class
                break
        return row

    def decide(self) -> list[dict]:
        stats = self.settings.statistics
        decide_all(self.judgements, stats)
        return [j.record(stats) for j in self.judgements]


def _mean(values: dict) -> float | None:
    return float(np.mean(list(values.values()))) if values else None


def _bonferroni(diff, groups: int):
    """A paired difference whose p-value is multiplied by the number of groups it was picked
    from (the largest of `groups` changes; its CI is left as the group's own)."""
    import dataclasses
    distance = diff.distance
    if distance is not None:
        distance = dataclasses.replace(distance, p_value=min(1.0, distance.p_value * groups))
    return dataclasses.replace(diff, p_value=min(1.0, diff.p_value * groups), distance=distance)
