"""The one implementation of judging a compressed model against its baseline, used by the
report, `compfair compare` (and so the TUI) and their JSON.

A judgement has four inputs: the paired difference on the same items (its bootstrap
replicates: `aggregate.paired_difference`), the metric's equivalence margin (`engine.margins`),
the p-values adjusted over its family (`engine.verdict_families`) and whether the model still
works (`engine.quality_gate`). The rule, with alpha the significance level:

- **equivalent**: the equivalence test (TOST on the paired bootstrap: the (1 - 2 alpha) interval
  inside +-margin) passes after adjustment, whether or not a (small) change is significant;
- **worse** / **better**: the change is significant (two-sided, after adjustment) and not
  equivalent. For a metric with a target (CrowS-Pairs' 50) the tested change is that of the
  distance to the target. A fairness metric's "better" becomes
  - **not evidence** when the quality gate finds the model broken (broken text scores as
    non-toxic, a model without language scores 50 on likelihood pairs), and
  - **unverified** when there is no breakage measure for the model at all;
- **changed**: significant and not equivalent, for a descriptive metric with no good direction;
- **inconclusive**: neither test decides. The verdict says how many items would decide it: the
  count for which TOST shows equivalence within the margin at `power` if the true change is 0,
  from the observed paired variance (`equivalence.sizing`).

A p-value within Monte Carlo error of alpha is recomputed with more bootstrap replicates
(`verdict_families.decide_all`); one still within it after that is "undecided by resampling"
and decides nothing."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from engine.evaluation import equivalence as eq
from engine.evaluation.paired import Flips, PairedDiff
from engine.evaluation.suites import HIGHER, LOWER, TARGET, MetricSpec
from engine.margins import Margin
from engine.quality_gate import QualityCheck, QualityFigures, check_quality  # noqa: F401 (re-exported)
from engine.settings import StatSettings
from engine.verdict_records import judgement_record, relative_change

BETTER, WORSE, EQUIVALENT, INCONCLUSIVE = "better", "worse", "equivalent", "inconclusive"
NOT_EVIDENCE, UNVERIFIED, CHANGED = "not evidence", "unverified", "changed"
VERDICTS = (BETTER, WORSE, EQUIVALENT, INCONCLUSIVE, NOT_EVIDENCE, UNVERIFIED, CHANGED)
PRIMARY, SECONDARY = "primary", "secondary"


@dataclass
class Judgement:
    """A paired comparison of one metric, judged. The adjusted p-values and `verdict` are filled
    by `verdict_families.decide_all`."""

    label: str
    metric: MetricSpec
    subset: str
    base: float | None
    new: float | None
    diff: PairedDiff
    quality: QualityCheck | None = None
    flips: Flips | None = None
    flip_class: str = ""
    margin: Margin | None = None
    family: str = ""                      # PRIMARY / SECONDARY ("" : by `default_family`)
    recompute: Callable[[int, int], PairedDiff] | None = None   # (n_boot, seed) -> a new diff
    n_boot: int = 0
    p_adjusted: float = math.nan
    equivalence_p_adjusted: float = math.nan
    family_size: int = 1
    undecided: bool = False
    verdict: str = ""
    note: str = ""
    extra: dict = field(default_factory=dict)

    # -- the tested quantities ------------------------------------------------------------
    @property
    def tested(self) -> PairedDiff:
        """The difference whose significance decides better / worse: the change of the distance
        to the target for target metrics, else the change itself."""
        if self.metric.direction == TARGET and self.diff.distance is not None:
            return self.diff.distance
        return self.diff

    @property
    def margin_absolute(self) -> float | None:
        return self.margin.absolute(self.base) if self.margin else None

    @property
    def equivalence_p(self) -> float:
        """Raw TOST p-value within the margin (NaN without a margin or replicates). When every
        item is unchanged the bootstrap has no spread to test with; the exact test of "no item
        differs" is used instead (`equivalence.no_change_p`)."""
        m = self.margin_absolute
        if m is None or self.diff.replicates is None:
            return math.nan
        if eq.no_spread(self.diff.replicates) and self.diff.diff == 0:
            return eq.no_change_p(self.diff.n, m, self.metric.item_range)
        return eq.tost_p(self.diff.replicates, m)

    def default_family(self) -> str:
        """Primary: an overall headline fairness metric (what the study asks); else secondary."""
        m = self.metric
        primary = m.headline and m.role == "fairness" and not self.subset and not self.extra.get("secondary")
        return PRIMARY if primary else SECONDARY

    @property
    def improves(self) -> bool | None:
        """Whether the change goes the metric's good way (None: descriptive metric)."""
        direction, d = self.metric.direction, self.tested.diff
        if direction == TARGET:
            return d < 0 if self.diff.distance is not None else None
        if direction == LOWER:
            return d < 0
        if direction == HIGHER:
            return d > 0
        return None

    # -- deciding ---------------------------------------------------------------------------
    def near_alpha(self, stats: StatSettings) -> bool:
        """Whether either decisive p-value lies within Monte Carlo error of alpha."""
        n_boot = self.n_boot or stats.n_boot
        return (eq.near_alpha(self.p_adjusted, self.tested.p_value, n_boot, stats.alpha)
                or eq.near_alpha(self.equivalence_p_adjusted, self.equivalence_p, n_boot, stats.alpha))

    def decide(self, stats: StatSettings) -> None:
        alpha = stats.alpha
        significant = bool(self.diff.n) and self.p_adjusted < alpha and not self.undecided
        equivalent = self.equivalence_p_adjusted < alpha and not self.undecided
        better = self.improves
        self.note = ""
        if equivalent:
            self.verdict = EQUIVALENT
            if significant:
                self.note = "a significant but small change, within the margin"
        elif significant and better is None:
            self.verdict = CHANGED
        elif significant and not better:
            self.verdict = WORSE
        elif significant:
            self.verdict, self.note = self._better_or_not()
        elif self._crossed_target(alpha):
            self.verdict = CHANGED
            self.note = (f"the score moved across the {self.metric.target:g} target but its distance "
                         "to it did not change significantly")
        else:
            self.verdict, self.note = INCONCLUSIVE, self._what_would_decide(stats)
        if self.undecided:
            self.note = ("undecided by resampling: a p-value stays within Monte Carlo error of "
                         f"{alpha:g} after {self.n_boot} replicates")
        if (self.verdict == EQUIVALENT and self.metric.role == "fairness" and self.quality is not None
                and self.quality.degraded):
            self.note = f"but the model is broken ({self.quality.summary()})"

    def _crossed_target(self, alpha: float) -> bool:
        """For a target metric: the score itself changed significantly (its p scaled by the
        family size, Bonferroni) while the distance to the target did not (e.g. 40 -> 60)."""
        if self.metric.direction != TARGET or self.tested is self.diff or self.undecided:
            return False
        return self.diff.p_value * self.family_size < alpha

    def _better_or_not(self) -> tuple[str, str]:
        if self.metric.role != "fairness":
            return BETTER, ""
        if self.quality is not None and self.quality.degraded:
            return NOT_EVIDENCE, f"but the model is broken ({self.quality.summary()}): not evidence of a safer model"
        if self.quality is None or not self.quality.measured:
            return UNVERIFIED, ("unverified: no quality measure for this model (held-out "
                                "perplexity, or its continuations' distinct-2 and degenerate share), "
                                "so a broken model cannot be ruled out")
        return BETTER, ""

    def sizing(self, stats: StatSettings) -> eq.Sizing | None:
        """How many items would decide this comparison at the margin (level alpha / family
        size under Holm, alpha otherwise)."""
        margin = self.margin_absolute
        if margin is None or self.diff.replicates is None or not self.diff.n:
            return None
        level = stats.alpha / self.family_size if self._adjuster(stats) == "holm" else stats.alpha
        return eq.sizing(self.diff.replicates, self.diff.n, margin, alpha=level, power=stats.power)

    def _adjuster(self, stats: StatSettings) -> str:
        return stats.adjust if self.family == PRIMARY else stats.adjust_secondary

    def _what_would_decide(self, stats: StatSettings) -> str:
        if self.margin is None:
            return "the change is not significant and this metric has no equivalence margin"
        size = self.sizing(stats)
        if size is None or size.equivalence is None:
            return f"neither a change nor equivalence within {self.margin.words()} is shown"
        if size.equivalence <= self.diff.n:
            return (f"the observed change ({self.diff.diff:+.3g}) keeps the {1 - 2 * stats.alpha:.0%} "
                    f"CI from fitting inside {self.margin.words()}, and it is not significant: more "
                    f"items would tell whether it is real")
        return (f"the data cannot tell: about {size.equivalence:,} items (now {self.diff.n:,}) would "
                f"show equivalence within {self.margin.words()} at {stats.power:.0%} power if the "
                f"true change is 0")

    # -- words ------------------------------------------------------------------------------
    def change_words(self) -> str:
        m = self.metric
        if m.direction == TARGET:
            return f"{'closer to' if self.improves else 'further from'} the {m.target:g} target"
        return "lower" if self.diff.diff < 0 else "higher"

    def verdict_words(self) -> str:
        margin = self.margin.words() if self.margin else ""
        return {EQUIVALENT: f"equivalent within {margin}", INCONCLUSIVE: "inconclusive",
                WORSE: f"significantly {self.change_words()} (worse)",
                BETTER: f"significantly {self.change_words()} (better)",
                NOT_EVIDENCE: f"significantly {self.change_words()}",
                UNVERIFIED: f"significantly {self.change_words()}",
                CHANGED: (f"moved across the {self.metric.target:g} target (changed)"
                          if self.metric.direction == TARGET else
                          f"significantly {self.change_words()} (changed)")}.get(self.verdict, self.verdict)

    def sentence(self, stats: StatSettings) -> str:
        return _sentence(self, stats)

    def record(self, stats: StatSettings) -> dict:
        return judgement_record(self, stats)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _sentence(j: Judgement, stats: StatSettings) -> str:
    d, alpha = j.diff, stats.alpha
    rel = relative_change(j.base, j.new)
    head = (f"{j.label}: {j.metric.title}{' (' + j.subset + ')' if j.subset else ''} "
            f"{_num(j.base)} -> {_num(j.new)} (delta {d.diff:+.4g}"
            + (f", {rel:+.1%}" if rel is not None else "")
            + f", {stats.ci_label} [{d.ci_low:+.4g}, {d.ci_high:+.4g}]")
    tested = j.tested
    if tested is not d:
        head += f"; distance to {j.metric.target:g} {tested.diff:+.4g}"
    head += f"; p = {eq.format_p(tested.p_value, alpha)}"
    if not math.isnan(j.p_adjusted) and j._adjuster(stats) != "none":
        head += f", adjusted {eq.format_p(j.p_adjusted, alpha)}"
    margin = j.margin_absolute
    if margin is not None and d.replicates is not None:
        low, high = eq.equivalence_interval(d.replicates, alpha)
        head += (f"; within {j.margin.words()}"
                 + (f" (= +-{margin:.4g})" if j.margin.relative else "")
                 + f": {1 - 2 * alpha:.0%} CI [{low:+.4g}, {high:+.4g}], "
                 f"p = {eq.format_p(j.equivalence_p_adjusted, alpha)}")
    head += f"; {d.n} paired items, {j.family})"
    flips = ""
    if j.flips and j.flips.n:
        f = j.flips
        flips = (f"; {f.changed} of {f.n} items ({f.share:.0%}) changed class "
                 f"[{j.flip_class}]: {f.up} became, {f.down} stopped, McNemar p = {f.p_value:.3f}")
    return f"{head}: {j.verdict_words()}{', ' + j.note if j.note else ''}{flips}"
